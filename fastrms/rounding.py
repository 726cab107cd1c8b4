"""Half-precision storage, once: float32 ↔ bfloat16 / float16 through their bit patterns, round to
nearest even or stochastically, and the counter-based generator that drives stochastic rounding
(docs/design.md §4).

Like ``fastrms.rule``, every function here is written once and runs two ways: on NumPy arrays of
unsigned integers (the reference, whole arrays at a time) and inlined into the Numba loops (one
element at a time; Numba has no 16-bit float arithmetic on the CPU). So they are branch-free
(``_select`` instead of ``if``) and every constant is typed (a Python int next to a uint64 would
promote Numba's arithmetic to float64). ``fastrms/cuda/rmsprop.cu`` spells the stochastic part
and the generator line by line in C++.

Conventions: float32 values travel as their uint32 bit patterns, half values as uint32 holding
the 16-bit pattern. A float16 NaN (either way) becomes a quiet NaN that keeps the sign and the
payload's upper bits, as x86's F16C instructions do (the Numba loops use them for float16);
CUDA's intrinsics give a canonical NaN instead, so tests compare where NaNs are, not their bits.

Stochastic rounding of x to a half format adds uniform random bits below the half format's last
kept bit and truncates: x rounds away from zero with probability equal to the fraction of the gap
it covers, so the result is unbiased. The random bits of element ``i`` at a step come from
``random32(step_key(seed, step), counter)``, ``counter = offset + i``: the same on every backend,
thread count and launch configuration.
"""

import numpy as np

U32, U64 = np.uint32, np.uint64

# Storage formats of a param buffer (the kernels' PARAM_FORMAT), and the rounding modes.
FLOAT, BFLOAT16, FLOAT16 = 0, 1, 2
NEAREST, STOCHASTIC = 0, 1
ROUNDINGS = {"nearest": NEAREST, "stochastic": STOCHASTIC}
TENSOR_STRIDE = 1 << 40  # counter offset between tensors of a group: position × 2⁴⁰ (see offset_of)

_SIGN, _ABS, _INF = U32(0x80000000), U32(0x7FFFFFFF), U32(0x7F800000)
_ZERO, _ONE = U32(0), U32(1)
_GOLDEN = U64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = U64(0xBF58476D1CE4E5B9), U64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32 = U64(30), U64(27), U64(31), U64(32)


def _select(cond, a, b):
    """``a`` where ``cond`` else ``b``, on uint32 values, without a branch."""
    mask = _ZERO - U32(cond)
    return (a & mask) | (b & ~mask)


def counters(offsets, n):
    """uint64 ``[n]``: the counter of element 0 of each of ``n`` buffer sets from
    ``Extras.offsets`` (one int per set; a single int only for one set, or 0 for all)."""
    if isinstance(offsets, (int, np.integer)):
        if offsets and n != 1:
            raise ValueError(f"one counter offset for {n} tensors: pass one per tensor")
        offsets = [offsets] * n
    if len(offsets) != n:
        raise ValueError(f"{len(offsets)} counter offsets for {n} tensors")
    return np.array([int(o) for o in offsets], np.uint64)


def offset_of(position, start=0):
    """The counter of element ``start`` of the tensor at ``position`` in its param group: what
    ``rmsprop_update(offset=)`` takes for that tensor (or a shard of it from ``start`` on)."""
    return int(position) * TENSOR_STRIDE + int(start)


# ---------------------------------------------------------------------------------------------
# The generator: splitmix64's finaliser over a 64-bit counter (Steele, Lea & Flood 2014).

def mix64(z):
    """splitmix64's finaliser: a bijection of uint64 whose outputs pass BigCrush as a counter runs."""
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


def step_key(seed, step):
    """The uint64 key of one step (host side, once per step): seed and step mixed together."""
    with np.errstate(over="ignore"):
        return mix64(U64(int(seed) % (1 << 64)) ^ mix64(U64(int(step) % (1 << 64)) * _GOLDEN))


def random32(key, counter):
    """Uniform uint32 random bits for element ``counter`` (uint64) under ``key``."""
    return U32(mix64(key + counter * _GOLDEN) >> _S32)


# ---------------------------------------------------------------------------------------------
# Widening (exact).

def bf16_to_f32(h):
    """bfloat16 bits → float32 bits."""
    return U32(h) << U32(16)


def f16_to_f32(h):
    """float16 bits → float32 bits (subnormals normalised, inf kept, NaN quieted)."""
    h = U32(h)
    sign = (h & U32(0x8000)) << U32(16)
    e = (h >> U32(10)) & U32(0x1F)
    m = h & U32(0x3FF)
    normal = ((e + U32(112)) << U32(23)) | (m << U32(13))
    # inf; NaN quieted with its payload kept (as F16C's vcvtph2ps, which the Numba loops use)
    special = _INF | (m << U32(13)) | _select(m == _ZERO, _ZERO, U32(0x400000))
    # A subnormal m·2⁻²⁴: normalise by the position of m's top bit.
    top = _top_bit(m)  # 0..9 (m > 0)
    sub = ((top + U32(103)) << U32(23)) | ((m << (U32(23) - top)) & U32(0x7FFFFF))
    sub = _select(m == _ZERO, _ZERO, sub)
    out = _select(e == U32(31), special, _select(e == _ZERO, sub, normal))
    return sign | out


def _top_bit(m):
    """The index of the highest set bit of ``m`` (< 2¹⁰), 0 for 0; branch-free."""
    t = _ZERO
    for shift in (U32(8), U32(4), U32(2), U32(1)):
        up = U32((m >> (t + shift)) != _ZERO)
        t = t + up * shift
    return t


# ---------------------------------------------------------------------------------------------
# Narrowing, to nearest even.

def f32_to_bf16(b):
    """float32 bits → bfloat16 bits, nearest even."""
    b = U32(b)
    nan = (b & _ABS) > _INF
    rounded = (b + U32(0x7FFF) + ((b >> U32(16)) & _ONE)) >> U32(16)
    return _select(nan, (b >> U32(16)) | U32(0x40), rounded)


def f32_to_f16(b):
    """float32 bits → float16 bits, nearest even (overflow to inf, subnormals, NaN quieted)."""
    b = U32(b)
    sign = (b >> U32(16)) & U32(0x8000)
    a = b & _ABS
    e = a >> U32(23)
    # Normal results: rebias, round on the 13 dropped bits (a carry into the exponent is right,
    # and one past the largest exponent gives inf).
    odd = (a >> U32(13)) & _ONE
    normal = (a - U32(112 << 23) + U32(0xFFF) + odd) >> U32(13)
    normal = _select(normal > U32(0x7C00), U32(0x7C00), normal)
    # Subnormal results (e ≤ 112): m·2^(e−150) in units of 2⁻²⁴ is m >> (126 − e).
    m = (a & U32(0x7FFFFF)) | U32(0x800000)
    shift = _min32(U32(126) - _min32(e, U32(126)), U32(31))
    kept = m >> shift
    rest = m & ((_ONE << shift) - _ONE)
    half = (_ONE << shift) >> _ONE  # (every shift stays below 32: Numba's would be undefined)
    up = U32((rest > half) | ((rest == half) & ((kept & _ONE) == _ONE)))
    sub = _select(e < U32(102), _ZERO, kept + up)
    nan = (U32(0x7E00) | (a >> U32(13))) & U32(0x7FFF)
    out = _select(e < U32(113), sub, normal)
    out = _select(a >= U32(0x47800000), U32(0x7C00), out)  # at or past 2¹⁶: inf
    out = _select(a > _INF, nan, out)
    return sign | out


def _min32(a, b):
    return _select(a < b, a, b)


# ---------------------------------------------------------------------------------------------
# Stochastic rounding: random bits added below the kept bits, then an exact narrowing.

def stochastic_f32(b, r, fmt):
    """float32 bits ``b`` moved, with uint32 random bits ``r``, to a value that ``fmt``
    (BFLOAT16 or FLOAT16) represents exactly: nearest-even narrowing then only drops zeros.
    NaN and inf are kept."""
    b = U32(b)
    sign = b & _SIGN
    a = b & _ABS
    if fmt == BFLOAT16:
        dropped = U32(16)
    else:  # float16: 13 bits for normal results; below 2⁻¹⁴ the spacing is 2⁻²⁴ (126 − e bits)
        e = a >> U32(23)
        dropped = _min32(U32(126) - _min32(_select(e > U32(103), e, U32(103)), U32(113)),
                         U32(23))
    mask = (_ONE << dropped) - _ONE
    moved = (a + (r >> (U32(32) - dropped))) & ~mask
    if fmt == FLOAT16:
        # Below 2⁻²⁴ (e < 103) the implicit bit is dropped too: round up to 2⁻²⁴ with
        # probability a/2⁻²⁴, in integers: r < m·2^(e−94).
        e = a >> U32(23)
        m = (a & U32(0x7FFFFF)) | _select(e == _ZERO, _ZERO, U32(0x800000))
        lshift = _min32(_select(e > U32(94), e - U32(94), _ZERO), U32(8))
        rshift = _min32(_select(e > U32(94), _ZERO, U32(94) - e), U32(31))
        threshold = (m << lshift) >> rshift
        tiny = _select(r < threshold, U32(0x33800000), _ZERO)  # 2⁻²⁴ or 0
        moved = _select(e < U32(103), tiny, moved)
    return sign | _select(a >= _INF, a, moved)


# What the Numba loops inline (fastrms/cpu/kernels.py registers each as jitable).
ELEMENT_FUNCTIONS = (_select, _min32, _top_bit, mix64, random32, bf16_to_f32, f16_to_f32,
                     f32_to_bf16, f32_to_f16, stochastic_f32)
