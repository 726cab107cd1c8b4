"""The one place that compiles fastrms's CPU loops: Numba's options, and its disk cache where
one can be written.

``cache=True`` makes Numba raise ("no locator available") when neither the package's
``__pycache__`` nor a user cache directory is writable: a read-only install in a container
without a writable home. Then the loops are compiled without the disk cache (each process
compiles on first use), with one warning that says how to get it back (``NUMBA_CACHE_DIR``).
"""

import warnings

import numba as nb

# error_model='numpy' lets the loops vectorise; no fastmath: results equal the NumPy reference.
OPTIONS = dict(nogil=True, error_model="numpy")

_disk_cache = True  # False once Numba found no writable cache location


def compile_loop(func, parallel=False):
    """``numba.njit`` of ``func`` with ``OPTIONS``, cached on disk where that is possible."""
    global _disk_cache
    if _disk_cache:
        try:
            return nb.njit(parallel=parallel, cache=True, **OPTIONS)(func)
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
