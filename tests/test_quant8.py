"""The 8-bit state maps and blockwise quantisation (fastrms.quant8): every code, the nearest
code for every value tried (ties to even), the dithered code (a neighbour, unbiased), the error
bounds per block, Numba equal to NumPy."""

import numpy as np
import pytest

from fastrms import quant8
from fastrms.quant8 import BLOCK, SIGNED, TABLES, TOP_CODE, U32, UNSIGNED

ENCODE = {UNSIGNED: quant8.encode_unsigned, SIGNED: quant8.encode_signed}


def encode(kind, v):
    """The codes of float32 ``v`` (the unsigned map takes their bits)."""
    v = np.asarray(v, np.float32)
    return ENCODE[kind](v.view(np.uint32) if kind == UNSIGNED else v)


def values(kind, n=1 << 20, seed=0):
    """Uniform values, log-uniform ones over the unsigned map's range and below it, every
    midpoint between two codes (a tie) and its float32 neighbours, and the codes' own values."""
    rng = np.random.default_rng(seed)
    table = TABLES[kind][:TOP_CODE[kind] + 1].astype(np.float64)
    mid = ((table[1:] + table[:-1]) / 2).astype(np.float32)
    parts = [rng.random(n), 2.0 ** rng.uniform(-40, 0, n), mid, np.nextafter(mid, 2),
             np.nextafter(mid, -2), table]
    if kind == SIGNED:
        parts += [-p for p in parts]
    v = np.concatenate([np.asarray(p, np.float32) for p in parts])
    return v[np.abs(v) <= 1]


def nearest(v, kind):
    """The nearest code by search in float64, ties to the even code."""
    table = TABLES[kind][:TOP_CODE[kind] + 1].astype(np.float64)
    v = v.astype(np.float64)
    hi = np.clip(np.searchsorted(table, v), 0, table.size - 1)
    lo = np.clip(hi - 1, 0, table.size - 1)
    below, above = np.abs(v - table[lo]), np.abs(table[hi] - v)
    return np.where(below < above, lo, np.where(above < below, hi, np.where(lo % 2 == 0, lo, hi)))


@pytest.mark.parametrize("kind", [UNSIGNED, SIGNED])
def test_every_code_decodes_and_encodes_back(kind):
    codes = np.arange(TOP_CODE[kind] + 1, dtype=np.uint32)
    assert np.all(np.diff(TABLES[kind][codes]) > 0)  # strictly increasing
    assert TABLES[kind][TOP_CODE[kind]] == 1.0
    assert np.array_equal(encode(kind, TABLES[kind][codes]), codes)


def test_unsigned_encoding_picks_the_nearest_code_ties_to_even():
    v = values(UNSIGNED)
    assert np.array_equal(encode(UNSIGNED, v), nearest(v, UNSIGNED))


def test_signed_encoding_picks_the_nearest_code_but_at_near_ties():
    """rint(fl(127·v)): where it differs from the nearest code, v lies within 2⁻²¹ of the
    midpoint (the product's rounding, and ties to an even integer, not an even code)."""
    v = values(SIGNED)
    codes, best = encode(SIGNED, v), nearest(v, SIGNED)
    table = TABLES[SIGNED].astype(np.float64)
    off = codes != best
    assert off.mean() < 1e-3
    gap = np.abs(np.abs(v[off] - table[codes[off]]) - np.abs(v[off] - table[best[off]]))
    assert np.all(gap <= 2.0 ** -21)


def test_the_tables_are_what_float32_arithmetic_gives():
    """So that a kernel may decode without the table: the unsigned values from their bits (powers
    of two times 1 + M/8), the signed ones as one float32 multiply, (c − 127) · fl(1/127)."""
    codes = np.arange(256)
    signed = (codes.astype(np.float32) - np.float32(127)) * (np.float32(1) / np.float32(127))
    assert np.array_equal(signed, TABLES[SIGNED])
    exponent, mantissa = codes >> 3, codes & 7
    unsigned = np.where(exponent > 0, np.ldexp(1 + mantissa / 8, exponent - 31),
                        np.ldexp(mantissa, -33))
    assert np.array_equal(unsigned.astype(np.float32), TABLES[UNSIGNED])


def test_the_unsigned_map_spans_31_binades_at_8_codes_each():
    table = TABLES[UNSIGNED]
    assert table[8] == 2.0 ** -30 and table[1] == 2.0 ** -33
    steps = table[9:249] / table[8:248] - 1  # relative step between neighbours
    assert steps.max() == pytest.approx(1 / 8) and steps.min() == pytest.approx(1 / 15)


@pytest.mark.parametrize("kind", [UNSIGNED, SIGNED])
def test_blockwise_quantisation_bounds_each_error_by_half_a_step(kind):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(10 * BLOCK + 37).astype(np.float32)  # a partial last block
    x = x * x if kind == UNSIGNED else x
    x[BLOCK:2 * BLOCK] = 0  # a block of zeros: scale 0
    codes, scales = quant8.quantise(x, kind)
    assert codes.dtype == np.uint8 and codes.shape == x.shape
    assert scales.dtype == np.float32 and scales.size == quant8.blocks_of(x.size) == 11
    padded = np.zeros(11 * BLOCK, np.float32)
    padded[:x.size] = np.abs(x)
    assert np.array_equal(scales, padded.reshape(11, BLOCK).max(axis=1))
    assert scales[1] == 0 and not codes[BLOCK:2 * BLOCK].any() if kind == UNSIGNED \
        else np.all(codes[BLOCK:2 * BLOCK] == 127)
    y = quant8.dequantise(codes, scales, kind)
    scale = np.repeat(scales, BLOCK)[:x.size].astype(np.float64)
    error = np.abs(y.astype(np.float64) - x)
    if kind == SIGNED:  # half of 1/127 of the scale, and the two roundings of the decode
        assert np.all(error <= scale * (0.5 / 127 + 2.0 ** -23))
    else:  # half a step: 1/16 relative above 2^-30 of the scale, 2^-34 of the scale below
        assert np.all(error <= np.maximum(x / 16, scale * 2.0 ** -34) * (1 + 2.0 ** -20))
    assert np.array_equal(quant8.quantise(y, kind)[0], codes)  # decoded values code back


def test_dithered_unsigned_encoding_rounds_to_a_neighbour_without_bias():
    """The step's coding of the square average (``encode_unsigned_dithered``): one of the two
    codes around the value, a code's own value kept, 0 below 2⁻⁴¹, 1 kept; and unbiased: 4096
    values a fraction f of the way up each of 40 code gaps (normal and below 2⁻³⁰), jittered in
    their last bits, round up a fraction f of the time (4σ = 0.03), where to nearest none
    (f < ½) or all (f > ½) would."""
    dithered = quant8.encode_unsigned_dithered
    v = values(UNSIGNED)
    near = nearest(v, UNSIGNED)
    codes = dithered(v.view(np.uint32))
    assert np.all(np.abs(codes.astype(np.int64) - near) <= 1)
    table = TABLES[UNSIGNED].astype(np.float64)
    assert np.array_equal(dithered(TABLES[UNSIGNED][:249].view(np.uint32)), np.arange(249))
    tiny = np.float32([0, 1e-45, 2.0 ** -42, 2.0 ** -41 * 0.999])
    assert np.array_equal(dithered(tiny.view(np.uint32)), np.zeros(4))
    jitter = np.arange(4096, dtype=np.uint32)
    for c in list(range(0, 8, 2)) + list(range(8, 248, 7)):
        for f in (0.1, 0.5, 0.9):
            at = np.float32(table[c] + f * (table[c + 1] - table[c]))
            bits = at.view(np.uint32) - U32(2048) + jitter  # ±2048 ulps: f moves < 0.01
            up = (dithered(bits) == c + 1).mean()
            assert np.all(np.isin(dithered(bits), [c, c + 1]))
            assert abs(up - f) < 0.03, (c, f, up)


@pytest.mark.parametrize("kind, function", [
    (UNSIGNED, quant8.encode_unsigned), (SIGNED, quant8.encode_signed)])
def test_numba_encodes_as_numpy(kind, function):
    """(The step's dithered coding is LLVM IR in the kernel: tests/test_eight_bit.py.)"""
    numba = pytest.importorskip("numba")
    from numba.extending import register_jitable

    import fastrms.cpu.halves  # noqa: F401 - registers fastrms.rounding's element functions
    for f in quant8.ELEMENT_FUNCTIONS:
        register_jitable(inline="always")(f)
    element = numba.njit(function)

    @numba.njit(error_model="numpy")
    def each(v, out):
        for i in range(v.size):
            out[i] = element(v[i])

    v = values(kind, n=1 << 16)
    given = v.view(np.uint32) if kind == UNSIGNED else v
    out = np.empty(v.size, np.uint32)
    each(given, out)
    assert np.array_equal(out, function(given))
