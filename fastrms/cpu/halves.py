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


def _i32(value):
    return ir.Constant(ir.IntType(32), value)


def _bf16_nearest_ir(builder, bits):
    """float32 bits (i32) → bfloat16 bits (i16), nearest even, NaN quieted: ``rounding.f32_to_bf16``
    in 32-bit operations (Numba's own integer arithmetic widens to 64 bits, half the lanes)."""
    high = builder.lshr(bits, _i32(16))
    rounded = builder.lshr(builder.add(builder.add(bits, _i32(0x7FFF)),
                                       builder.and_(high, _i32(1))), _i32(16))
    nan = builder.icmp_unsigned(">", builder.and_(bits, _i32(0x7FFFFFFF)), _i32(0x7F800000))
    out = builder.select(nan, builder.or_(high, _i32(0x40)), rounded)
    return builder.trunc(out, ir.IntType(16))


@intrinsic
def _bf16_hw_out(typingctx, value):
    """float32 → bfloat16 bits (uint16), nearest even, in 32-bit operations."""
    def codegen(context, builder, signature, args):
        return _bf16_nearest_ir(builder, builder.bitcast(args[0], ir.IntType(32)))

    return types.uint16(types.float32), codegen


@intrinsic
def _bf16_hw_stochastic(typingctx, value, random):
    """float32 → bfloat16 bits, rounded stochastically with the uint32 ``random`` bits:
    ``rounding.stochastic_f32`` (BFLOAT16) then nearest even, in 32-bit operations."""
    def codegen(context, builder, signature, args):
        bits = builder.bitcast(args[0], ir.IntType(32))
        sign = builder.and_(bits, _i32(0x80000000))
        magnitude = builder.and_(bits, _i32(0x7FFFFFFF))
        moved = builder.and_(builder.add(magnitude, builder.lshr(args[1], _i32(16))),
                             _i32(0xFFFF0000))
        special = builder.icmp_unsigned(">=", magnitude, _i32(0x7F800000))  # inf, NaN: kept
        return _bf16_nearest_ir(builder, builder.or_(sign, builder.select(special, magnitude,
                                                                           moved)))

    return types.uint16(types.float32, types.uint32), codegen


@nb.njit(inline="always")
def _same(h):
    return h


@intrinsic
def _bf16_hw_in(typingctx, bits):
    """bfloat16 bits (uint16) → float32: the bits 16 places up, in 32-bit operations."""
    def codegen(context, builder, signature, args):
        wide = builder.shl(builder.zext(args[0], ir.IntType(32)), _i32(16))
        return builder.bitcast(wide, ir.FloatType())

    return types.float32(types.uint16), codegen


@nb.njit(inline="always")
def _bf16_in(h):
    return _bf16_hw_in(h)


@nb.njit(inline="always")
def _f16_in(h):
    return _f16_hw_in(h)


@nb.njit(inline="always")
def _keep(x, key, counter):
    return x


@nb.njit(inline="always")
def _bf16_out(x, key, counter):
    return _bf16_hw_out(x)


@nb.njit(inline="always")
def _f16_out(x, key, counter):
    return _f16_hw_out(x)


@nb.njit(inline="always")
def _bf16_stochastic(x, key, counter):
    return _bf16_hw_stochastic(x, R.random32(key, counter))


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
