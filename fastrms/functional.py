"""``rmsprop_update``: one fused, in-place RMSProp step, on whatever backend suits the arrays."""

import functools
import weakref

import numpy as np

from . import _buffers, dispatch
from ._spec import Rule


def apply(rule, param, grad, square_avg, momentum_buffer=None, grad_avg=None, step=None,
          backend="auto"):
    """One in-place step of ``rule`` (a ``fastrms._spec.Rule``); the single route to a backend.

    Everything is checked before anything is written: a call that raises leaves every buffer
    exactly as it was. ``param``, ``grad``, ``square_avg`` (and the optional buffers) may also be
    lists of buffers, updated together in one call (see ``_apply_many``).
    """
    arrays = [param, grad, square_avg, momentum_buffer, grad_avg]
    if type(param) is np.ndarray and type(grad) is np.ndarray and type(square_avg) is np.ndarray \
            and (momentum_buffer is None or type(momentum_buffer) is np.ndarray) \
            and (grad_avg is None or type(grad_avg) is np.ndarray):
        place = _buffers.HOST  # the common case, without the per-buffer conversion below
    elif isinstance(param, (list, tuple)):
        return _apply_many(rule, arrays, step, backend)
    else:
        place = _native_arrays(arrays)
    _check_state_matches(rule, momentum_buffer, grad_avg, step)
    module = dispatch.resolve(backend, place)
    _buffers.check(module, rule, arrays)
    if arrays[0].size:
        module.update(_buffers.Buffers(*arrays), rule, step)


def _native_arrays(arrays):
    """Replace each buffer in ``arrays`` by its native array; return where they all live."""
    place = None
    for i, a in enumerate(arrays):
        if a is None:
            continue
        arrays[i], where = _buffers.native(a, _buffers.NAMES[i])
        if place is None:
            place = where
        elif where != place:
            raise ValueError(
                f"{_buffers.NAMES[i]} lives on {where} but param on {place}: "
                "all buffers of one call must live in one place"
            )
    return place


def _check_state_matches(rule, momentum_buffer, grad_avg, step):
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
    if rule.bias_correction and (isinstance(step, bool) or not isinstance(step, int) or step < 1):
        raise ValueError(f"bias_correction needs step, the 1-based index of this step; got {step!r}")


# ---------------------------------------------------------------------------------------------
# Lists of buffers: one call for a whole model (torch's multi_tensor_apply, on any backend).

def _apply_many(rule, columns, step, backend):
    """``apply`` over lists: ``columns`` = [params, grads, square_avgs, momentum_buffers, grad_avgs].

    Every element is checked (as ``apply`` checks one buffer set, and no written buffer may
    overlap any other buffer of the whole call) before anything is written. Then each run of
    elements sharing a dtype (and, with bias correction, a step) goes to the backend's
    ``update_many`` in one call, or, for backends without one, to ``update`` element by element.
    """
    n = len(columns[0])
    for i, column in enumerate(columns):
        if i >= 3 and column is None:
            continue
        if not isinstance(column, (list, tuple)):
            raise TypeError(f"param is a list, so {_buffers.NAMES[i]} must be a list too, "
                            f"got {type(column).__name__}")
        if len(column) != n:
            raise ValueError(f"{len(column)} {_buffers.NAMES[i]} buffers for {n} params")
    steps = list(step) if isinstance(step, (list, tuple)) else [step] * n
    if len(steps) != n:
        raise ValueError(f"{len(steps)} steps for {n} params")
    for t in set(steps) if rule.bias_correction else (None,):
        _check_state_matches(rule, columns[3], columns[4], t)
    if n == 0:
        return
    columns, place = _native_columns(columns)
    module = dispatch.resolve(backend, place)
    table, sizes = _check_many(module, rule, columns)
    for rows in _runs(columns[0], steps if rule.bias_correction else None):
        part = _buffers.Buffers(*(None if c is None else [c[j] for j in rows] for c in columns))
        t = steps[rows[0]]
        update_many = getattr(module, "update_many", None)
        if update_many is not None:
            update_many(part, rule, t, table[rows], sizes[rows])
            continue
        for j in range(len(rows)):  # a backend without a multi-tensor entry
            if part.param[j].size:
                module.update(_buffers.Buffers(*(None if c is None else c[j] for c in part)),
                              rule, t)


def _native_columns(columns):
    """Native arrays for every buffer of every column, and the one place they all live."""
    place = None
    out = []
    for i, column in enumerate(columns):
        if column is None:
            out.append(None)
            continue
        natives = []
        for j, a in enumerate(column):
            if type(a) is np.ndarray:
                where = _buffers.HOST
            else:
                try:  # the plain name: the GPU side tells grads (read-only allowed) by it
                    a, where = _buffers.native(a, _buffers.NAMES[i])
                except (TypeError, ValueError) as exc:
                    raise type(exc)(f"{_buffers.NAMES[i]}[{j}]: {exc}") from None
            if place is None:
                place = where
            elif where != place:
                raise ValueError(
                    f"{_buffers.NAMES[i]}[{j}] lives on {where} but param[0] on {place}: "
                    "all buffers of one call must live in one place"
                )
            natives.append(a)
        out.append(natives)
    return out, place


def _check_many(module, rule, columns):
    """``_buffers.check`` for every element, with one overlap test for the whole call.

    Returns the pointer table (int64 ``[n, 5]`` data addresses, 0 where absent) and the sizes.
    Column by column, in plain lists: a hundred tensors cost ~1 µs each to check.
    """
    params = columns[0]
    dtypes = [p.dtype for p in params]
    for j, dtype in enumerate(dtypes):
        if dtype not in module.DTYPES:
            _buffers.refuse_dtype(module, f"param[{j}]", dtype)
    shapes = [p.shape for p in params]
    state_dtypes = [rule.state_dtype(d) for d in dtypes]
    addresses, itemsizes = [], []
    for i, column in enumerate(columns):
        if column is None:
            addresses.append([0] * len(params))
            itemsizes.append([0] * len(params))
            continue
        wants = dtypes if i < 2 else state_dtypes
        written = i != 1
        for j, (a, want, shape) in enumerate(zip(column, wants, shapes)):
            flags = a.flags
            if a.dtype != want or a.shape != shape or not flags.c_contiguous \
                    or (written and not getattr(flags, "writeable", True)):
                _buffers.refuse(f"{_buffers.NAMES[i]}[{j}]", a, want, dtypes[j], shape, written)
        addresses.append([_address(a) for a in column])
        itemsizes.append([a.itemsize for a in column])
    table = np.array(addresses, dtype=np.int64).T.copy()
    sizes = np.array([p.size for p in params], dtype=np.int64)
    _check_disjoint_many(table, sizes, np.array(itemsizes, dtype=np.int64).T)
    return table, sizes


_address_cache = {}  # id(array) -> (weakref, address, nbytes): reading an address costs ~1 µs


def _address(a):
    """The address of ``a``'s first element (NumPy: cached per live array object)."""
    if type(a) is not np.ndarray:
        return a.data.ptr  # CuPy
    key = id(a)
    entry = _address_cache.get(key)
    if entry is not None and entry[0]() is a and entry[2] == a.nbytes:
        return entry[1]
    address = a.__array_interface__["data"][0]
    _address_cache[key] = (weakref.ref(a, lambda _, key=key: _address_cache.pop(key, None)),
                           address, a.nbytes)
    return address


# The last (table, sizes, itemsizes) found disjoint: loops pass the same each step. The byte
# extents depend on all three (float64 views at float32 buffers' addresses can overlap).
_last_disjoint_table = None


def _check_disjoint_many(table, sizes, itemsizes):
    """No written buffer (param, state) overlaps another buffer; grads may share memory."""
    global _last_disjoint_table
    last = _last_disjoint_table
    if last is not None and all(np.array_equal(a, b) for a, b in zip(last, (table, sizes, itemsizes))):
        return
    nbytes = sizes[:, None] * itemsizes
    present = nbytes > 0
    written = present.copy()
    written[:, 1] = False
    starts, ends = table[written], table[written] + nbytes[written]
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    if starts.size > 1 and (starts[1:] < np.maximum.accumulate(ends)[:-1]).any():
        raise ValueError(_overlap_message(table, nbytes, present))
    grads = present[:, 1]
    g_starts, g_ends = table[grads, 1], table[grads, 1] + nbytes[grads, 1]
    # Written intervals are now sorted and disjoint: the one starting last before a grad's end
    # is the only one that can overlap it.
    before = np.searchsorted(starts, g_ends, side="left") - 1
    if ((before >= 0) & (ends[np.maximum(before, 0)] > g_starts)).any():
        raise ValueError(_overlap_message(table, nbytes, present))
    _last_disjoint_table = (table.copy(), sizes.copy(), itemsizes.copy())


def _overlap_message(table, nbytes, present):
    """Name one overlapping pair (the slow pairwise search runs only to report an error)."""
    spans = [(f"{_buffers.NAMES[i]}[{j}]", table[j, i], table[j, i] + nbytes[j, i], i == 1)
             for j, i in zip(*np.nonzero(present))]
    for p, (name_p, start_p, end_p, read_p) in enumerate(spans):
        for name_q, start_q, end_q, read_q in spans[p + 1:]:
            if start_p < end_q and start_q < end_p and not (read_p and read_q):
                return f"{name_p} and {name_q} overlap in memory; each must be its own buffer"
    return "buffers overlap in memory; each must be its own buffer"


def _runs(params, steps):
    """Index lists of the elements one backend call can take: one dtype (and one step)."""
    groups = {}
    for j, p in enumerate(params):
        groups.setdefault((p.dtype, None if steps is None else steps[j]), []).append(j)
    return list(groups.values())


_rule = functools.lru_cache(maxsize=64, typed=True)(Rule)


def rmsprop_update(param, grad, square_avg, *, lr=0.01, alpha=0.9, eps=1e-6, eps_in_sqrt=True,
                   momentum=0.0, momentum_buffer=None, lr_in_momentum=False, nesterov=False,
                   centered=False, grad_avg=None, weight_decay=0.0, decoupled_weight_decay=False,
                   bias_correction=False, step=None, maximize=False, backend="auto"):
    """One fused RMSProp step over flat buffers, in place; returns None.

    Per element (the book's rule with every common variant; see ``fastrms.rule``)::

        g ← −g                                  if maximize
        g ← g + λ·x                             weight_decay λ, coupled (L2)
        x ← x − x·λ·η                           weight_decay λ, decoupled_weight_decay=True
        s ← α·s + (1−α)·g²                      square_avg s, alpha α
        a ← α·a + (1−α)·g;  v ← s − a²          centered (grad_avg a), else v ← s
        v ← s/c − (a/c)², c = 1 − αᵗ            bias_correction, t = step (1-based)
        d ← √(v + ε) if eps_in_sqrt else √v + ε
        u ← g / d
        b ← μ·b + u;    x ← x − η·b             momentum μ, lr outside the buffer (torch)
        b ← μ·b + η·u;  x ← x − b               lr_in_momentum=True (Keras, TF, Paddle)
        b ← μ·b + η·u;  x ← x − (η·u + μ·b)     nesterov=True (optax; needs lr_in_momentum)
        x ← x − η·u                             no momentum

    ``param``, ``grad``, ``square_avg`` (and ``momentum_buffer`` with momentum > 0, ``grad_avg``
    with centered) are C-contiguous arrays of one shape, or lists of such arrays (a multi-tensor
    step: every element checked first, then one compiled call or GPU launch for the lists;
    ``step`` may then be a list too), all in host memory or all on one GPU:
    NumPy, CuPy, torch tensors, anything with ``__array_interface__``,
    ``__cuda_array_interface__`` or DLPack. They are updated in place, zero-copy. The defaults are
    the book's (lr 0.01, alpha 0.9, eps 1e-6 inside the root). ``backend`` is "auto" (Numba for
    host arrays, CuPy for GPU arrays), "numba", "numpy" (the reference) or "cupy".
    """
    rule = _rule(lr, alpha, eps, eps_in_sqrt, momentum, lr_in_momentum, nesterov, centered, False,
                 weight_decay, decoupled_weight_decay, bias_correction, maximize)
    apply(rule, param, grad, square_avg, momentum_buffer, grad_avg, step, backend)
