"""The CUDA kernels of ``rmsprop.cu``: instance names, launch geometry, arguments, compilation.

Everything but ``kernel()`` is a pure function of integers and dtypes, so that it is tested on
machines without a GPU (and the host-emulation tests launch the emulated kernel with exactly what
these functions produce). ``kernel()`` compiles one instance through ``cupy.RawModule`` on first
use, per device; CuPy keeps the result in its disk cache, keyed by source, options and name.
"""

import functools
from importlib import resources
from typing import NamedTuple

import numpy as np

from .. import rule as R

try:  # bfloat16 has no NumPy dtype of its own; ml_dtypes supplies the one torch and JAX share
    from ml_dtypes import bfloat16
except ImportError:  # bfloat16 buffers are then not accepted
    bfloat16 = None

# CuPy adds -ftz=true and the device's -arch itself. --fmad=false: the NumPy reference rounds every
# product and sum, so the kernel may not fuse them (DESIGN.md §4).
OPTIONS = ("-std=c++17", "--fmad=false")
BLOCK = 256  # threads per block: rmsprop.cu's BLOCK (its __launch_bounds__)
# Grid cap per multiprocessor: one resident wave. ptxas reports at most 53 registers per thread
# for any instance, so 4 blocks of 256 fit in 64K registers; with 3-5 independent 128-bit loads per
# thread that keeps ~50-80 KB in flight per SM, more than bandwidth needs. A grid larger than what
# fits would run its last blocks in a thin second wave; instead the threads loop (grid-stride).
BLOCKS_PER_SM = 4
VECTOR_BYTES = 16  # one 128-bit load/store per buffer and thread-iteration

# Param dtype -> the C++ type that instantiates the kernel (the compute and state type follows).
CXX_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double",
             np.dtype(np.float16): "__half"}
if bfloat16 is not None:
    CXX_TYPES[np.dtype(bfloat16)] = "__nv_bfloat16"
DTYPES = frozenset(CXX_TYPES)


def compute_dtype(param_dtype):
    """The kernel's compute and state dtype: float32 for half params, else the params' own."""
    param_dtype = np.dtype(param_dtype)
    return np.dtype(np.float32) if param_dtype.itemsize < 4 else param_dtype


def kernel_name(param_dtype, has_momentum_buffer, has_grad_avg):
    """The C++ name of one instance, as RawModule's name_expressions want it."""
    flags = ", ".join("true" if f else "false" for f in (has_momentum_buffer, has_grad_avg))
    return f"fastrms::rmsprop_kernel<{CXX_TYPES[np.dtype(param_dtype)]}, {flags}>"


def all_kernel_names():
    """Every instance the package may launch (4 dtypes x momentum buffer x grad_avg)."""
    return [kernel_name(d, m, a) for d in CXX_TYPES for m in (False, True) for a in (False, True)]


def vector_width(param_dtype):
    """Elements per 128-bit step: one 16-byte word of params (rmsprop.cu's Vector<P>::width)."""
    return VECTOR_BYTES // np.dtype(param_dtype).itemsize


def vector_span(addresses, itemsizes, begin, end, width):
    """``(vec_begin, vec_end)``: the elements of ``[begin, end)`` that take the 128-bit path.

    ``addresses[i]`` is buffer i's address of element 0 and ``itemsizes[i]`` its element size.
    The span starts at the first index where every buffer is 16-byte aligned (a head of fewer than
    ``width`` elements goes scalar) and holds whole vectors. Buffers that are never aligned
    together (views at different misalignments) get the empty span ``(end, end)``: all scalar.
    """
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


def kernel_args(addresses, begin, vec_begin, vec_end, end, scalars, modes, param_dtype):
    """The kernel's argument tuple, each value typed as its parameter in ``rmsprop.cu``.

    ``addresses``: the five buffers' addresses (param, grad, square_avg, momentum_buffer,
    grad_avg; 0 for an absent buffer: a null pointer the instance never touches). ``scalars`` and
    ``modes``: ``Rule.scalars(...)`` and ``Rule.modes()``. The scalars are cast here to the compute
    dtype, a no-op for values that ``Rule.scalars`` already rounded to it.
    """
    if len(addresses) != 5 or len(scalars) != R.N_SCALARS or len(modes) != R.N_MODES:
        raise ValueError("expected 5 addresses, the rule's scalars and its modes")
    compute = compute_dtype(param_dtype).type
    return (
        *(np.uint64(a) for a in addresses),  # pointers: 8 bytes each
        *(np.int64(i) for i in (begin, vec_begin, vec_end, end)),  # long long
        *(compute(k) for k in scalars),  # float or double
        *(np.int32(m) for m in modes),  # int
    )


class Launch(NamedTuple):
    name: str  # the kernel instance (kernel_name)
    grid: int
    block: int
    args: tuple  # kernel_args


def plan(param_dtype, addresses, end, rule, step, multiprocessors, begin=0):
    """Everything about one step's launch but the launch itself.

    ``addresses``: a tuple of where element 0 of param, grad, square_avg, momentum_buffer and
    grad_avg lives (``None`` for an absent buffer); the step covers elements ``[begin, end)``.
    Memoized: a training loop passes the same buffers every step, so after the first step a
    launch costs a dictionary lookup here instead of ~23 freshly typed arguments (the step only
    matters, and only enters the key, with bias correction).
    """
    step = step if rule.bias_correction else None
    return _plan(np.dtype(param_dtype), addresses, end, rule, step, multiprocessors, begin)


@functools.lru_cache(maxsize=1024)
def _plan(param_dtype, addresses, end, rule, step, multiprocessors, begin):
    compute = compute_dtype(param_dtype)
    present = [(a, param_dtype.itemsize if i < 2 else compute.itemsize)
               for i, a in enumerate(addresses) if a is not None]
    width = vector_width(param_dtype)
    vec_begin, vec_end = vector_span([a for a, _ in present], [s for _, s in present], begin, end,
                                     width)
    grid, block = launch_config(end - begin, width, multiprocessors)
    args = kernel_args([a or 0 for a in addresses], begin, vec_begin, vec_end, end,
                       rule.scalars(compute, step), rule.modes(), param_dtype)
    name = kernel_name(param_dtype, addresses[3] is not None, addresses[4] is not None)
    return Launch(name, grid, block, args)


@functools.lru_cache(maxsize=1)
def source():
    """rmsprop.cu's text (package data)."""
    return resources.files(__package__).joinpath("rmsprop.cu").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def kernel(device_id, name):
    """The compiled instance ``name`` on device ``device_id`` (compiled on first use)."""
    import cupy

    with cupy.cuda.Device(device_id):
        module = cupy.RawModule(code=source(), options=OPTIONS, name_expressions=(name,))
        return module.get_function(name)


@functools.lru_cache(maxsize=None)
def multiprocessors(device_id):
    import cupy

    return cupy.cuda.Device(device_id).attributes["MultiProcessorCount"]
