"""The one place that compiles fastrms's CPU loops: Numba's options, its disk cache where one
can be written, and a lock so that concurrent processes compile each loop once.

``cache=True`` makes Numba raise ("no locator available") when neither the package's
``__pycache__`` nor a user cache directory is writable: a read-only install in a container
without a writable home. Then the loops are compiled without the disk cache (each process
compiles on first use), with one warning that says how to get it back (``NUMBA_CACHE_DIR``).

Several processes starting together on an empty cache (``torchrun`` ranks, DataLoader-style
worker pools) would each compile the same loops at once, each slower for the others' load. The
first process to need a loop takes a file lock next to its cache entry and compiles and saves it;
the others wait on the lock, then load it from the disk cache. The lock is taken only on Numba's
slow path (a signature this process has not compiled or loaded yet), never on a step.
"""

import os
import warnings

import numba as nb
from filelock import FileLock

# error_model='numpy' lets the loops vectorise; no fastmath: results equal the NumPy reference.
OPTIONS = dict(nogil=True, error_model="numpy")

_disk_cache = True  # False once Numba found no writable cache location


def compile_loop(func, parallel=False):
    """``numba.njit`` of ``func`` with ``OPTIONS``, cached on disk where that is possible."""
    global _disk_cache
    if _disk_cache:
        try:
            return _lock_compiles(nb.njit(parallel=parallel, cache=True, **OPTIONS)(func))
        except RuntimeError as exc:
            if "no locator available" not in str(exc):
                raise
            _disk_cache = False
            warnings.warn(
                "fastrms: no writable cache location for Numba (a read-only install without a "
                "writable home?): kernels are compiled in every process, without the disk "
                "cache. Set NUMBA_CACHE_DIR to a writable directory to keep them.",
                RuntimeWarning, stacklevel=2)
    return nb.njit(parallel=parallel, **OPTIONS)(func)


def _lock_compiles(dispatcher):
    """Make ``dispatcher`` compile (or load from the disk cache) under a file lock per entry."""
    try:  # Numba's cache entry: <cache dir>/<module>.<function>-<line>.py<ver>.nbi
        cache = dispatcher._cache
        lock_path = os.path.join(cache._cache_path, cache._cache_file._index_name + ".lock")
    except AttributeError:  # another Numba's internals: compile without the lock
        return dispatcher
    compile_unlocked = dispatcher.compile  # what Numba calls for a signature it has not got

    def compile_locked(signature):
        try:
            lock = FileLock(lock_path)
            lock.acquire()
        except OSError:  # no lock file here (a read-only cache entry, no flock): compile anyway
            return compile_unlocked(signature)
        try:
            return compile_unlocked(signature)  # loads what another process saved meanwhile
        finally:
            lock.release()

    dispatcher.compile = compile_locked
    return dispatcher
