"""``rmsprop_update``: one fused, in-place RMSProp step, on whatever backend suits the arrays."""

import functools

import numpy as np

from . import _buffers, dispatch
from ._spec import Rule


def apply(rule, param, grad, square_avg, momentum_buffer=None, grad_avg=None, step=None,
          backend="auto"):
    """One in-place step of ``rule`` (a ``fastrms._spec.Rule``); the single route to a backend.

    Everything is checked before anything is written: a call that raises leaves every buffer
    exactly as it was.
    """
    arrays = [param, grad, square_avg, momentum_buffer, grad_avg]
    if type(param) is np.ndarray and type(grad) is np.ndarray and type(square_avg) is np.ndarray \
            and momentum_buffer is None and grad_avg is None:
        place = _buffers.HOST  # the common case, without the per-buffer conversion below
    else:
        place = _native_arrays(arrays)
    _check_state_matches(rule, momentum_buffer, grad_avg, step)
    module = dispatch.resolve(backend, place)
    _buffers.check(module, rule, arrays)
    if arrays[0].size:
        module.update(*arrays, rule, step)


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
    with centered) are C-contiguous arrays of one shape, all in host memory or all on one GPU:
    NumPy, CuPy, torch tensors, anything with ``__array_interface__``,
    ``__cuda_array_interface__`` or DLPack. They are updated in place, zero-copy. The defaults are
    the book's (lr 0.01, alpha 0.9, eps 1e-6 inside the root). ``backend`` is "auto" (Numba for
    host arrays, CuPy for GPU arrays), "numba", "numpy" (the reference) or "cupy".
    """
    rule = _rule(lr, alpha, eps, eps_in_sqrt, momentum, lr_in_momentum, nesterov, centered, False,
                 weight_decay, decoupled_weight_decay, bias_correction, maximize)
    apply(rule, param, grad, square_avg, momentum_buffer, grad_avg, step, backend)
