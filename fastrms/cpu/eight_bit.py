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
_ZERO, _ONE, _MIN_SCALE = F32(0.0), F32(1.0), F32(2.0 ** -126)


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
    """``quant8.code_unsigned`` for one value: ``encode_unsigned`` of ``min(|value · inverse|,
    1)`` (NaN → 1), in 32-bit integer operations."""
    def codegen(context, builder, signature, args):
        magnitude = builder.and_(builder.bitcast(builder.fmul(args[0], args[1]), ir.IntType(32)),
                                 _i32(0x7FFFFFFF))
        bits = _umin(builder, magnitude, _i32(0x3F800000))  # a NaN's pattern exceeds 1.0's
        shifted = builder.sub(bits, _i32(96 << 23))
        normal = builder.lshr(builder.add(builder.add(shifted, _i32((1 << 19) - 1)),
                                          builder.and_(builder.lshr(shifted, _i32(20)), _i32(1))),
                              _i32(20))
        # Below 2⁻³⁰ the code is rint(w · 2³³) (exact scaling, then nearest even): what
        # encode_unsigned computes there in integers. w is capped first: its conversion must fit.
        capped = builder.bitcast(_umin(builder, bits, _i32(97 << 23)), ir.FloatType())
        rint = builder.module.declare_intrinsic("llvm.rint", [ir.FloatType()])
        subnormal = builder.fptoui(builder.call(rint, [builder.fmul(capped, _f32(2.0 ** 33))]),
                                   ir.IntType(32))
        code = builder.select(builder.icmp_unsigned(">=", bits, _i32(97 << 23)), normal, subnormal)
        return builder.trunc(code, ir.IntType(8))

    return types.uint8(types.float32, types.float32), codegen


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


@nb.njit(inline="always")
def inverse_of(scale):
    """``quant8.inverse_of`` for one scale."""
    return _ONE / scale if scale >= _MIN_SCALE else _ZERO


def _decoded(codes, scales, j, i, default):
    """The signed buffer's value i of block j, or ``default`` when the buffer is absent."""


@overload(_decoded, inline="always")
def _decoded_impl(codes, scales, j, i, default):
    if isinstance(codes, types.NoneType):
        return lambda codes, scales, j, i, default: default
    return lambda codes, scales, j, i, default: decode_signed(codes[i]) * scales[j]


def _scratch(codes):
    """A block-sized float32 scratch for a present buffer, else None."""


@overload(_scratch, inline="always")
def _scratch_impl(codes):
    if isinstance(codes, types.NoneType):
        return lambda codes: None
    return lambda codes: np.empty(BLOCK, np.float32)


def _max_bits(scratch, i, top):
    """``top`` raised to the magnitude bits of ``scratch[i]`` (absent: ``top``)."""


@overload(_max_bits, inline="always")
def _max_bits_impl(scratch, i, top):
    if isinstance(scratch, types.NoneType):
        return lambda scratch, i, top: top

    return lambda scratch, i, top: raise_top(top, scratch[i])


def _code_signed_block(codes, scales, j, scratch, n):
    """Codes and scale of a signed buffer's block j from its new values in ``scratch``."""


@overload(_code_signed_block)
def _code_signed_block_impl(codes, scales, j, scratch, n):
    if isinstance(codes, types.NoneType):
        return lambda codes, scales, j, scratch, n: None

    def code_block(codes, scales, j, scratch, n):
        top = U32(0)
        for i in range(n):
            top = _max_bits(scratch, i, top)
        scale = _as_float32(top)
        scales[j] = scale
        inverse = inverse_of(scale)
        for i in range(n):
            codes[i] = code_signed(scratch[i], inverse)

    return code_block


@functools.lru_cache(maxsize=None)
def block_for(storage, centered):
    """The step of one block for ``storage`` (param format, rounding): ``block(x, g, sc, ss, bc,
    bs, ac, as_, w, j, kt, modes, key, offset, s_new, b_new, a_new)`` where x, g, the codes and
    w are the block's slices, the scales whole arrays (block j's at j)."""
    widen, narrow = storage_functions(*storage)

    @nb.njit(inline="always", error_model="numpy")
    def block(x, g, sc, ss, bc, bs, ac, as_, w, j, kt, modes, key, offset, s_new, b_new, a_new):
        n = x.size
        s_scale = ss[j]
        top = U32(0)
        for i in range(n):  # decode, step, write the param, keep the new state
            gi = widen(g[i])
            si = decode_unsigned(sc[i]) * s_scale
            bi = _decoded(bc, bs, j, i, gi)
            ai = _decoded(ac, as_, j, i, gi)
            if centered:
                si = si + ai * ai
            xi, si, bi, ai = _element(_load(w, i, widen(x[i])), gi, si, bi, ai, kt, modes)
            _store(w, i, xi)
            x[i] = narrow(xi, key, offset + np.uint64(i))
            if centered:
                si = si - ai * ai
                si = _ZERO if si < _ZERO else si
            s_new[i] = si
            top = raise_top(top, si)
            _store(b_new, i, bi)
            _store(a_new, i, ai)
        scale = _as_float32(top)
        ss[j] = scale
        inverse = inverse_of(scale)
        for i in range(n):  # the new codes, from the scratch
            sc[i] = code_unsigned(s_new[i], inverse)
        _code_signed_block(bc, bs, j, b_new, n)
        _code_signed_block(ac, as_, j, a_new, n)

    return block


def _part(codes, lo, hi):
    """``codes[lo:hi]``, or None when the buffer is absent (kernels._part, for uint8 too)."""


@overload(_part, inline="always")
def _part_impl(codes, lo, hi):
    if isinstance(codes, types.NoneType):
        return lambda codes, lo, hi: None
    return lambda codes, lo, hi: codes[lo:hi]


BLOCK_STEP = MODES = None  # the globals the loop reads, bound per variant by ``specialised``


def _loop(x, g, sc, ss, bc, bs, ac, as_, w, k, key, offset):
    kt = _scalar_tuple(k)
    n = x.size
    blocks = ss.size
    for task in nb.prange((blocks + BLOCKS_PER_TASK - 1) // BLOCKS_PER_TASK):
        s_new, b_new, a_new = _scratch(sc), _scratch(bc), _scratch(ac)
        for j in range(task * BLOCKS_PER_TASK, min((task + 1) * BLOCKS_PER_TASK, blocks)):
            lo = j * BLOCK
            hi = min(lo + BLOCK, n)
            BLOCK_STEP(x[lo:hi], g[lo:hi], sc[lo:hi], ss, _part(bc, lo, hi), bs,
                       _part(ac, lo, hi), as_, _part(w, lo, hi), j, kt, MODES, key,
                       offset + np.uint64(lo), s_new, b_new, a_new)


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
