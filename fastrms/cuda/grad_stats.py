"""``inspect_grads`` on a GPU: ``grad_stats.cu``'s launches, planned here as pure functions of
integers and dtypes (``plan``: tested without a GPU, and replayed by the host emulation in
tests/native/), compiled by CuPy's ``RawModule`` with the step's options (``loader.OPTIONS``: no
fast math, ``--fmad=false``) lazily per device, and launched on the grads' framework's current
stream (``arrays.launch_stream``) with scratch memory from CuPy's pool on that stream: nothing
waits for the device.

``python -m fastrms.cuda.grad_stats PATH`` writes ``source()`` to PATH, for the host emulation's
CMake build (tests/native/grad_stats_host.cpp).
"""

import functools
import sys
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import rule_args
from .loader import OPTIONS, multiprocessors
from .plan import CXX_TYPES

# The order's constants (fastrms.grad_stats.CHUNK, LANES; grad_stats.cu's GRAD_CHUNK,
# GRAD_LANES): a test checks that they agree.
CHUNK, LANES = 4096, 32
MAX_BUFFERS = 64  # grad_stats.cu's MAX_BUFFERS: buffers per lane-sum launch
LOG_GROUP = 5  # grad_stats.cu's MAX_LOG_GROUP: each tree thread adds a group of 32
BLOCK = 256
BLOCKS_PER_SM = 8  # grid cap per multiprocessor; the threads loop past it (grid-stride)

# grad_stats.cu's GradTable, field for field, with C's layout.
TABLE = np.dtype([("address", np.int64, (MAX_BUFFERS,)), ("size", np.int64, (MAX_BUFFERS,)),
                  ("first", np.int64, (MAX_BUFFERS,)), ("start", np.int64, (MAX_BUFFERS + 1,)),
                  ("count", np.int32)], align=True)
CXX_TABLE = "fastrms::GradTable"
CHUNK_PARTIALS = "fastrms::grad_chunk_partials"
TREE_SUMS = "fastrms::grad_tree_sums"
FINISH = "fastrms::grad_finish"


def lane_sums_name(dtype):
    """The instance of ``grad_lane_sums`` for grads of ``dtype``."""
    return f"fastrms::grad_lane_sums<{CXX_TYPES[np.dtype(dtype)]}>"


def all_names():
    """Every kernel instance of grad_stats.cu, as RawModule's name_expressions want them."""
    return [lane_sums_name(d) for d in CXX_TYPES] + [CHUNK_PARTIALS, TREE_SUMS, FINISH]


@functools.lru_cache(maxsize=1)
def source():
    """What CuPy compiles: grad_stats.cu's text, then static_asserts that its GradTable has
    ``TABLE``'s layout (``rule_args.static_asserts``)."""
    text = resources.files(__package__).joinpath("grad_stats.cu").read_text(encoding="utf-8")
    lines = ["", "// GradTable laid out as fastrms/cuda/grad_stats.py packs it (generated).",
             rule_args._SAME, *rule_args.static_asserts(CXX_TABLE, TABLE)]
    return text + "\n".join(lines) + "\n"


class Launch(NamedTuple):
    name: str
    grid: int
    block: int
    args: tuple


def chunk_counts(sizes):
    """The chunks of each buffer, and the index of each buffer's first partial (list order)."""
    counts = [-(-int(n) // CHUNK) for n in sizes]
    firsts = np.cumsum([0] + counts).tolist()
    return counts, firsts


def tree_levels(chunks):
    """``[(n_in, n_out)]``: the levels of ``grad_tree_sums`` over ``chunks`` partials, each
    adding groups of 2^LOG_GROUP, until at most one group is left for ``grad_finish``."""
    levels, n = [], chunks
    while n > 1 << LOG_GROUP:
        levels.append((n, -(-n // (1 << LOG_GROUP))))
        n = levels[-1][1]
    return levels


def scratch_doubles(chunks):
    """The float64 scratch a call over ``chunks`` chunks needs: the lane sums, the partials and
    every tree level's sums, one after another."""
    return chunks * (LANES + 1) + sum(out for _, out in tree_levels(chunks))


def plan(dtypes, addresses, sizes, inv32, inv64, scratch, found_inf, norm, max_grid):
    """Every launch of one call, in stream order: buffers of ``dtypes`` at ``addresses`` with
    ``sizes`` elements (list order; empty ones launch nothing), the unscale factors, the address of
    ``scratch_doubles`` float64 of scratch and of the two results, and the grid cap."""
    counts, firsts = chunk_counts(sizes)
    chunks = firsts[-1]
    launches = []
    groups = {}
    for j, dtype in enumerate(dtypes):
        if counts[j]:
            groups.setdefault(np.dtype(dtype), []).append(j)
    lanes, partials = scratch, scratch + 8 * chunks * LANES
    for dtype, rows in groups.items():
        for batch in range(0, len(rows), MAX_BUFFERS):
            table = pack_table([(addresses[j], sizes[j], firsts[j], counts[j])
                                for j in rows[batch:batch + MAX_BUFFERS]])
            threads = int(table["start"][0, table["count"][0]]) * LANES
            launches.append(Launch(lane_sums_name(dtype), _grid(threads, max_grid), BLOCK,
                                   (table, np.float32(inv32), np.float64(inv64),
                                    np.uint64(lanes))))
    if chunks:
        launches.append(Launch(CHUNK_PARTIALS, _grid(chunks, max_grid), BLOCK,
                               (np.uint64(lanes), np.int64(chunks), np.uint64(partials))))
    values, n = partials, chunks
    for n_in, n_out in tree_levels(chunks):
        out = values + 8 * n_in  # each level's sums right after its inputs
        launches.append(Launch(TREE_SUMS, _grid(n_out, max_grid), BLOCK,
                               (np.uint64(values), np.int64(n_in), np.int32(LOG_GROUP),
                                np.uint64(out), np.int64(n_out))))
        values, n = out, n_out
    launches.append(Launch(FINISH, 1, 1, (np.uint64(values), np.int64(n),
                                          np.int32(max(n - 1, 0).bit_length()),
                                          np.uint64(found_inf), np.uint64(norm))))
    return launches


def pack_table(rows):
    """A ``GradTable`` (an array of one) of ``rows``: (address, size, first partial, chunks)."""
    table = np.zeros(1, TABLE)  # zeros: the padding bytes are defined too
    table["count"] = len(rows)
    start = 0
    for j, (address, size, first, count) in enumerate(rows):
        table["address"][0, j], table["size"][0, j], table["first"][0, j] = address, size, first
        table["start"][0, j] = start
        start += count
    table["start"][0, len(rows)] = start
    return table


def _grid(threads, max_grid):
    return max(1, min(-(-threads // BLOCK), max_grid))


@functools.lru_cache(maxsize=None)
def kernel(device_id, name):
    """The compiled ``name`` on device ``device_id`` (every instance compiles on first use)."""
    return _module(device_id).get_function(name)


@functools.lru_cache(maxsize=None)
def _module(device_id):
    import cupy

    with cupy.cuda.Device(device_id):
        return cupy.RawModule(code=source(), options=OPTIONS, name_expressions=all_names())


def inspect(arrays, inv32, inv64):
    """``(found_inf, norm)`` as 0-d CuPy arrays (float32, float64) over ``arrays`` (checked,
    C-contiguous CuPy arrays on one device), computed on their framework's current stream."""
    import cupy

    from . import arrays as cuda_arrays

    device = arrays[0].device.id
    with cupy.cuda.Device(device):
        stream = cuda_arrays.launch_stream(arrays[0])
    sizes = [a.size for a in arrays]
    with cupy.cuda.Device(device), stream:
        found_inf, norm = cupy.empty((), np.float32), cupy.empty((), np.float64)
        doubles = scratch_doubles(chunk_counts(sizes)[1][-1])
        scratch = cupy.empty(max(doubles, 1), np.float64)  # from the pool, on this stream
        launches = plan([a.dtype for a in arrays], [a.data.ptr for a in arrays], sizes, inv32,
                        inv64, scratch.data.ptr, found_inf.data.ptr, norm.data.ptr,
                        multiprocessors(device) * BLOCKS_PER_SM)
        for launch in launches:
            kernel(device, launch.name)((launch.grid,), (launch.block,), launch.args)
    return found_inf, norm


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(source(), encoding="utf-8")
