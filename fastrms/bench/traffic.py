"""What one fused step moves through memory, and what that makes a measured time worth."""

import numpy as np

from ..dtypes import state_dtype

VARIANTS = {
    # name: (momentum buffer, grad average)
    "plain": (False, False),
    "momentum": (True, False),
    "centered": (False, True),
    "momentum+centered": (True, True),
}


def bytes_per_element(variant, dtype):
    """Bytes read + written per element by one fused step.

    param: read + write; grad: read; each state buffer (square_avg, and the momentum buffer and
    grad average where the variant has them): read + write. float32 plain: 4·3 + 4·2 = 20.
    """
    momentum, centered = VARIANTS[variant]
    param = np.dtype(dtype).itemsize
    state = state_dtype(dtype).itemsize
    return 3 * param + 2 * state * (1 + momentum + centered)


def bytes_touched(variant, dtype):
    """Distinct bytes per element one step reads or writes (its buffers' size, each counted once):
    param and grad, and each state buffer. float32 plain: 4·2 + 4 = 12. Where ``n`` times this
    fits in the last-level cache, repeated steps run from the cache."""
    momentum, centered = VARIANTS[variant]
    return 2 * np.dtype(dtype).itemsize + state_dtype(dtype).itemsize * (1 + momentum + centered)


def gbps(variant, dtype, n, seconds):
    return bytes_per_element(variant, dtype) * n / seconds / 1e9


def ratio(numerator, denominator):
    """``numerator / denominator``, or None where either is missing."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator
