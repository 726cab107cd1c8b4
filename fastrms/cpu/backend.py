"""The ``numba`` backend: fused CPU kernels, serial for small buffers, parallel for large ones.

Numba's threading layer is pinned to OpenMP (unless ``NUMBA_THREADING_LAYER`` says otherwise): it
runs concurrent calls from several Python threads, which the workqueue layer aborts on. GNU OpenMP
is not fork-safe, so a forked child (a DataLoader worker) runs the serial loop instead of hanging.
"""

import functools
import os
import warnings

import numpy as np

from .._buffers import PLAIN
from ..dtypes import bfloat16_dtype
from ..reference import param_format

NAME, PLACE = "numba", "host"
# Half-precision params (bfloat16 where ml_dtypes is installed) compute in float32, as the
# reference does, and travel to the loops as uint16 views (fastrms.cpu.halves).
DTYPES = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64)) | (
    {bfloat16_dtype()} if bfloat16_dtype() is not None else set())
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

    from ..rounding import FLOAT, NEAREST, counters
    from ..threads import KeepOpenMPThreads
    from ..threads import resolve as resolve_threads
    from .eight_bit import kernel8
    from .kernels import rmsprop_kernel
    from .multi import chunks_of, rmsprop_multi_kernel


@functools.lru_cache(maxsize=512)
def scalar_array(rule, dtype, step, grad_scale=1.0, clip=1.0):
    """The rule's scalars as a small array: one argument for Numba to type, not eleven."""
    array = np.array(rule.scalars(dtype, step, grad_scale, clip), dtype=dtype)
    array.flags.writeable = False
    return array


def update(buffers, rule, step, threads=None, extras=PLAIN):
    """One fused step over a validated ``Buffers`` of NumPy arrays, on ``threads`` threads
    (``fastrms.threads.resolve`` decides how many), with ``extras`` (``fastrms._buffers``)."""
    param = buffers.param
    k = scalar_array(rule, rule.state_dtype(param.dtype), step if rule.bias_correction else None,
                     extras.grad_scale, extras.clip)
    fmt = param_format(param.dtype)
    flat = [None if a is None else a.reshape(-1) for a in buffers]
    if fmt != FLOAT:  # half params and grads: their bit patterns
        flat[0], flat[1] = flat[0].view(np.uint16), flat[1].view(np.uint16)
    args = (*flat, k, np.uint64(extras.key), np.uint64(extras.offsets))
    _run(rmsprop_kernel, rule.modes(), param.size, threads, args, args,
         (fmt, extras.rounding if fmt != FLOAT else NEAREST))


def update8(buffers, rule, step, threads=None, extras=PLAIN):
    """One fused step on 8-bit state (``fastrms.eight_bit``): ``buffers`` holds NumPy arrays and,
    for the state, ``Codes`` of them; float32 compute."""
    from ..eight_bit import modes8

    param = buffers.param
    k = scalar_array(rule, np.dtype(np.float32), step if rule.bias_correction else None,
                     extras.grad_scale, extras.clip)
    fmt = param_format(param.dtype)
    x, g = param.reshape(-1), buffers.grad.reshape(-1)
    if fmt != FLOAT:
        x, g = x.view(np.uint16), g.view(np.uint16)
    states = []
    for c in buffers[2:5]:
        states += [None, None] if c is None else [c.codes.reshape(-1), c.scales]
    w = None if buffers.master_param is None else buffers.master_param.reshape(-1)
    args = (x, g, *states, w, k, np.uint64(extras.key), np.uint64(extras.offsets))
    _run(kernel8, modes8(rule), param.size, threads, args, args,
         (fmt, extras.rounding if fmt != FLOAT else NEAREST))


def update_many(columns, rule, step, table, sizes, threads=None, extras=PLAIN):
    """Update every buffer set of ``columns`` in one compiled call (``fastrms.cpu.multi``).

    ``columns`` is a ``Buffers`` of lists of validated, C-contiguous NumPy arrays of one dtype
    (``momentum_buffer``, ``grad_avg`` and ``master_param`` are None where absent); ``table``
    holds their data addresses (int64 ``[len, 6]``, 0 where absent) and ``sizes`` their element
    counts (int64). ``extras.offsets``: one counter per buffer set (``rounding.counters``).
    """
    dtype = columns.param[0].dtype
    state = rule.state_dtype(dtype)
    k = scalar_array(rule, state, step if rule.bias_correction else None, extras.grad_scale,
                     extras.clip)
    fmt = param_format(dtype)
    s_like = _empty(state)
    likes = (_empty(np.uint16) if fmt != FLOAT else s_like, s_like,
             *(s_like if c is not None else None
               for c in (columns.momentum_buffer, columns.grad_avg, columns.master_param)))
    offsets = counters(extras.offsets, len(sizes))
    key = np.uint64(extras.key)
    n = int(sizes.sum())
    serial = (table, sizes, _no_chunks, k, likes, key, offsets)
    parallel = None if n < PARALLEL_FROM else (table, sizes, chunks_of(sizes), k, likes, key,
                                               offsets)
    _run(rmsprop_multi_kernel, rule.modes(), n, threads, serial, parallel,
         (fmt, extras.rounding if fmt != FLOAT else NEAREST))


_pool_started = False  # whether a parallel loop ran in this process (Numba's pool is up)


def _run(kernel_of, modes, n, threads, serial_args, parallel_args, *variant):
    """The serial loop for small or single-threaded steps, else the parallel one on the resolved
    number of threads; single-threaded for good where no threading layer loads."""
    global _serial_only, _pool_started
    count = 1 if n < PARALLEL_FROM or _serial_only else resolve_threads(threads)
    if count == 1:
        kernel_of(modes, False, *variant)(*serial_args)
        return
    try:
        if not _pool_started:
            with KeepOpenMPThreads():  # starting the pool resets OpenMP's count (torch's)
                numba.get_num_threads()  # starts it
            _pool_started = True
        _set_numba_threads(count)
        kernel_of(modes, True, *variant)(*parallel_args)
    except ValueError as exc:  # raised before the loop starts: nothing was written
        if "threading layer" not in str(exc):
            raise
        warnings.warn(f"fastrms: no Numba threading layer loads ({exc}); running single-threaded")
        _serial_only = True
        kernel_of(modes, False, *variant)(*serial_args)


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
