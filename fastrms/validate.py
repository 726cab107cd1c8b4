"""Every check of a step's input, in one place: the hyperparameters, the state buffers the rule
needs, and the buffers themselves (dtype, shape, contiguity, writeable, no overlaps).

A single buffer set (``check_set``) and a multi-tensor call (``check_buffers``) are held to the
same rules and refused by the same ``refuse``; the single set skips the pointer table and the
lists a small call cannot afford. Every check runs before anything is written, so a call that
raises leaves every buffer exactly as it was.
"""

import math

import numpy as np

from ._buffers import NAMES
from .overlaps import _address, _check_disjoint_set, _check_disjoint_table

GRAD = NAMES.index("grad")  # the one buffer that is read and never written
SQUARE_AVG = NAMES.index("square_avg")  # the last one every step needs
MASTER = NAMES.index("master_param")  # float32 master weights: only for half-precision params


# ---------------------------------------------------------------------------------------------
# Hyperparameters (``fastrms._spec.Rule`` calls this once, when it is built).

REAL_FIELDS = ("lr", "alpha", "eps", "momentum", "weight_decay", "initial_scale")


def check_hyperparameters(rule):
    """Refuse a rule whose numbers are not finite and >= 0, or whose flags contradict."""
    for name in REAL_FIELDS:
        value = getattr(rule, name)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise TypeError(f"{name} must be a real number, got {value!r}")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    if rule.alpha > 1:
        raise ValueError(f"alpha must lie in [0, 1], got {rule.alpha!r}")
    if rule.alpha == 1 and rule.eps == 0:
        raise ValueError("alpha=1 never updates square_avg; with eps=0 it divides by zero")
    if rule.nesterov and not rule.lr_in_momentum:
        raise ValueError("nesterov=True requires lr_in_momentum=True (optax's form)")
    if rule.nesterov and rule.momentum == 0:
        raise ValueError("nesterov=True requires momentum > 0")


def check_step(rule, step):
    """With bias correction, ``step`` must be the 1-based index of this step."""
    if rule.bias_correction and (isinstance(step, bool) or not isinstance(step, int) or step < 1):
        raise ValueError(f"bias_correction needs step, the 1-based index of this step; got {step!r}")


def check_state_matches(rule, momentum_buffer, grad_avg):
    """The optional state buffers are given exactly when the rule uses them."""
    if (rule.momentum != 0) != (momentum_buffer is not None):
        raise ValueError(
            "momentum > 0 needs a momentum_buffer" if momentum_buffer is None
            else "momentum_buffer given but momentum is 0: pass momentum > 0, or no buffer"
        )
    if rule.centered != (grad_avg is not None):
        raise ValueError(
            "centered=True needs a grad_avg buffer" if grad_avg is None
            else "grad_avg given but centered is False: pass centered=True, or no buffer"
        )


def check_present(columns, listed):
    """param, grad and square_avg are given; no element of a list is None."""
    for i, column in enumerate(columns):
        if column is None:
            if i <= SQUARE_AVG:
                raise TypeError(f"{NAMES[i]} is None, but a step needs a {NAMES[i]} buffer")
            continue
        if listed and i != MASTER:  # a list's master may be None where a param has none
            for j, a in enumerate(column):
                if a is None:
                    raise TypeError(f"{NAMES[i]}[{j}] is None, but a step needs a buffer there")


def check_lists(columns):
    """``columns`` (a ``Buffers`` of lists, from a multi-tensor call) are lists of one length."""
    n = len(columns.param)
    for i, column in enumerate(columns):
        if column is None:  # check_present refuses the required ones
            continue
        if not isinstance(column, (list, tuple)):
            raise TypeError(f"param is a list, so {NAMES[i]} must be a list too, "
                            f"got {type(column).__name__}")
        if len(column) != n:
            raise ValueError(f"{len(column)} {NAMES[i]} buffers for {n} params")


def refuse_tracked(tensor, name):
    """Refuse, as torch does, an in-place update of a tensor that requires grad while grad mode
    is on (an optimizer's step runs under ``torch.no_grad()``); grads are only read."""
    import torch  # only torch tensors require grad

    if name != "grad" and torch.is_grad_enabled():
        what = "a leaf Variable" if tensor.is_leaf else "a tensor"
        raise RuntimeError(
            f"{name}: {what} that requires grad is being used in an in-place operation "
            "(fastrms updates it in place); run the step under torch.no_grad(), as torch's "
            "optimizers do"
        )


# ---------------------------------------------------------------------------------------------
# The buffers, once they are native arrays (NumPy on the host, CuPy on a GPU).

def check_set(backend, rule, buffers):
    """Refuse, naming the argument, whatever ``backend`` cannot update in place in one buffer
    set (a ``Buffers`` of native arrays): ``check_buffers``'s checks for a list of one, without
    the pointer table a single set does not need (a small call costs microseconds)."""
    param = buffers.param
    if param.dtype not in backend.DTYPES:
        refuse_dtype(backend, "param", param.dtype)
    state_dtype, shape = rule.state_dtype(param.dtype), param.shape
    if buffers.master_param is not None and param.dtype.itemsize > 2:
        refuse_master("master_param", param.dtype)
    for i, a in enumerate(buffers):
        if a is not None:
            want, flags = param.dtype if i <= GRAD else state_dtype, a.flags
            # _unfit, inlined: this runs on every small call
            if a.dtype != want or a.shape != shape or not flags.c_contiguous \
                    or (i != GRAD and not getattr(flags, "writeable", True)):
                refuse(NAMES[i], a, want, param.dtype, shape, i != GRAD)
    if param.size:
        _check_disjoint_set(buffers)


def check_buffers(backend, rule, columns):
    """``check_set`` for every element of a multi-tensor call, with one overlap test for all.

    ``columns`` is a ``Buffers`` of lists of native arrays (``None`` for an absent column).
    Returns the pointer table (int64 ``[n, 6]`` data addresses in ``NAMES`` order, 0 where absent)
    and the sizes.
    Column by column, in plain lists: a hundred tensors cost ~1 µs each to check.
    """
    params = columns.param
    dtypes = [p.dtype for p in params]
    for j, dtype in enumerate(dtypes):
        if dtype not in backend.DTYPES:
            refuse_dtype(backend, f"param[{j}]", dtype)
    shapes = [p.shape for p in params]
    state_dtypes = [rule.state_dtype(d) for d in dtypes]
    for i, column in enumerate(columns):
        if column is None:
            continue
        wants = dtypes if i <= GRAD else state_dtypes
        for j, (a, want, shape) in enumerate(zip(column, wants, shapes)):
            if a is None:  # a master the param has not (check_present refuses the others)
                continue
            if i == MASTER and dtypes[j].itemsize > 2:
                refuse_master(f"master_param[{j}]", dtypes[j])
            if _unfit(a, want, shape, i != GRAD):
                refuse(f"{NAMES[i]}[{j}]", a, want, dtypes[j], shape, i != GRAD)
    table = np.array([[0] * len(params) if c is None else [0 if a is None else _address(a)
                                                           for a in c]
                      for c in columns], dtype=np.int64).T.copy()
    itemsizes = np.array([[0] * len(params) if c is None else [0 if a is None else a.itemsize
                                                               for a in c]
                          for c in columns], dtype=np.int64).T
    sizes = np.array([p.size for p in params], dtype=np.int64)
    _check_disjoint_table(table, sizes, itemsizes)
    return table, sizes


def _unfit(a, want, shape, written):
    """One combined test on the hot path; ``refuse`` then works out what is wrong."""
    flags = a.flags
    return (a.dtype != want or a.shape != shape or not flags.c_contiguous
            or (written and not getattr(flags, "writeable", True)))


def refuse_master(name, param_dtype):
    raise TypeError(f"{name}: master weights are for half-precision (float16, bfloat16) params; "
                    f"these are {param_dtype}, which the step updates directly")


def check_extras(grad_scale, clip, rounding, seed, offset):
    """The loss scale, clip factor, rounding mode, seed and counter offset of a step."""
    if grad_scale is not None:
        check_real("grad_scale", grad_scale, positive=True)
    if clip is not None:
        check_real("clip", clip)
    if rounding not in ("nearest", "stochastic"):
        raise ValueError(f"rounding must be 'nearest' or 'stochastic', got {rounding!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    for value in offset if isinstance(offset, (list, tuple)) else (offset,):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or \
                not 0 <= value < 1 << 63:
            raise ValueError(f"offset must be an integer in [0, 2**63), got {value!r}")


def check_real(name, value, positive=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, "
                         f"got {value!r}")


def refuse_dtype(backend, name, dtype):
    supported = ", ".join(sorted(d.name for d in backend.DTYPES))
    raise TypeError(f"{name} has dtype {dtype}, which backend {backend.NAME!r} does not support "
                    f"(it takes {supported})")


def refuse(name, a, want, param_dtype, shape, written):
    """Raise the error that says what is wrong with buffer ``name``."""
    if a.dtype != want:
        raise TypeError(f"{name} has dtype {a.dtype}, expected {want} for {param_dtype} params")
    if a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}, expected the param's shape {shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (fastrms updates buffers in place)")
    if written and not getattr(a.flags, "writeable", True):
        raise ValueError(f"{name} is read-only, but fastrms updates it in place")


def refuse_read_only_interface(name):
    """A read-only ``__cuda_array_interface__`` buffer may only be the grad."""
    if name != "grad":
        raise ValueError(f"{name} is read-only, but fastrms updates it in place")
