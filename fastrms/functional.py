"""``rmsprop_update``: one fused, in-place RMSProp step, on whatever backend suits the arrays."""

import functools

import numpy as np

from . import dispatch, validate
from ._buffers import HOST, NAMES, PLAIN, Buffers, Extras
from .native import native
from ._spec import Rule
from .rounding import ROUNDINGS, offset_of, step_key
from .threads import check_count


def apply(rule, param, grad, square_avg, momentum_buffer=None, grad_avg=None, step=None,
          backend="auto", threads=None, master_param=None, extras=PLAIN, skip=False):
    """One in-place step of ``rule`` (a ``fastrms._spec.Rule``); the single route to a backend.

    ``param``, ``grad``, ``square_avg`` (and the optional buffers) are arrays, or lists of arrays
    updated together in one call (a multi-tensor step; ``step`` may then be a list too). Either
    way everything is checked (``fastrms.validate``) before anything is written: a call that
    raises leaves every buffer exactly as it was. ``threads``: see ``fastrms.threads``.
    ``extras`` (``fastrms._buffers.Extras``, checked by ``extras_of``): loss scale, clip factor,
    rounding. ``skip``: check everything, then write nothing (a step with non-finite grads).
    """
    if threads is not None:
        check_count(threads)
    buffers = Buffers(param, grad, square_avg, momentum_buffer, grad_avg, master_param)
    if isinstance(param, (list, tuple)):
        return _apply_lists(rule, buffers, step, backend, threads, extras, skip)
    if param is None or grad is None or square_avg is None:
        validate.check_present(buffers, listed=False)
    validate.check_state_matches(rule, momentum_buffer, grad_avg)
    if rule.bias_correction:
        validate.check_step(rule, step)
    if type(param) is np.ndarray and type(grad) is np.ndarray and type(square_avg) is np.ndarray \
            and (momentum_buffer is None or type(momentum_buffer) is np.ndarray) \
            and (grad_avg is None or type(grad_avg) is np.ndarray) and master_param is None:
        place = HOST  # the common case, without a conversion per buffer
    else:  # converted as a list of one (the conversion and its errors are the lists')
        columns, place = _native_columns(Buffers(*(None if a is None else [a] for a in buffers)),
                                         listed=False)
        buffers = Buffers(*(None if c is None else c[0] for c in columns))
    module = dispatch.resolve(backend, place)
    validate.check_set(module, rule, buffers)
    if buffers.param.size and not skip:
        module.update(buffers, rule, step, threads, extras=extras)


def _apply_lists(rule, columns, step, backend, threads, extras, skip):
    """``apply`` for lists: every element checked, then one backend call per dtype (and step)."""
    validate.check_lists(columns)
    n = len(columns.param)
    steps = list(step) if isinstance(step, (list, tuple)) else [step] * n
    if len(steps) != n:
        raise ValueError(f"{len(steps)} steps for {n} params")
    validate.check_present(columns, listed=True)
    validate.check_state_matches(rule, columns.momentum_buffer, columns.grad_avg)
    for t in set(steps) if rule.bias_correction else ():
        validate.check_step(rule, t)
    if not n:
        return
    module, columns, table, sizes = checked_lists(rule, columns, backend)
    offsets = extras.offsets
    offsets = offsets if isinstance(offsets, (list, tuple)) else [
        offset_of(j, offsets) for j in range(n)]
    if skip:
        return
    for rows in _runs(columns, steps if rule.bias_correction else None):
        part = Buffers(*(None if c is None or c[rows[0]] is None else [c[j] for j in rows]
                         for c in columns))
        t = steps[rows[0]]
        part_extras = extras._replace(offsets=tuple(offsets[j] for j in rows))
        update_many = getattr(module, "update_many", None)
        if update_many is not None:
            update_many(part, rule, t, table[rows], sizes[rows], threads, extras=part_extras)
            continue
        for j in range(len(rows)):  # a backend without a multi-tensor entry
            if part.param[j].size:
                module.update(Buffers(*(None if c is None else c[j] for c in part)), rule, t,
                              threads, extras=part_extras._replace(offsets=part_extras.offsets[j]))


def checked_lists(rule, columns, backend):
    """The backend module for ``columns`` (a ``Buffers`` of present, equal-length lists), the
    columns as native arrays, and their checked pointer table and sizes (``check_buffers``).
    ``apply`` runs the backend on them; ``fastrms.torch``'s step plan keeps them for many steps."""
    columns, place = _native_columns(columns, listed=True)
    module = dispatch.resolve(backend, place)
    table, sizes = validate.check_buffers(module, rule, columns)
    return module, columns, table, sizes


def _native_columns(columns, listed):
    """Native arrays for every buffer of every column, and the one place they all live."""
    place = None
    out = []
    for i, column in enumerate(columns):
        if column is None:
            out.append(None)
            continue
        natives = []
        for j, a in enumerate(column):
            if a is None:  # a master the param has not (validate refuses the other Nones)
                natives.append(None)
                continue
            if type(a) is np.ndarray:  # the common case, without a conversion
                where = HOST
            elif not listed:
                a, where = native(a, NAMES[i])
            else:
                try:  # the plain name: the GPU side tells grads (read-only allowed) by it
                    a, where = native(a, NAMES[i])
                except (TypeError, ValueError, RuntimeError) as exc:
                    raise type(exc)(f"{NAMES[i]}[{j}]: {exc}") from None
            if place is None:
                place = where
            elif where != place:
                here, first = (f"{NAMES[i]}[{j}]", "param[0]") if listed else (NAMES[i], "param")
                raise ValueError(f"{here} lives on {where} but {first} on {place}: "
                                 "all buffers of one call must live in one place")
            natives.append(a)
        out.append(natives)
    return Buffers(*out), place


def _runs(columns, steps):
    """Index lists of the elements one backend call can take: one dtype, with or without a
    master (and one step)."""
    groups = {}
    masters = columns.master_param or [None] * len(columns.param)
    for j, (p, w) in enumerate(zip(columns.param, masters)):
        key = (p.dtype, w is None, None if steps is None else steps[j])
        groups.setdefault(key, []).append(j)
    return list(groups.values())


@functools.lru_cache(maxsize=64, typed=True)
def _rule(*values):
    """The ``Rule`` of ``rmsprop_update``'s arguments, in ``RULE_ARGUMENTS`` order (cached on the
    positional values: a small call costs microseconds)."""
    return Rule(**dict(zip(RULE_ARGUMENTS, values)))


RULE_ARGUMENTS = ("lr", "alpha", "eps", "eps_in_sqrt", "momentum", "lr_in_momentum", "nesterov",
                  "centered", "weight_decay", "decoupled_weight_decay", "bias_correction",
                  "maximize")


def extras_of(grad_scale=None, clip=None, rounding="nearest", seed=0, step=None, offset=0):
    """The checked ``Extras`` of a step's loss scale, clip factor and rounding (host values;
    ``fastrms.cuda.amp`` passes device ones). Stochastic rounding keys its generator by
    ``seed`` and ``step``, so it needs the step."""
    validate.check_extras(grad_scale, clip, rounding, seed, offset)
    key = 0
    if rounding == "stochastic":
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError("rounding='stochastic' needs step (an integer >= 0): the generator "
                             f"is keyed by seed and step; got step={step!r}")
        key = int(step_key(seed, step))
    return Extras(1.0 if grad_scale is None else float(grad_scale),
                  1.0 if clip is None else float(clip), ROUNDINGS[rounding], key,
                  tuple(offset) if isinstance(offset, (list, tuple)) else int(offset))


def rmsprop_update(param, grad, square_avg, *, lr=0.01, alpha=0.9, eps=1e-6, eps_in_sqrt=True,
                   momentum=0.0, momentum_buffer=None, lr_in_momentum=False, nesterov=False,
                   centered=False, grad_avg=None, weight_decay=0.0, decoupled_weight_decay=False,
                   bias_correction=False, step=None, maximize=False, master_param=None,
                   grad_scale=None, found_inf=None, clip=None, rounding="nearest", seed=0,
                   offset=0, backend="auto", threads=None):
    """One fused RMSProp step over flat buffers, in place; returns None.

    Per element (the book's rule with every common variant; see ``fastrms.rule``)::

        g ← (g / σ)·κ                           grad_scale σ (times its float32 reciprocal),
                                                clip factor κ (both 1 by default)
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
    host arrays, CuPy for GPU arrays), "numba", "numpy" (the reference) or "cupy". ``threads``:
    how many CPU threads the step may use (default: ``fastrms.set_num_threads``, else
    ``OMP_NUM_THREADS`` / ``NUMBA_NUM_THREADS``, else every core; see ``fastrms.threads``).

    Mixed precision (docs/mixed-precision.md): float16 and bfloat16 params and grads compute in
    float32 with float32 state. ``master_param``: their float32 master copy; the rule runs on it
    and the param receives its rounded copy (then the param is only written). ``rounding``:
    "nearest" (even) or "stochastic", from a generator keyed by ``seed`` and ``step`` and counted
    by element: element i draws counter ``offset + i`` (``fastrms.rounding.offset_of(position,
    start)``; for lists one offset per tensor, by default its position × 2⁴⁰).
    ``grad_scale``: the loss scale the grads carry (> 0). ``found_inf``: when true the call
    checks everything and writes nothing. ``clip``: a clip factor in the update (see
    ``fastrms.inspect_grads`` and ``fastrms._spec.clip_factor``). On a GPU, ``found_inf`` and
    ``grad_scale`` may be device arrays, read by the kernel (no synchronisation).
    """
    rule = _rule(lr, alpha, eps, eps_in_sqrt, momentum, lr_in_momentum, nesterov, centered,
                 weight_decay, decoupled_weight_decay, bias_correction, maximize)
    if master_param is None and grad_scale is None and found_inf is None and clip is None \
            and rounding == "nearest" and isinstance(offset, int) and offset == 0:
        apply(rule, param, grad, square_avg, momentum_buffer, grad_avg, step, backend, threads)
        return
    on_device = [v for v in (found_inf, grad_scale) if _on_gpu(v)]
    extras = extras_of(None if on_device else grad_scale, clip, rounding, seed, step, offset)
    keep = None
    if on_device:
        from .cuda.amp import device_amp  # imports CuPy: only for device values

        keep = device_amp(found_inf, grad_scale, extras.clip)
        extras = extras._replace(device_amp=keep.data.ptr)
    skip = False if on_device or found_inf is None else bool(np.asarray(found_inf))
    apply(rule, param, grad, square_avg, momentum_buffer, grad_avg, step, backend, threads,
          master_param, extras, skip)
    del keep  # CuPy's pool reuses it on this stream only after the step's launch


def _on_gpu(value):
    return value is not None and (hasattr(value, "__cuda_array_interface__")
                                  or getattr(value, "is_cuda", False) is True)
