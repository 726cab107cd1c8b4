"""Half-precision params in the Numba loops: reading and writing them through their bit patterns.

Numba has no 16-bit float arithmetic on the CPU, so float16 and bfloat16 buffers reach the loops
as uint16 views, and ``fastrms.rounding``'s functions (the reference's own, registered here as
inlinable) turn the patterns into float32 and back: nearest even, or stochastic with the step's
key and each element's counter. float16 converts through LLVM's ``half`` type instead (the
CPU's F16C instructions: the integer version cost 4 ns an element), with the same results. ``storage_functions(fmt, rounding)`` picks the pair for a buffer
format in Python, so that each compiled loop holds only its own conversions.
"""

import functools

import numba as nb
import numpy as np
from numba import types
from llvmlite import ir
from numba.extending import intrinsic, register_jitable

from .. import rounding as R

for _function in R.ELEMENT_FUNCTIONS:
    register_jitable(inline="always")(_function)


@intrinsic
def _as_float32(typingctx, bits):
    """uint32 bits → the float32 they spell."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return types.float32(types.uint32), codegen


@intrinsic
def _bits_of(typingctx, value):
    """float32 → its uint32 bits."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.uint32))

    return types.uint32(types.float32), codegen


@intrinsic
def _f16_hw_in(typingctx, bits):
    """float16 bits (uint16) → float32, by LLVM's fpext (F16C's vcvtph2ps where the CPU has it)."""
    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


@intrinsic
def _f16_hw_out(typingctx, value):
    """float32 → float16 bits (uint16), nearest even, by LLVM's fptrunc (vcvtps2ph): what
    ``rounding.f32_to_f16`` computes in integers, NaN included (a test checks every pattern)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.uint16(types.float32), codegen


@nb.njit(inline="always")
def _same(h):
    return h


@nb.njit(inline="always")
def _bf16_in(h):
    return _as_float32(R.bf16_to_f32(h))


@nb.njit(inline="always")
def _f16_in(h):
    return _f16_hw_in(h)


@nb.njit(inline="always")
def _keep(x, key, counter):
    return x


@nb.njit(inline="always")
def _bf16_out(x, key, counter):
    return np.uint16(R.f32_to_bf16(_bits_of(x)))


@nb.njit(inline="always")
def _f16_out(x, key, counter):
    return _f16_hw_out(x)


@nb.njit(inline="always")
def _bf16_stochastic(x, key, counter):
    r = R.random32(key, counter)
    return np.uint16(R.f32_to_bf16(R.stochastic_f32(_bits_of(x), r, R.BFLOAT16)))


@nb.njit(inline="always")
def _f16_stochastic(x, key, counter):
    r = R.random32(key, counter)
    return _f16_hw_out(_as_float32(R.stochastic_f32(_bits_of(x), r, R.FLOAT16)))


_WIDEN = {R.FLOAT: _same, R.BFLOAT16: _bf16_in, R.FLOAT16: _f16_in}
_NARROW = {(R.FLOAT, R.NEAREST): _keep, (R.BFLOAT16, R.NEAREST): _bf16_out,
           (R.FLOAT16, R.NEAREST): _f16_out, (R.BFLOAT16, R.STOCHASTIC): _bf16_stochastic,
           (R.FLOAT16, R.STOCHASTIC): _f16_stochastic}


@functools.lru_cache(maxsize=None)
def storage_functions(fmt, rounding):
    """``(widen(h) -> compute value, narrow(x, key, counter) -> stored value)`` for params of
    format ``fmt`` (``rounding.FLOAT``: the value itself, both ways) written with ``rounding``."""
    return _WIDEN[fmt], _NARROW[fmt, rounding if fmt != R.FLOAT else R.NEAREST]
