"""The fused 8-bit step in Numba (``fastrms.eight_bit``'s reference, bit for bit): one pass per
block of ``quant8.BLOCK`` values decodes the codes, runs the rule, writes the param and keeps the
new state values in a block-sized scratch; a second pass over that scratch (in cache) writes the
new codes once the block's scale is known. No float32 copy of the state is ever made.

Decoding computes the table's values (``quant8.TABLES``, a test checks) instead of looking them
up: a gather per element would keep the loop from vectorising. The scale is the largest
magnitude's bit pattern (``quant8.block_scales``): an integer max, which vectorises where a
float max with NaNs would not.

Measured here (2 cores, in cache, one thread): the rule alone costs 0.61 ns an element (its
division and square root), decoding 0.2 and coding 0.34 more, so on few cores this step is
bound by its arithmetic, not by its 14 bytes an element (docs/eight-bit.md).

Note for developers: Numba's disk cache checks this file's timestamp only, not ``quant8.py``'s
or ``rule.py``'s: after editing those, touch this file (or clear ``__pycache__``).
"""

import functools

import numba as nb
import numpy as np
from numba import types
from llvmlite import ir
from numba.extending import intrinsic, overload

from .. import quant8
from ..rule import CENTERED_MODE, CENTERED_NONE
from .halves import _as_float32, storage_functions
from .jit import compile_loop
from .kernels import _element, _load, _scalar_tuple, _store, specialised

BLOCK = quant8.BLOCK
BLOCKS_PER_TASK = 64  # 2¹⁴ values per parallel task, as the float32 loops
U32, F32 = np.uint32, np.float32
_LINEAR, _STEP = F32(127.0), F32(1.0) / F32(127.0)
_ZERO = F32(0.0)


def _i32(value):
    return ir.Constant(ir.IntType(32), value)


def _f32(value):
    return ir.Constant(ir.FloatType(), value)


def _umax(builder, a, b):
    return builder.select(builder.icmp_unsigned(">", a, b), a, b)


def _umin(builder, a, b):
    return builder.select(builder.icmp_unsigned("<", a, b), a, b)


# The element operations below are LLVM IR in 32-bit integers: Numba's own integer arithmetic
# widens uint32 to 64 bits, which halves the vector lanes (the loop ran at half speed).

@intrinsic
def decode_unsigned(typingctx, code):
    """``quant8.TABLES[UNSIGNED][code]``: from code 8 up, the float32 pattern code · 2²⁰ + 96 · 2²³
    (exponent field code / 8 + 96, mantissa code mod 8); below, code · 2⁻³³."""
    def codegen(context, builder, signature, args):
        c = builder.zext(args[0], ir.IntType(32))
        normal = builder.bitcast(builder.add(builder.shl(c, _i32(20)), _i32(96 << 23)),
                                 ir.FloatType())
        small = builder.fmul(builder.uitofp(c, ir.FloatType()), _f32(2.0 ** -33))
        return builder.select(builder.icmp_unsigned(">=", c, _i32(8)), normal, small)

    return types.float32(types.uint8), codegen


@nb.njit(inline="always")
def decode_signed(code):
    """``quant8.TABLES[SIGNED][code]``: (code − 127) · fl(1/127) in float32 (a multiply: a
    division per element and buffer cost the momentum + centered step a fifth of its speed)."""
    return (F32(code) - _LINEAR) * _STEP


@intrinsic
def code_unsigned(typingctx, value, inverse):
    """``quant8.code_unsigned_dithered`` for one value: ``encode_unsigned_dithered`` of
    ``min(|value · inverse|, 1)`` (NaN → 1), in 32-bit integer operations."""
    def codegen(context, builder, signature, args):
        magnitude = builder.and_(builder.bitcast(builder.fmul(args[0], args[1]), ir.IntType(32)),
                                 _i32(0x7FFFFFFF))
        bits = _umin(builder, magnitude, _i32(0x3F800000))  # a NaN's pattern exceeds 1.0's
        noise = _mix32(builder, bits)
        normal = builder.lshr(builder.add(builder.sub(bits, _i32(96 << 23)),
                                          builder.lshr(noise, _i32(12))), _i32(20))
        # Below 2⁻³⁰: the mantissa over 2^shift plus shift random bits; the shift is kept in
        # [21, 31], where the selects drop it too (wider shifts are undefined in LLVM).
        mantissa = builder.or_(builder.and_(bits, _i32(0x7FFFFF)), _i32(0x800000))
        shift = builder.sub(_i32(117), builder.lshr(bits, _i32(23)))
        shift = _umax(builder, _umin(builder, shift, _i32(31)), _i32(21))
        small = builder.lshr(builder.add(mantissa, builder.lshr(noise, builder.sub(_i32(32),
                                                                                  shift))), shift)
        small = builder.select(builder.icmp_unsigned(">=", bits, _i32(86 << 23)), small, _i32(0))
        code = builder.select(builder.icmp_unsigned(">=", bits, _i32(97 << 23)), normal, small)
        return builder.trunc(code, ir.IntType(8))

    return types.uint8(types.float32, types.float32), codegen


def _mix32(builder, x):
    """``quant8.mix32`` in IR."""
    for shift, factor in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        x = builder.mul(builder.xor(x, builder.lshr(x, _i32(shift))), _i32(factor))
    return builder.xor(x, builder.lshr(x, _i32(16)))


@intrinsic
def code_signed(typingctx, value, inverse):
    """``quant8.code_signed`` for one value: rint(127 · w) + 127 of ``value · inverse`` kept in
    [−1, 1] (NaN → 1)."""
    def codegen(context, builder, signature, args):
        w = builder.fmul(args[0], args[1])
        w = builder.select(builder.fcmp_ordered("<=", w, _f32(1.0)), w, _f32(1.0))
        w = builder.select(builder.fcmp_ordered(">=", w, _f32(-1.0)), w, _f32(-1.0))
        rint = builder.module.declare_intrinsic("llvm.rint", [ir.FloatType()])
        code = builder.fadd(builder.call(rint, [builder.fmul(w, _f32(127.0))]), _f32(127.0))
        return builder.trunc(builder.fptoui(code, ir.IntType(32)), ir.IntType(8))

    return types.uint8(types.float32, types.float32), codegen


@intrinsic
def raise_top(typingctx, top, value):
    """``max(top, the pattern of |value|)`` in uint32 (``quant8.block_scales``)."""
    def codegen(context, builder, signature, args):
        magnitude = builder.and_(builder.bitcast(args[1], ir.IntType(32)), _i32(0x7FFFFFFF))
        return _umax(builder, args[0], magnitude)

    return types.uint32(types.uint32, types.float32), codegen


@intrinsic
def inverse_of(typingctx, scale):
    """``quant8.inverse_of`` for one scale: fl(1/scale) from 2⁻¹²⁶ up (inf: 0), else 0. A
    select in IR: Numba's own conditional, inlined into the loop, tripped its SSA checks."""
    def codegen(context, builder, signature, args):
        normal = builder.fcmp_ordered(">=", args[0], _f32(2.0 ** -126))
        return builder.select(normal, builder.fdiv(_f32(1.0), args[0]), _f32(0.0))

    return types.float32(types.float32), codegen


def _decoded(codes, scale, i, default):
    """A signed buffer's value i decoded with its block's ``scale``, or ``default`` when the
    buffer is absent."""


@overload(_decoded, inline="always")
def _decoded_impl(codes, scale, i, default):
    if isinstance(codes, types.NoneType):
        return lambda codes, scale, i, default: default
    return lambda codes, scale, i, default: decode_signed(codes[i]) * scale


def _scale(scales, j):
    """``scales[j]``, or 0 when the buffer is absent."""


@overload(_scale, inline="always")
def _scale_impl(scales, j):
    if isinstance(scales, types.NoneType):
        return lambda scales, j: _ZERO
    return lambda scales, j: scales[j]


def _raised(scratch, top, value):
    """``raise_top(top, value)``, or ``top`` when the buffer is absent."""


@overload(_raised, inline="always")
def _raised_impl(scratch, top, value):
    if isinstance(scratch, types.NoneType):
        return lambda scratch, top, value: top
    return lambda scratch, top, value: raise_top(top, value)


def _new_scale(scales, j, top):
    """Write block j's scale (the magnitude pattern ``top``) and return its ``inverse_of``; 0
    when the buffer is absent."""


@overload(_new_scale, inline="always")
def _new_scale_impl(scales, j, top):
    if isinstance(scales, types.NoneType):
        return lambda scales, j, top: _ZERO

    def new_scale(scales, j, top):
        scale = _as_float32(top)
        scales[j] = scale
        return inverse_of(scale)

    return new_scale


def _code_signed_at(codes, i, scratch, k, inverse):
    """``codes[i]`` from ``scratch[k]``; nothing when the buffer is absent."""


@overload(_code_signed_at, inline="always")
def _code_signed_at_impl(codes, i, scratch, k, inverse):
    if isinstance(codes, types.NoneType):
        return lambda codes, i, scratch, k, inverse: None

    def code_at(codes, i, scratch, k, inverse):
        codes[i] = code_signed(scratch[k], inverse)

    return code_at


def _scratch(codes):
    """A block-sized float32 scratch for a present buffer, else None."""


@overload(_scratch, inline="always")
def _scratch_impl(codes):
    if isinstance(codes, types.NoneType):
        return lambda codes: None
    return lambda codes: np.empty(BLOCK, np.float32)


@functools.lru_cache(maxsize=None)
def block_for(storage, centered):
    """The step of block j (elements lo..hi) for ``storage`` (param format, rounding):
    ``block(x, g, sc, ss, bc, bs, ac, as_, w, lo, hi, j, kt, modes, key, offset, s_new, b_new,
    a_new)`` over the whole arrays, indexed in place: slicing per block cost a reference count
    on the arrays, an atomic that the threads contended for."""
    widen, narrow = storage_functions(*storage)

    @nb.njit(inline="always", error_model="numpy")
    def block(x, g, sc, ss, bc, bs, ac, as_, w, lo, hi, j, kt, modes, key, offset, s_new, b_new,
              a_new):
        s_scale, b_scale, a_scale = ss[j], _scale(bs, j), _scale(as_, j)
        top_s = top_b = top_a = U32(0)
        for i in range(lo, hi):  # decode, step, write the param, keep the new state
            gi = widen(g[i])
            si = decode_unsigned(sc[i]) * s_scale
            bi = _decoded(bc, b_scale, i, gi)
            ai = _decoded(ac, a_scale, i, gi)
            if centered:
                si = si + ai * ai
            xi, si, bi, ai = _element(_load(w, i, widen(x[i])), gi, si, bi, ai, kt, modes)
            _store(w, i, xi)
            x[i] = narrow(xi, key, offset + i)
            if centered:
                si = si - ai * ai
                si = _ZERO if si < _ZERO else si
            s_new[i - lo] = si
            _store(b_new, i - lo, bi)
            _store(a_new, i - lo, ai)
            top_s = raise_top(top_s, si)
            top_b = _raised(b_new, top_b, bi)
            top_a = _raised(a_new, top_a, ai)
        s_inverse = _new_scale(ss, j, top_s)
        b_inverse = _new_scale(bs, j, top_b)
        a_inverse = _new_scale(as_, j, top_a)
        for i in range(lo, hi):  # the new codes, from the scratch
            sc[i] = code_unsigned(s_new[i - lo], s_inverse)
            _code_signed_at(bc, i, b_new, i - lo, b_inverse)
            _code_signed_at(ac, i, a_new, i - lo, a_inverse)

    return block


BLOCK_STEP = MODES = None  # the globals the loop reads, bound per variant by ``specialised``


def _loop(x, g, sc, ss, bc, bs, ac, as_, w, k, key, offset):
    kt = _scalar_tuple(k)
    n = x.size
    blocks = ss.size
    for task in nb.prange((blocks + BLOCKS_PER_TASK - 1) // BLOCKS_PER_TASK):
        s_new, b_new, a_new = _scratch(sc), _scratch(bc), _scratch(ac)
        for j in range(task * BLOCKS_PER_TASK, min((task + 1) * BLOCKS_PER_TASK, blocks)):
            # Unsigned bounds: a signed index may be negative for all Numba knows, and the
            # wrap-around it then adds kept the loops from vectorising.
            BLOCK_STEP(x, g, sc, ss, bc, bs, ac, as_, w, np.uint64(j * BLOCK),
                       np.uint64(min(j * BLOCK + BLOCK, n)), j, kt, MODES, key, offset, s_new,
                       b_new, a_new)


def kernel8(modes, parallel, storage):
    """The fused 8-bit loop ``f(x, g, sc, ss, bc, bs, ac, as_, w, k, key, offset)`` for one mode
    tuple (``eight_bit.modes8``) and ``storage``; serial or parallel (prange runs as range)."""
    return _kernel8(modes, parallel, storage)


@functools.lru_cache(maxsize=None)
def _kernel8(modes, parallel, storage):
    name = f"rmsprop8_{'parallel' if parallel else 'serial'}_" + "_".join(
        map(str, modes + storage))
    centered = modes[CENTERED_MODE] != CENTERED_NONE
    return compile_loop(specialised(_loop, name, BLOCK_STEP=block_for(storage, centered),
                                    MODES=modes), parallel)
