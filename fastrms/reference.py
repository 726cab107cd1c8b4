"""The NumPy reference backend: the rule of ``fastrms.rule`` applied to whole arrays.

It is the executable spec the kernels are tested against. It computes in the state dtype
(float32 for half-precision params), allocates freely, and writes the buffers only after every
result is computed, so an error leaves them untouched.
"""

import numpy as np

from .dtypes import bfloat16_dtype
from .rule import rmsprop_element

NAME, PLACE = "numpy", "host"
# bfloat16 where ml_dtypes is installed: as float16, computed in float32 and rounded to nearest
# even by np.copyto.
DTYPES = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64)) | (
    {bfloat16_dtype()} if bfloat16_dtype() is not None else set())


def availability():
    """Always usable: it needs nothing but NumPy."""
    return None


def evaluate(rule, param, grad, square_avg, momentum_buffer=None, grad_avg=None, step=None,
             dtype=None):
    """New ``(param, square_avg, momentum_buffer, grad_avg)`` after one step, as fresh arrays.

    ``dtype`` is the compute dtype: the state dtype by default; ``np.float64`` gives the float64
    evaluation of the same rule (every scalar rounded from the Python value straight to float64)
    that bounds the error of the float32 paths.
    """
    compute = np.dtype(dtype) if dtype is not None else rule.state_dtype(param.dtype)
    k = rule.scalars(compute, step)
    x, g, s = (np.asarray(v).astype(compute) for v in (param, grad, square_avg))
    b = np.asarray(momentum_buffer).astype(compute) if momentum_buffer is not None else g
    a = np.asarray(grad_avg).astype(compute) if grad_avg is not None else g
    x, s, b, a = rmsprop_element(x, g, s, b, a, k, rule.modes())
    return (x, s, b if momentum_buffer is not None else None, a if grad_avg is not None else None)


def update(buffers, rule, step, threads=None):
    """One in-place step on host arrays (a validated ``Buffers``; see ``fastrms.dispatch``).
    ``threads`` is ignored: NumPy's own operations run as they do."""
    results = evaluate(rule, *buffers, step=step)
    for buf, new in zip((buffers.param, buffers.square_avg, buffers.momentum_buffer,
                         buffers.grad_avg), results):
        if buf is not None:
            np.copyto(buf, new, casting="same_kind")  # float32 → float16 rounds to nearest even
