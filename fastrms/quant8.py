"""8-bit optimizer state, once: the code maps and the blockwise quantisation of a state buffer
(docs/design.md §9; the step on them: ``fastrms.eight_bit``).

A buffer of n values is stored as n uint8 codes and one float32 scale per block of ``BLOCK``
values: the block's largest magnitude. A value is ``table[code] · scale`` (one float32 multiply,
the same on every backend); a value x is coded as the code of ``min(|x · fl(1/scale)|, 1)``
(signed: its clamp to [−1, 1]), rounded to the nearest code, ties to even; a step writes the
square average with dithered rounding instead (``code_unsigned_dithered``: unbiased, so that
EMA steps smaller than a code's spacing move it on average). Non-finite values
(``block_scales``, ``inverse_of``) make their whole block non-finite.

Two maps, for what each buffer holds (chosen by ``python bench/eight_bit_maps.py``):

- ``UNSIGNED`` (the square average: non-negative, a huge dynamic range): an 8-bit float without a
  sign, 5 exponent bits and 3 mantissa bits, biased so that 1.0 is code 248: 31 binades from
  2⁻³⁰ to 1 at 8 codes each (relative steps of 6–12%), and below 2⁻³⁰ steps of 2⁻³³ down to 0.
- ``SIGNED`` (the momentum buffer and the grad average): linear, code = rint(127·v) + 127 for v in
  [−1, 1]: their errors reach the params as absolute errors (x ← x − η·b), which a linear map
  bounds evenly.

Like ``fastrms.rounding``, the element functions are branch-free bit operations on uint32 and
float32 with typed constants, so that they run on NumPy arrays (the reference) and inline into
Numba loops alike (the dithered one's hash needs 32-bit wrap-around, which the kernel spells
in LLVM IR: ``fastrms.cpu.eight_bit``); the decode tables are float32[256] arrays built here
once (equal, a test checks, to what float32 arithmetic gives: the unsigned values from their bits, the signed ones
as one multiply by fl(1/127), so a kernel may decode without a table).
"""

import numpy as np

from .rounding import _select

BLOCK = 256  # values per scale: bitsandbytes' block; a multiple of every vector width
UNSIGNED, SIGNED = 0, 1  # the maps
U32, F32 = np.uint32, np.float32

_MIN_NORMAL = U32(97 << 23)  # 2⁻³⁰: the smallest value with a normal code
_REBIAS = U32(96 << 23)  # float32's exponent field minus the code's (2⁻³⁰ → 1, 1.0 → 31)
_DROP, _HALF = U32(20), U32((1 << 19) - 1)  # bits dropped (23 − 3); half their ULP less one
_ONE = U32(1)
_MANTISSA, _HIDDEN, _EXPONENT = U32(0x7FFFFF), U32(0x800000), U32(23)
_SUBNORMAL_SHIFT, _MIN_SHIFT, _MAX_SHIFT = U32(117), U32(21), U32(31)
_LINEAR, _LINEAR_OFFSET = F32(127.0), F32(127.0)
_MIX_A, _MIX_B, _S16, _S15 = U32(0x7FEB352D), U32(0x846CA68B), U32(16), U32(15)
_NOISE_SHIFT, _WORD, _ZERO_U = U32(12), U32(32), U32(0)  # 20 random bits below a normal code
_MIN_DITHERED = U32(86 << 23)  # 2⁻⁴¹: below, a dithered code is 0
_ZERO_F, _ONE_F = F32(0.0), F32(1.0)
_MIN_SCALE = F32(2.0 ** -126)  # the smallest normal float32: its reciprocal is finite


def encode_unsigned(bits):
    """The code (uint32, 0..248) of a float32 in [0, 1] given as its uint32 ``bits``, round to
    nearest, ties to even: integer operations only."""
    shifted = bits - _REBIAS
    normal = (shifted + _HALF + ((shifted >> _DROP) & _ONE)) >> _DROP
    # Below 2⁻³⁰: rint(v · 2³³) = the 24-bit mantissa shifted right by 117 − exponent (≥ 21),
    # rounded to even; the shift is kept in [21, 31] (wider shifts are undefined in LLVM and C,
    # and give 0 here anyway), so where the select drops it, it is merely unused.
    mantissa, shift = _below_normal(bits)
    subnormal = (mantissa + ((_ONE << (shift - _ONE)) - _ONE) + ((mantissa >> shift) & _ONE)) \
        >> shift
    return _select(bits >= _MIN_NORMAL, normal, subnormal)


def _below_normal(bits):
    """The 24-bit mantissa of ``bits`` and the shift that makes it a code below 2⁻³⁰
    (117 − exponent), kept in [21, 31]: wider shifts are undefined in LLVM and C."""
    shift = np.maximum(np.minimum(_SUBNORMAL_SHIFT - (bits >> _EXPONENT), _MAX_SHIFT), _MIN_SHIFT)
    return (bits & _MANTISSA) | _HIDDEN, shift


def mix32(x):
    """A bijection of uint32 whose output bits each depend on every input bit (Wellons'
    lowbias32): the noise of ``encode_unsigned_dithered``."""
    x = (x ^ (x >> _S16)) * _MIX_A
    x = (x ^ (x >> _S15)) * _MIX_B
    return x ^ (x >> _S16)


def encode_unsigned_dithered(bits):
    """``encode_unsigned`` rounded up or down at random instead of to nearest: up with the
    probability of the fraction of the gap that the value covers (unbiased), the noise being
    ``mix32(bits)`` (no key: the value itself varies from step to step, and a code then depends
    on nothing but the value, wherever it is stored). Values below 2⁻⁴¹ (a 256th of the smallest
    step) code as 0, so 0 stays 0; 1 stays 248."""
    noise = mix32(bits)
    normal = (bits - _REBIAS + (noise >> _NOISE_SHIFT)) >> _DROP
    # Below 2⁻³⁰: the 24-bit mantissa over 2^shift (shift = 117 − exponent, 21..31 here), plus
    # shift random bits. The shift is kept in range where the selects drop it (as above).
    mantissa, shift = _below_normal(bits)
    subnormal = (mantissa + (noise >> (_WORD - shift))) >> shift
    subnormal = _select(bits >= _MIN_DITHERED, subnormal, _ZERO_U)
    return _select(bits >= _MIN_NORMAL, normal, subnormal)


def encode_signed(v):
    """The code (uint32, 0..254) of float32 ``v`` in [−1, 1]: rint(fl(127·v)) + 127, the nearest
    code except where the product's rounding tips a near-tie (v within 2⁻²¹ of a midpoint)."""
    return U32(np.rint(v * _LINEAR) + _LINEAR_OFFSET)


def _unsigned_table():
    codes = np.arange(256, dtype=np.uint32)
    exponent, mantissa = codes >> 3, codes & 7
    normal = (((exponent + 96) << 23) | (mantissa << 20)).astype(np.uint32).view(np.float32)
    subnormal = (mantissa.astype(np.float64) * 2.0 ** -33).astype(np.float32)
    return np.where(exponent >= 1, normal, subnormal).astype(np.float32)


def _signed_table():
    codes = np.arange(256, dtype=np.float32)
    return ((codes - F32(127.0)) * (_ONE_F / F32(127.0))).astype(np.float32)


TABLES = np.stack([_unsigned_table(), _signed_table()])  # [map, code] -> the value of the code
TOP_CODE = (248, 254)  # per map: the code of 1.0


def block_scales(blocks):
    """float32 [m]: each row's scale, the largest magnitude, taken as the largest uint32 pattern
    of the magnitudes (for these the same order as their values, and a NaN, whose pattern is
    larger than inf's, wins: one non-finite value makes its whole block's scale non-finite)."""
    magnitudes = np.abs(np.asarray(blocks, np.float32)).view(U32)
    return magnitudes.max(axis=-1).view(F32)


def inverse_of(scale):
    """fl(1/scale) for a normal, finite scale; else 0, which codes every value of the block as
    0 (a block below 2⁻¹²⁶ is flushed to zero; a non-finite one decodes to non-finite values)."""
    scale = np.asarray(scale, np.float32)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return np.where(scale >= _MIN_SCALE, _ONE_F / scale, _ZERO_F).astype(np.float32)


def code_unsigned(value, inverse):
    """The code of float32 ``value`` (≥ 0) in a block whose ``inverse_of`` scale is ``inverse``:
    ``|value · inverse|`` kept at most 1 (NaN → 1), then ``encode_unsigned``."""
    return encode_unsigned(_unit_bits(value, inverse))


def _unit_bits(value, inverse):
    """The uint32 bits of ``|value · inverse|`` kept at most 1 (NaN → 1)."""
    w = np.abs(np.asarray(value, np.float32) * inverse)
    return np.where(w <= _ONE_F, w, _ONE_F).astype(np.float32).view(U32)


def code_signed(value, inverse):
    """The code of float32 ``value`` in a block whose ``inverse_of`` scale is ``inverse``:
    ``value · inverse`` kept in [−1, 1] (NaN → 1), then ``encode_signed``."""
    w = np.asarray(value, np.float32) * inverse
    w = np.where(w <= _ONE_F, w, _ONE_F)
    return encode_signed(np.where(w >= -_ONE_F, w, -_ONE_F).astype(np.float32))


def code_unsigned_dithered(value, inverse):
    """``code_unsigned`` rounded with ``encode_unsigned_dithered``: how the step codes the square
    average (an EMA step of 1% is below half a code's spacing, and would round back)."""
    return encode_unsigned_dithered(_unit_bits(value, inverse))


CODERS = (code_unsigned, code_signed)  # per map: to nearest (conversions, fresh buffers)
STEP_CODERS = (code_unsigned_dithered, code_signed)  # per map: what a step writes


def quantise(x, kind, coders=CODERS):
    """``(codes uint8 [n], scales float32 [ceil(n / BLOCK)])`` of float32 ``x`` (flattened),
    coded by ``coders`` (``STEP_CODERS``: as a step codes)."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    n = x.size
    padded = np.zeros(-(-n // BLOCK) * BLOCK, np.float32)
    padded[:n] = x
    blocks = padded.reshape(-1, BLOCK)
    scales = block_scales(blocks)
    codes = coders[kind](blocks, inverse_of(scales)[:, None])
    return codes.reshape(-1)[:n].astype(np.uint8), scales


def dequantise(codes, scales, kind):
    """float32 [n]: each code's value times its block's scale."""
    codes = np.asarray(codes, dtype=np.uint8).reshape(-1)
    per_value = np.repeat(np.asarray(scales, np.float32), BLOCK)[:codes.size]
    return (TABLES[kind][codes] * per_value).astype(np.float32)


# What the Numba loops inline (registered there, as fastrms.cpu.halves registers rounding's).
ELEMENT_FUNCTIONS = (_below_normal, encode_unsigned, encode_signed)


def blocks_of(n):
    """How many scales a buffer of ``n`` values has."""
    return -(-int(n) // BLOCK)
