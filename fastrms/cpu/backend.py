"""The ``numba`` backend: fused CPU kernels, serial for small buffers, parallel for large ones.

Numba's threading layer is pinned to OpenMP (unless ``NUMBA_THREADING_LAYER`` says otherwise): it
runs concurrent calls from several Python threads, which the workqueue layer aborts on. GNU OpenMP
is not fork-safe, so a forked child (a DataLoader worker) runs the serial loop instead of hanging.
"""

import functools
import os
import warnings

import numpy as np

NAME, PLACE = "numba", "host"
DTYPES = frozenset(np.dtype(t) for t in (np.float32, np.float64))
# Below this many elements one thread wins: a parallel launch costs ~2.5 µs here, and a
# 2¹⁵-element float32 step (640 KB of traffic) takes ~10 µs on one core.
PARALLEL_FROM = 1 << 15

_serial_only = False  # set in forked children and where no threading layer loads


def _after_fork_in_child():
    global _serial_only
    _serial_only = True


def availability():
    try:
        import numba  # noqa: F401
    except ImportError as exc:
        return f"Numba is not installed ({exc})"
    return None


try:
    import numba
except ImportError:  # availability() reports it
    numba = None
else:
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "omp"
    os.register_at_fork(after_in_child=_after_fork_in_child)
    from numba.np.ufunc import parallel as _numba_parallel

    from ..threads import KeepOpenMPThreads
    from ..threads import resolve as resolve_threads
    from .kernels import rmsprop_kernel
    from .multi import chunks_of, rmsprop_multi_kernel


@functools.lru_cache(maxsize=512)
def scalar_array(rule, dtype, step):
    """The rule's scalars as a small array: one argument for Numba to type, not eight."""
    array = np.array(rule.scalars(dtype, step), dtype=dtype)
    array.flags.writeable = False
    return array


def update(buffers, rule, step, threads=None):
    """One fused step over a validated ``Buffers`` of NumPy arrays, on ``threads`` threads
    (``fastrms.threads.resolve`` decides how many)."""
    param = buffers.param
    k = scalar_array(rule, param.dtype, step if rule.bias_correction else None)
    if param.ndim != 1:
        buffers = tuple(None if a is None else a.reshape(-1) for a in buffers)
    args = (*buffers[:5], k)
    _run(rmsprop_kernel, rule.modes(), param.size, threads, args, args)


def update_many(columns, rule, step, table, sizes, threads=None):
    """Update every buffer set of ``columns`` in one compiled call (``fastrms.cpu.multi``).

    ``columns`` is a ``Buffers`` of lists of validated, C-contiguous NumPy arrays of one dtype
    (``momentum_buffer`` and ``grad_avg`` are None where the rule has none); ``table`` holds their
    data addresses (int64 ``[len, 5]``, 0 where absent) and ``sizes`` their element counts (int64).
    """
    dtype = columns.param[0].dtype
    k = scalar_array(rule, dtype, step if rule.bias_correction else None)
    like = _empty(dtype)
    b_like = like if columns.momentum_buffer is not None else None
    a_like = like if columns.grad_avg is not None else None
    n = int(sizes.sum())
    serial = (table, sizes, _no_chunks, k, like, b_like, a_like)
    parallel = None if n < PARALLEL_FROM else (table, sizes, chunks_of(sizes), k, like, b_like,
                                               a_like)
    _run(rmsprop_multi_kernel, rule.modes(), n, threads, serial, parallel)


_pool_started = False  # whether a parallel loop ran in this process (Numba's pool is up)


def _run(kernel_of, modes, n, threads, serial_args, parallel_args):
    """The serial loop for small or single-threaded steps, else the parallel one on the resolved
    number of threads; single-threaded for good where no threading layer loads."""
    global _serial_only, _pool_started
    count = 1 if n < PARALLEL_FROM or _serial_only else resolve_threads(threads)
    if count == 1:
        kernel_of(modes, False)(*serial_args)
        return
    try:
        if not _pool_started:
            with KeepOpenMPThreads():  # starting the pool resets OpenMP's count (torch's)
                numba.get_num_threads()  # starts it
            _pool_started = True
        _set_numba_threads(count)
        kernel_of(modes, True)(*parallel_args)
    except ValueError as exc:  # raised before the loop starts: nothing was written
        if "threading layer" not in str(exc):
            raise
        warnings.warn(f"fastrms: no Numba threading layer loads ({exc}); running single-threaded")
        _serial_only = True
        kernel_of(modes, False)(*serial_args)


def _set_numba_threads(count):
    """Numba's thread count for the calling Python thread, once its pool is up. Read each time
    (other code on this thread may have set it) with Numba's raw getter, which exists once the
    pool does: ``numba.get_num_threads`` checks the pool first and costs ~2 µs a step."""
    if _numba_parallel._get_num_threads() != count:
        numba.set_num_threads(count)


@functools.lru_cache(maxsize=None)
def _empty(dtype):
    """An empty array of ``dtype``: it tells the multi-tensor loop which dtype to read."""
    return np.empty(0, dtype=dtype)


_no_chunks = np.zeros((0, 3), dtype=np.int64)
