"""``inspect_grads`` on the CPU: the chunk partials of the grad statistics, in Numba
(``fastrms.grad_stats`` has the order and the reference; docs/grad-stats.md).

One compiled loop per read format and kind of loop (serial, parallel), each its own Python function
with its own ``__qualname__`` (numba issue 6845). A loop takes one dtype's buffers as a pointer
table (``fastrms.cpu.multi``'s views), walks their chunks of ``CHUNK`` elements, one prange item
per chunk in the parallel loop, and writes each chunk's partial at its place in the list's order:
which thread computes a chunk changes no bit.

The 32 lane sums of a chunk are one LLVM vector, ``<32 x double>`` (four AVX-512 registers), kept
in registers across the chunk: each row of 32 elements is loaded as one vector, widened, unscaled,
squared and added lane by lane (``_add_row``), and the lanes combine by the fixed tree with
shuffles (``_lane_tree``): Numba disables LLVM's SLP vectoriser, and its loop vectoriser ran
this at half the speed (docs/grad-stats.md). Each operation is IEEE and rounded once (v·v + acc
is one fused multiply-add for float32 and half grads, whose squares are exact in float64), so the
partials equal the NumPy reference's bit for bit. Rows are prefetched ``PREFETCH`` bytes ahead.
bfloat16 widens by a shift of its bits, float16 by LLVM's exact ``fpext`` (F16C's ``vcvtph2ps``).
"""

import functools

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from .backend import _run
from .jit import compile_loop
from .multi import _view

# The order's constants (fastrms.grad_stats.CHUNK, LANES; a test checks that they agree).
CHUNK, LANES = 4096, 32
# The formats a loop reads: half buffers travel as their uint16 bits.
FLOAT32, FLOAT64, FLOAT16, BFLOAT16, SAME_TRAFFIC = range(5)
READ_DTYPES = {FLOAT32: np.float32, FLOAT64: np.float64, FLOAT16: np.uint16, BFLOAT16: np.uint16,
               SAME_TRAFFIC: np.float32}
ADDRESS, SIZE, FIRST = range(3)  # the columns of a pointer table
PREFETCH = 4096  # bytes ahead that a row's read asks the cache for


def format_of(dtype):
    """The read format of a grad dtype (NumPy's float16, float32, float64 or bfloat16)."""
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return FLOAT32
    if dtype == np.float64:
        return FLOAT64
    if dtype == np.float16:
        return FLOAT16
    return BFLOAT16


# ---------------------------------------------------------------------------------------------
# The lane vector: a Numba type whose value is one LLVM vector of LANES float64 (or float32, for
# the same-traffic loop's plain sum).

class Lanes(types.Type):
    def __init__(self, dtype):
        self.dtype = dtype
        super().__init__(name=f"Lanes{LANES}({dtype})")


@register_model(Lanes)
class _LanesModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = ir.DoubleType() if fe_type.dtype == types.float64 else ir.FloatType()
        super().__init__(dmm, fe_type, ir.VectorType(element, LANES))


F64_LANES, F32_LANES = Lanes(types.float64), Lanes(types.float32)
_I32 = ir.IntType(32)


def _vector(value_type, builder, scalar):
    """``scalar`` in every lane."""
    vector = ir.VectorType(value_type, LANES)
    one = builder.insert_element(ir.Constant(vector, ir.Undefined), scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, ir.Constant(vector, ir.Undefined),
                                  ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))


def _load_row(context, builder, array_type, array, start, element):
    """Elements ``start`` .. ``start + LANES - 1`` of ``array`` as one vector of ``element``."""
    data = context.make_array(array_type)(context, builder, array).data
    row_type = ir.VectorType(element, LANES).as_pointer()
    element_pointer = builder.gep(data, [start])
    # Prefetch PREFETCH bytes ahead (past a chunk's end too: a hint never faults).
    ahead = builder.gep(builder.bitcast(element_pointer, ir.IntType(8).as_pointer()),
                        [ir.Constant(ir.IntType(64), PREFETCH)])
    prefetch = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), _I32, _I32,
                                                        _I32]), "llvm.prefetch.p0i8")
    builder.call(prefetch, [ahead, ir.Constant(_I32, 0), ir.Constant(_I32, 3),
                            ir.Constant(_I32, 1)])
    pointer = builder.bitcast(element_pointer, row_type)
    return builder.load(pointer, align=array_type.dtype.bitwidth // 8)


def _zeros_intrinsic(lanes):
    """The intrinsic that makes a vector of type ``lanes`` with +0.0 in every lane."""

    @intrinsic
    def zeros(typingctx):
        def codegen(context, builder, signature, args):
            return ir.Constant(context.get_value_type(lanes), None)

        return lanes(), codegen

    return zeros


_zeros64, _zeros32 = _zeros_intrinsic(F64_LANES), _zeros_intrinsic(F32_LANES)


def _add_row_intrinsic(fmt):
    """The intrinsic ``acc + q(row)`` for read format ``fmt``: ``row`` is elements ``start`` ..
    ``start + LANES - 1`` of ``g``, of which the first ``count`` are added (the rest add +0.0,
    which changes no bit; they must still be readable)."""

    @intrinsic
    def add_row(typingctx, acc, g, start, inv, count):
        def codegen(context, builder, signature, args):
            acc, g, start, inv, count = args
            f32, f64 = ir.FloatType(), ir.DoubleType()
            g_type = signature.args[1]
            if fmt == SAME_TRAFFIC:  # the roofline: a plain float32 sum
                return builder.fadd(acc, _load_row(context, builder, g_type, g, start, f32))
            if fmt == FLOAT64:
                v = builder.fmul(_load_row(context, builder, g_type, g, start, f64),
                                 _vector(f64, builder, inv))
            else:
                if fmt == FLOAT32:
                    x = _load_row(context, builder, g_type, g, start, f32)
                else:
                    bits = _load_row(context, builder, g_type, g, start, ir.IntType(16))
                    if fmt == BFLOAT16:  # the bits, 16 places up
                        wide = builder.zext(bits, ir.VectorType(_I32, LANES))
                        wide = builder.shl(wide, ir.Constant(ir.VectorType(_I32, LANES),
                                                             [16] * LANES))
                        x = builder.bitcast(wide, ir.VectorType(f32, LANES))
                    else:  # float16: exact
                        half = builder.bitcast(bits, ir.VectorType(ir.HalfType(), LANES))
                        x = builder.fpext(half, ir.VectorType(f32, LANES))
                v = builder.fmul(x, _vector(f32, builder, inv))  # float32, rounded once
                v = builder.fpext(v, ir.VectorType(f64, LANES))  # exact
            lane = ir.Constant(ir.VectorType(ir.IntType(64), LANES), list(range(LANES)))
            inside = builder.icmp_signed("<", lane, _vector(ir.IntType(64), builder, count))
            v = builder.select(inside, v, ir.Constant(ir.VectorType(f64, LANES), None))
            if fmt != FLOAT64:
                # v is a float32 widened: v·v is exact in float64, so the fused multiply-add
                # rounds once, as the reference's multiply-then-add does (and saves a step).
                fma = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(v.type, [v.type] * 3), f"llvm.fma.v{LANES}f64")
                return builder.call(fma, [v, v, acc])
            return builder.fadd(acc, builder.fmul(v, v))

        return acc(acc, g, types.intp, inv, types.intp), codegen

    return add_row


_add_float32, _add_float64, _add_float16, _add_bfloat16, _add_words = (
    _add_row_intrinsic(fmt) for fmt in (FLOAT32, FLOAT64, FLOAT16, BFLOAT16, SAME_TRAFFIC))


@intrinsic
def _lane_tree(typingctx, acc):
    """The lanes combined by the fixed tree: lane[l] += lane[l + w] for l < w, w = 16, ..., 1;
    lane 0, as a float64."""

    def codegen(context, builder, signature, args):
        (v,) = args
        w = LANES // 2
        while w >= 1:
            low = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, w), list(range(w))))
            high = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, w),
                                                            list(range(w, 2 * w))))
            v = builder.fadd(low, high)
            w //= 2
        total = builder.extract_element(v, ir.Constant(_I32, 0))
        if acc.dtype != types.float64:
            total = builder.fpext(total, ir.DoubleType())
        return total

    return types.float64(acc), codegen


# ---------------------------------------------------------------------------------------------
# The loops. ``fmt`` is a constant of each compiled loop (a closure variable), inlined into the
# functions below: Numba prunes the other formats' branches before typing.

@nb.njit(inline="always", error_model="numpy")
def _add_row(acc, g, start, inv, count, fmt):
    if fmt == FLOAT32:
        return _add_float32(acc, g, start, inv, count)
    if fmt == FLOAT64:
        return _add_float64(acc, g, start, inv, count)
    if fmt == FLOAT16:
        return _add_float16(acc, g, start, inv, count)
    return _add_bfloat16(acc, g, start, inv, count)


@nb.njit(inline="always", error_model="numpy")
def _chunk(table, starts, partials, inv, like, tail, c, fmt):
    """Chunk ``c`` of the loop's chunks (``partials_kernel``): its partial, written in place."""
    j = np.searchsorted(starts, c, side="right") - 1
    k = c - starts[j]
    begin = k * CHUNK
    n = min(table[j, SIZE] - begin, CHUNK)
    g = _view(table[j, ADDRESS] + begin * like.itemsize, n, like)
    full = n - n % LANES
    if fmt == SAME_TRAFFIC:
        acc32 = _zeros32()
        for i in range(0, full, LANES):
            acc32 = _add_words(acc32, g, i, inv, LANES)
        partials[table[j, FIRST] + k] = _lane_tree(acc32)
        return
    acc = _zeros64()
    for i in range(0, full, LANES):
        acc = _add_row(acc, g, i, inv, LANES, fmt)
    if full < n:  # the last, partial row: copied into a whole row, its other lanes add nothing
        row = tail[j]
        row[:n - full] = g[full:]
        acc = _add_row(acc, row, 0, inv, n - full, fmt)
    partials[table[j, FIRST] + k] = _lane_tree(acc)


@functools.lru_cache(maxsize=None)
def partials_kernel(fmt, parallel):
    """The loop ``f(table, starts, partials, inv, like, tail)`` for read format ``fmt``.

    ``table`` (int64 ``[m, 3]``): address, element count and first partial of each buffer of the
    format (empty ones left out); ``starts`` (int64 ``[m + 1]``): the running count of their chunks.
    It writes ``partials[first + k]`` for chunk ``k`` of each buffer. ``inv``: the unscale factor
    (float32, or float64 for float64 grads); ``like``: an empty array of the read dtype;
    ``tail``: ``m`` rows of ``LANES`` zeros of that dtype, where each buffer's last partial row
    is copied to be read as a whole row. ``SAME_TRAFFIC``: the roofline (``same_traffic``).
    """
    if parallel:
        def loop(table, starts, partials, inv, like, tail):
            for c in nb.prange(starts[-1]):
                _chunk(table, starts, partials, inv, like, tail, c, fmt)
    else:
        def loop(table, starts, partials, inv, like, tail):
            for c in range(starts[-1]):
                _chunk(table, starts, partials, inv, like, tail, c, fmt)

    kind = "parallel" if parallel else "serial"
    loop.__name__ = loop.__qualname__ = f"grad_partials_{kind}_{fmt}"
    return compile_loop(loop, parallel)


def chunk_partials(arrays, inv32, inv64, threads=None):
    """The partial of every chunk of ``arrays`` (C-contiguous NumPy arrays of float16, bfloat16,
    float32 or float64), in list order and chunk order, as float64: one compiled call per read
    format, serial below ``fastrms.cpu.backend.PARALLEL_FROM`` elements (per format), else on
    ``threads`` threads (``fastrms.threads.resolve``)."""
    counts = [-(-a.size // CHUNK) for a in arrays]
    firsts = np.cumsum([0] + counts)
    partials = np.empty(int(firsts[-1]), dtype=np.float64)
    groups = {}
    for j, a in enumerate(arrays):
        if a.size:
            groups.setdefault(format_of(a.dtype), []).append(j)
    for fmt, rows in groups.items():
        inv = inv64 if fmt == FLOAT64 else inv32
        run_format(fmt, [arrays[j] for j in rows], firsts[rows], partials, inv, threads)
    return partials


def run_format(fmt, arrays, firsts, partials, inv, threads=None):
    """One compiled call over ``arrays`` (non-empty, all of read format ``fmt``), writing their
    chunk partials from ``partials[firsts[j]]`` on."""
    table = np.array([[a.__array_interface__["data"][0], a.size, first]
                      for a, first in zip(arrays, firsts)], dtype=np.int64).reshape(-1, 3)
    starts = np.cumsum([0] + [-(-a.size // CHUNK) for a in arrays]).astype(np.int64)
    dtype = READ_DTYPES[fmt]
    args = (table, starts, partials, inv, _empty(dtype), np.zeros((len(arrays), LANES), dtype))
    _run(partials_kernel, fmt, int(table[:, SIZE].sum()), threads, args, args)
    return partials


def same_traffic(array, threads=None):
    """The roofline of ``chunk_partials`` (docs/grad-stats.md): the same bytes read by the same
    loop, as a plain float32 sum in 32 lanes (any dtype, its bytes as float32: a whole number of
    rows of 32). Returns the chunk sums."""
    words = array.reshape(-1).view(np.float32)
    if words.size % LANES:
        raise ValueError(f"same_traffic reads whole rows of {LANES} float32, got {words.size}")
    counts = -(-words.size // CHUNK)
    partials = np.empty(counts, dtype=np.float64)
    return run_format(SAME_TRAFFIC, [words], [0], partials, np.float32(1), threads)


@functools.lru_cache(maxsize=None)
def _empty(dtype):
    """An empty array of ``dtype``: it tells a loop which dtype to read."""
    return np.empty(0, dtype=dtype)
