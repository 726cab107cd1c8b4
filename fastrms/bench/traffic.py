"""What one fused step moves through memory, and what that makes a measured time worth."""

import numpy as np

from . import modes

VARIANTS = {
    # name: (momentum buffer, grad average)
    "plain": (False, False),
    "momentum": (True, False),
    "centered": (False, True),
    "momentum+centered": (True, True),
}
MASTER_BYTES = 4  # a float32 master param
CODE_BYTES = 1 + 4 / 256  # an 8-bit state value: its code and its share of the block's scale


def _sizes(mode):
    """(param and grad itemsize, state itemsize) of a mode (a name or a ``modes.Mode``): half
    params keep float32 state, as every backend does."""
    mode = modes.parse(mode)
    param = 2 if mode.half else np.dtype(mode.dtype).itemsize
    return param, CODE_BYTES if mode.state8 else 4 if mode.half else param


def bytes_per_element(variant, mode):
    """Bytes read + written per element by one fused step in ``mode`` (a dtype name is a mode).

    param: read + write, or with a float32 master only written (the master read + written);
    grad: read, and with ``+clip`` read once more (``inspect_grads``); each state buffer
    (square_avg, and the momentum buffer and grad average where the variant has them): read +
    write. float32 plain: 4·3 + 4·2 = 20; bfloat16 + master: 2 + 8 + 2 + 8 = 20; bfloat16 or
    float16 without a master: 4 + 2 + 8 = 14; float32 with clipping: 20 + 4 = 24; float32 with
    8-bit state: 8 + 4 + 2·(1 + 4/256) = 14.03.
    """
    m = modes.parse(mode)
    momentum, centered = VARIANTS[variant]
    param, state = _sizes(m)
    moved = param + 2 * MASTER_BYTES if m.master else 2 * param
    return moved + param * (1 + m.clip) + 2 * state * (1 + momentum + centered)


def bytes_touched(variant, mode):
    """Distinct bytes per element one step reads or writes (its buffers' size, each counted once):
    param and grad, the master where there is one, and each state buffer. float32 plain:
    4·2 + 4 = 12. Where ``n`` times this fits in the last-level cache, repeated steps run from
    the cache."""
    m = modes.parse(mode)
    momentum, centered = VARIANTS[variant]
    param, state = _sizes(m)
    return 2 * param + MASTER_BYTES * m.master + state * (1 + momentum + centered)


def gbps(variant, mode, n, seconds):
    return bytes_per_element(variant, mode) * n / seconds / 1e9


def ratio(numerator, denominator):
    """``numerator / denominator``, or None where either is missing."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator
