"""The NumPy reference backend: the rule of ``fastrms.rule`` applied to whole arrays.

It is the executable spec the kernels are tested against. It computes in the state dtype
(float32 for half-precision params), allocates freely, and writes the buffers only after every
result is computed, so an error leaves them untouched. Half-precision params are read and written
through their bit patterns by ``fastrms.rounding`` (the very functions the Numba loops inline):
nearest even, or stochastic with the step's key and each element's counter.
"""

import numpy as np

from . import rounding
from ._buffers import PLAIN
from .dtypes import bfloat16_dtype, is_bfloat16
from .rule import rmsprop_element

NAME, PLACE = "numpy", "host"
# bfloat16 where ml_dtypes is installed: as float16, computed in float32.
DTYPES = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64)) | (
    {bfloat16_dtype()} if bfloat16_dtype() is not None else set())


def availability():
    """Always usable: it needs nothing but NumPy."""
    return None


def param_format(dtype):
    """``rounding.BFLOAT16``, ``FLOAT16`` or ``FLOAT`` (a dtype the compute happens in)."""
    if is_bfloat16(dtype):
        return rounding.BFLOAT16
    return rounding.FLOAT16 if np.dtype(dtype) == np.float16 else rounding.FLOAT


def widen(param):
    """A half-precision ``param`` as float32 (exact), through its bits."""
    bits = np.ascontiguousarray(param).reshape(-1).view(np.uint16).astype(np.uint32)
    fmt = param_format(param.dtype)
    wide = rounding.bf16_to_f32(bits) if fmt == rounding.BFLOAT16 else rounding.f16_to_f32(bits)
    return wide.view(np.float32).reshape(np.shape(param))


def narrow(x, dtype, extras=PLAIN):
    """float32 ``x`` rounded to the half-precision ``dtype`` as ``extras`` says (nearest even, or
    stochastic with ``extras.key`` and counters ``extras.offsets + i``)."""
    fmt = param_format(dtype)
    bits = np.ascontiguousarray(x, dtype=np.float32).reshape(-1).view(np.uint32)
    if extras.rounding == rounding.STOCHASTIC:
        counters = np.arange(bits.size, dtype=np.uint64) + np.uint64(extras.offsets)
        random = rounding.random32(np.uint64(extras.key), counters)
        bits = rounding.stochastic_f32(bits, random, fmt)
    half = rounding.f32_to_bf16(bits) if fmt == rounding.BFLOAT16 else rounding.f32_to_f16(bits)
    return half.astype(np.uint16).view(dtype).reshape(np.shape(x))


def evaluate(rule, param, grad, square_avg, momentum_buffer=None, grad_avg=None, step=None,
             dtype=None, master_param=None, extras=PLAIN, modes=None):
    """New ``(param, square_avg, momentum_buffer, grad_avg, master_param)`` after one step, as
    fresh arrays (None for an absent buffer).

    ``dtype`` is the compute dtype: the state dtype by default; ``np.float64`` gives the float64
    evaluation of the same rule (every scalar rounded from the Python value straight to float64)
    that bounds the error of the float32 paths; the new param is then that evaluation, unrounded.
    With ``master_param`` the rule runs on the master (float32) and the param receives its
    rounded copy; ``extras`` (``fastrms._buffers.Extras``) scales and clips the grads and chooses
    the rounding. ``modes``: instead of ``rule.modes()`` (the 8-bit step's, ``fastrms.eight_bit``).
    """
    compute = np.dtype(dtype) if dtype is not None else rule.state_dtype(param.dtype)
    k = rule.scalars(compute, step, extras.grad_scale, extras.clip)
    half = param_format(param.dtype) != rounding.FLOAT
    x, g = (widen(v) if half else np.asarray(v) for v in (param, grad))
    if master_param is not None:
        x = master_param
    x, g, s = (np.asarray(v).astype(compute) for v in (x, g, square_avg))
    b = np.asarray(momentum_buffer).astype(compute) if momentum_buffer is not None else g
    a = np.asarray(grad_avg).astype(compute) if grad_avg is not None else g
    x, s, b, a = rmsprop_element(x, g, s, b, a, k, rule.modes() if modes is None else modes)
    new_param = narrow(x, param.dtype, extras) if half and dtype is None else x
    return (new_param, s, b if momentum_buffer is not None else None,
            a if grad_avg is not None else None, x if master_param is not None else None)


def update(buffers, rule, step, threads=None, extras=PLAIN):
    """One in-place step on host arrays (a validated ``Buffers``; see ``fastrms.dispatch``).
    ``threads`` is ignored: NumPy's own operations run as they do."""
    results = evaluate(rule, *buffers[:5], step=step, master_param=buffers.master_param,
                       extras=extras)
    for buf, new in zip((buffers.param, buffers.square_avg, buffers.momentum_buffer,
                         buffers.grad_avg, buffers.master_param), results):
        if buf is not None:
            np.copyto(buf, new, casting="same_kind")

