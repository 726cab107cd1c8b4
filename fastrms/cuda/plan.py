"""Launch planning for ``rmsprop.cu``'s kernels: pure functions of integers and dtypes.

Instance names, the 128-bit span of each buffer set, the launch geometry, the multi-tensor chunk
tables and the argument tuples (the rule and the step's ``Extras`` packed by ``rule_args``). Nothing
here touches a device: the host-emulation tests launch the emulated kernel with exactly what these
functions produce. ``loader`` compiles; ``backend`` launches.
"""

import functools
from typing import NamedTuple

import numpy as np

from .._buffers import PLAIN
from ..dtypes import bfloat16_dtype, state_dtype
from . import rule_args

BLOCK = 256  # threads per block: rmsprop.cu's BLOCK (its __launch_bounds__)
# Grid cap per multiprocessor: one resident wave. Every instance takes at most 64 registers per
# thread (tests/test_cuda_build.py checks), so 4 blocks of 256 fit in 64K registers; with 3-6
# 128-bit loads per thread in flight that is ~50-100 KB per SM, more than bandwidth needs. A larger
# grid would run its last blocks in a thin second wave; instead the threads loop (grid-stride).
BLOCKS_PER_SM = 4
VECTOR_BYTES = 16  # one 128-bit load/store per buffer and thread-iteration

# Param dtype -> the C++ type that instantiates the kernel (the compute and state type follows).
CXX_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double",
             np.dtype(np.float16): "__half"}
if bfloat16_dtype() is not None:
    CXX_TYPES[bfloat16_dtype()] = "__nv_bfloat16"
DTYPES = frozenset(CXX_TYPES)


# The kernel's compute and state dtype: float32 for half params, else the params' own.
compute_dtype = state_dtype


def kernel_name(param_dtype, has_momentum_buffer, has_grad_avg):
    """The C++ name of one instance, as RawModule's name_expressions want it."""
    flags = ", ".join("true" if f else "false" for f in (has_momentum_buffer, has_grad_avg))
    return f"fastrms::rmsprop_kernel<{CXX_TYPES[np.dtype(param_dtype)]}, {flags}>"


def multi_kernel_name(param_dtype, has_momentum_buffer, has_grad_avg):
    """The C++ name of one multi-tensor instance (``rmsprop_multi_kernel``)."""
    return kernel_name(param_dtype, has_momentum_buffer, has_grad_avg).replace(
        "rmsprop_kernel<", "rmsprop_multi_kernel<", 1)


def all_kernel_names():
    """Every single-buffer instance (4 dtypes x momentum buffer x grad_avg)."""
    return [kernel_name(d, m, a) for d in CXX_TYPES for m in (False, True) for a in (False, True)]


def all_multi_kernel_names():
    """Every multi-tensor instance, in ``all_kernel_names``'s order."""
    return [n.replace("rmsprop_kernel<", "rmsprop_multi_kernel<", 1) for n in all_kernel_names()]


def vector_width(param_dtype):
    """Elements per 128-bit step: one 16-byte word of params (rmsprop.cu's Vector<P>::width)."""
    return VECTOR_BYTES // np.dtype(param_dtype).itemsize


def vector_span(addresses, itemsizes, begin, end, width):
    """``(vec_begin, vec_end)``: the elements of ``[begin, end)`` that take the 128-bit path.

    ``addresses[i]`` is buffer i's address of element 0 and ``itemsizes[i]`` its element size.
    The span starts at the first index where every buffer is 16-byte aligned (a head of fewer than
    ``width`` elements goes scalar) and holds whole vectors. Buffers never aligned together (views
    at different misalignments) get the empty span ``(end, end)``: all scalar."""
    for head in range(min(width, end - begin)):
        start = begin + head
        if all((address + start * size) % VECTOR_BYTES == 0
               for address, size in zip(addresses, itemsizes)):
            return start, start + (end - start) // width * width
    return end, end


def launch_config(n_elements, width, multiprocessors):
    """``(grid, block)`` for a grid-stride launch over ``n_elements`` (``n_elements`` >= 1).

    One thread per vector of work, capped at ``BLOCKS_PER_SM`` blocks per multiprocessor: a
    grid-stride loop covers the rest, so the grid stays small for 2^31+ elements.
    """
    threads = -(-n_elements // width)
    grid = min(-(-threads // BLOCK), BLOCKS_PER_SM * multiprocessors)
    return max(grid, 1), BLOCK


def kernel_args(addresses, begin, vec_begin, vec_end, end, rule, lr_device=0, offset=0,
                amp_device=0):
    """``rmsprop_kernel``'s argument tuple, each value typed as its parameter in ``rmsprop.cu``.

    ``addresses``: param, grad, square_avg, momentum_buffer, grad_avg, master_param (0: absent);
    the elements ``[begin, end)`` with their 128-bit span; ``rule``: the packed ``RuleArgs`` (by
    value, as CuPy passes a NumPy array of size one); ``lr_device``: the device address of a
    float64 lr read in place of the rule's (0: none); ``offset``: the stochastic-rounding counter
    of element 0; ``amp_device``: ``Extras.device_amp``."""
    if len(addresses) != 6:
        raise ValueError(f"expected 6 addresses, got {len(addresses)}")
    return (
        *(np.uint64(a) for a in addresses),  # pointers: 8 bytes each
        *(np.int64(i) for i in (begin, vec_begin, vec_end, end)),  # long long
        np.uint64(offset), rule,  # unsigned long long offset, RuleArgs<T>
        np.uint64(lr_device), np.uint64(amp_device),  # const double*, const float*
    )


class Launch(NamedTuple):
    name: str  # the kernel instance (kernel_name)
    grid: int
    block: int
    args: tuple  # kernel_args


def plan(param_dtype, addresses, end, rule, step, multiprocessors, begin=0, lr_device=0,
         extras=PLAIN):
    """Everything about one step's launch but the launch itself.

    ``addresses``: where element 0 of param, grad, square_avg, momentum_buffer, grad_avg and
    master_param lives (``None`` where absent); the step covers elements ``[begin, end)``;
    ``lr_device``: as for ``kernel_args``; ``extras``: the step's ``Extras`` (``offsets``: one
    int). Memoized: a training loop passes the same buffers every step, so after the first step a
    launch costs a dictionary lookup here instead of freshly typed arguments and a packed rule.
    """
    param_dtype = np.dtype(param_dtype)
    step = step if rule.bias_correction else None
    return _plan(param_dtype, addresses, end, rule, step, multiprocessors, begin, lr_device,
                 rule_args.effective(extras, param_dtype))


def state_buffers(rule):
    """``(has_momentum_buffer, has_grad_avg)``: the state buffers ``rule`` updates."""
    return rule.momentum != 0, rule.centered


@functools.lru_cache(maxsize=1024)
def _plan(param_dtype, addresses, end, rule, step, multiprocessors, begin, lr_device, extras):
    compute = compute_dtype(param_dtype)
    present = [(a, param_dtype.itemsize if i < 2 else compute.itemsize)
               for i, a in enumerate(addresses) if a is not None]
    width = vector_width(param_dtype)
    vec_begin, vec_end = vector_span([a for a, _ in present], [s for _, s in present], begin, end,
                                     width)
    grid, block = launch_config(end - begin, width, multiprocessors)
    args = kernel_args([a or 0 for a in addresses], begin, vec_begin, vec_end, end,
                       rule_args.for_rule(rule, step, param_dtype, extras), lr_device,
                       extras.offsets, extras.device_amp)
    name = kernel_name(param_dtype, addresses[3] is not None, addresses[4] is not None)
    return Launch(name, grid, block, args)


# ---------------------------------------------------------------------------------------------
# Multi-tensor steps: one launch of rmsprop_multi_kernel for a list of buffer sets. It reads two
# int64 tables, built here and copied to the device in one piece (``descriptors``): a row per tensor
# (its COLUMNS data addresses, then its counter offset), then a row per chunk, a piece of a tensor.

COLUMNS = 6  # param, grad, square_avg, momentum_buffer, grad_avg, master_param (rmsprop.cu: Column)
TENSOR_FIELDS = COLUMNS + 1  # and the counter of element 0 (rmsprop.cu: COUNTER, N_COLUMNS)
CHUNK = 1 << 16  # elements per chunk: 64 sweeps of a block over float32 vectors; a fine grain
CHUNK_FIELDS = 5  # tensor, begin, vec_begin, vec_end, end (rmsprop.cu: ChunkField)
MAX_CHUNK = 2**30  # the kernel indexes within a chunk (plus a head under 16) in int


def vector_spans(table, sizes, param_dtype, begins=None):
    """``(vec_begins, vec_ends)``, int64 per tensor: ``vector_span`` for every row of ``table``
    (int64 ``[n, COLUMNS]`` addresses; 0, absent, holds no span back) from ``begins`` (or 0)."""
    table = np.asarray(table, np.int64).reshape(-1, COLUMNS)
    ends = np.asarray(sizes, np.int64)
    begins = np.zeros_like(ends) if begins is None else np.asarray(begins, np.int64)
    width = vector_width(param_dtype)
    param_size, state_size = np.dtype(param_dtype).itemsize, compute_dtype(param_dtype).itemsize
    itemsizes = np.array([param_size] * 2 + [state_size] * (COLUMNS - 2))
    heads = np.arange(width)
    # aligned[j, h]: every buffer of row j sits on a 16-byte boundary at element begins[j] + h.
    at = table[:, None, :] + (begins[:, None, None] + heads[None, :, None]) * itemsizes
    aligned = ((at % VECTOR_BYTES == 0) | (table[:, None, :] == 0)).all(axis=2)
    aligned &= heads[None, :] < (ends - begins)[:, None]
    found = aligned.any(axis=1)
    vec_begins = np.where(found, begins + aligned.argmax(axis=1), ends)
    vec_ends = vec_begins + (ends - vec_begins) // width * width
    return vec_begins, vec_ends


def chunk_table(sizes, vec_begins, vec_ends, chunk=CHUNK, begins=None):
    """int64 ``[n_chunks, CHUNK_FIELDS]``: every non-empty tensor cut into chunks.

    Cuts fall ``chunk`` elements apart from the tensor's vector start (from its begin where it has
    no vector span), so each chunk's 128-bit span stays aligned and whole: only the first chunk has
    a scalar head and only the last a scalar tail. ``chunk`` is a multiple of 16 (so of every
    vector width). Each row: tensor index, begin, vec_begin, vec_end, end."""
    if chunk % VECTOR_BYTES or not 0 < chunk <= MAX_CHUNK:
        raise ValueError(f"chunk must be a positive multiple of {VECTOR_BYTES} up to 2^30, "
                         f"got {chunk}")
    ends = np.asarray(sizes, np.int64)
    begins = np.zeros_like(ends) if begins is None else np.asarray(begins, np.int64)
    vec_begins, vec_ends = np.asarray(vec_begins, np.int64), np.asarray(vec_ends, np.int64)
    anchors = np.where(vec_begins < ends, vec_begins, begins)
    counts = np.where(ends > begins, 1 + np.maximum(ends - anchors - 1, 0) // chunk, 0)
    tensor = np.repeat(np.arange(len(ends), dtype=np.int64), counts)
    k = np.arange(counts.sum(), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    anchor, end = anchors[tensor], ends[tensor]
    start = np.where(k == 0, begins[tensor], anchor + k * chunk)
    stop = np.minimum(anchor + (k + 1) * chunk, end)
    vec_start = np.clip(vec_begins[tensor], start, stop)
    vec_stop = np.clip(vec_ends[tensor], vec_start, stop)
    return np.stack([tensor, start, vec_start, vec_stop, stop], axis=1)


def multi_launch_config(n_chunks, multiprocessors):
    """``(grid, block)``: a block per chunk, up to one resident wave (blocks then loop)."""
    return max(min(n_chunks, BLOCKS_PER_SM * multiprocessors), 1), BLOCK


def multi_kernel_args(descriptors_address, n_tensors, n_chunks, rule, lr_device=0, amp_device=0):
    """The multi kernel's argument tuple, typed as in ``rmsprop.cu``: the tensor and chunk tables'
    device addresses (one ``descriptors`` upload), the chunk count, the packed ``RuleArgs``
    (``MultiLaunch.rule_args``), ``lr_device`` and ``amp_device`` (as for ``kernel_args``)."""
    return (
        np.uint64(descriptors_address),  # const long long* tensors
        np.uint64(descriptors_address + n_tensors * TENSOR_FIELDS * 8),  # const long long* chunks
        np.int64(n_chunks), rule,  # long long n_chunks, RuleArgs<T>
        np.uint64(lr_device), np.uint64(amp_device),  # const double*, const float*
    )


class MultiLayout(NamedTuple):
    """A multi-tensor launch less its rule: what ``backend.prepare_many`` keeps on the device."""
    name: str  # the kernel instance (multi_kernel_name)
    grid: int
    block: int
    descriptors: np.ndarray  # int64: the tensor table, then the chunk table (copy to the device)
    key: bytes  # descriptors' bytes: equal keys, equal tables (the device copy is memoized on it)
    n_tensors: int
    n_chunks: int


# A whole multi-tensor launch: MultiLayout's fields, then the packed RuleArgs (rule_args.pack).
MultiLaunch = NamedTuple("MultiLaunch", [*MultiLayout.__annotations__.items(),
                                         ("rule_args", np.ndarray)])


def multi_plan(param_dtype, table, sizes, rule, step, multiprocessors, chunk=CHUNK, begins=None,
               extras=PLAIN):
    """Everything about one multi-tensor launch but the upload and the launch (and
    ``extras.device_amp``, ``multi_kernel_args``'s); None when every tensor is empty.

    ``table``: int64 ``[n, COLUMNS]`` data addresses (0 where absent), ``sizes``: int64 ``[n]``,
    ``extras`` (``offsets``: one int per tensor), as ``update_many`` takes them. Memoized on the
    tables' bytes: a training loop passes the same buffers every step.
    """
    param_dtype = np.dtype(param_dtype)
    step = step if rule.bias_correction else None
    extras = rule_args.effective(extras, param_dtype)
    offsets = rule_args.counter_offsets(extras.offsets, len(sizes))
    return _multi_plan(param_dtype, *table_key(table, sizes), rule, step, multiprocessors, chunk,
                       *table_key(begins, offsets), extras._replace(offsets=0, device_amp=0))


def multi_layout(param_dtype, table, sizes, has_momentum_buffer, has_grad_avg, multiprocessors,
                 chunk=CHUNK, begins=None, offsets=0):
    """``multi_plan`` less the rule: a ``MultiLayout`` (None if empty) for these state buffers
    and counter offsets."""
    return _multi_tables(np.dtype(param_dtype), *table_key(table, sizes),
                         (bool(has_momentum_buffer), bool(has_grad_avg)), multiprocessors, chunk,
                         *table_key(begins, rule_args.counter_offsets(offsets, len(sizes))))


def table_key(*tables):
    """Each of ``tables`` as int64 bytes (None stays None): multi-tensor plans are keyed so."""
    return tuple(None if t is None else np.ascontiguousarray(t, np.int64).tobytes() for t in tables)


@functools.lru_cache(maxsize=256)
def _multi_plan(param_dtype, table, sizes, rule, step, multiprocessors, chunk, begins, offsets,
                extras):
    layout = _multi_tables(param_dtype, table, sizes, state_buffers(rule), multiprocessors, chunk,
                           begins, offsets)
    return layout and MultiLaunch(*layout, rule_args.for_rule(rule, step, param_dtype, extras))


@functools.lru_cache(maxsize=64)
def _multi_tables(param_dtype, table, sizes, buffers, multiprocessors, chunk, begins, offsets):
    """The ``MultiLayout`` of the instance with state ``buffers``, or None without chunks. Cached
    apart from the rule: with bias correction or stochastic rounding (a key per step) every step is
    a new plan over the same tables."""
    table = np.frombuffer(table, np.int64).reshape(-1, COLUMNS)
    sizes = np.frombuffer(sizes, np.int64)
    begins = None if begins is None else np.frombuffer(begins, np.int64)
    vec_begins, vec_ends = vector_spans(table, sizes, param_dtype, begins)
    chunks = chunk_table(sizes, vec_begins, vec_ends, chunk, begins)
    if len(chunks) == 0:
        return None
    tensors = np.column_stack([table, np.frombuffer(offsets, np.int64)])
    descriptors = np.concatenate([tensors.ravel(), chunks.ravel()])
    descriptors.flags.writeable = False  # shared by every plan that hits this cache entry
    grid, block = multi_launch_config(len(chunks), multiprocessors)
    return MultiLayout(multi_kernel_name(param_dtype, *buffers), grid, block, descriptors,
                       descriptors.tobytes(), len(table), len(chunks))
