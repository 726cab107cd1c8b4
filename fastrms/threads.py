"""How many threads a CPU step uses: one order of precedence for the array API and the torch
adapter alike, and OpenMP's own thread count (which torch reads) left as the user set it.

The count of a step is the first of:

1. the step's explicit ``threads=`` argument (``rmsprop_update``, ``RMSprop``,
   ``fastrms.torch.RMSprop``);
2. ``fastrms.set_num_threads(n)``;
3. in the torch adapter, ``torch.get_num_threads()`` (what ``torchrun`` and
   ``torch.set_num_threads`` set);
4. the environment: ``OMP_NUM_THREADS``, then ``NUMBA_NUM_THREADS``;
5. every core (Numba's pool size).

It is capped at Numba's pool size (``NUMBA_NUM_THREADS``, fixed when Numba starts its threads).
One thread runs the serial loop and never starts Numba's pool. Numba's own
``numba.set_num_threads`` is per Python thread; fastrms sets it, for the calling thread, before
each parallel step whose count differs.
"""

import functools
import os

_configured = None  # fastrms.set_num_threads


def set_num_threads(n):
    """Use ``n`` threads for CPU steps from now on (``None``: back to the default order).

    An explicit ``threads=`` argument still wins over it; it wins over torch's and the
    environment's thread counts.
    """
    global _configured
    _configured = None if n is None else check_count(n, "n")


def get_num_threads(framework=None):
    """The thread count a CPU step without ``threads=`` uses now (``framework``: the torch
    adapter's ``torch.get_num_threads()``)."""
    return resolve(None, framework)


def check_count(n, name="threads"):
    """``n`` as a thread count (an int >= 1), or a clear error naming ``name``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a whole number of threads >= 1, got {n!r}")
    return n


def resolve(threads=None, framework=None):
    """The thread count of one step (the order of the module docstring), capped at the pool."""
    for value in (threads, _configured, framework, _from_environment()):
        if value is not None:
            return min(value, pool_size())
    return pool_size()


@functools.cache
def pool_size():
    """Numba's thread pool size: every core unless ``NUMBA_NUM_THREADS`` says otherwise (fixed
    once Numba is imported, as the environment it reads)."""
    import numba

    return numba.config.NUMBA_NUM_THREADS


@functools.cache
def _from_environment():
    """The environment's thread count, read once per process (as Numba and OpenMP read it)."""
    for variable in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
        text = os.environ.get(variable, "").split(",")[0].strip()  # OpenMP allows "4,2"
        if text.isdigit() and int(text) >= 1:
            return int(text)
    return None


class KeepOpenMPThreads:
    """Restores OpenMP's thread count (``omp_get_max_threads``) after Numba starts its pool.

    Numba's OpenMP layer sets the process's OpenMP thread count to its pool size when it starts;
    torch (same libgomp) then reports and uses that count instead of the one the user set
    (``torch.set_num_threads(1)``, ``OMP_NUM_THREADS=1``). Where no libgomp is loaded, a no-op.
    """

    def __enter__(self):
        self.gomp = _libgomp()
        self.before = self.gomp.omp_get_max_threads() if self.gomp else None
        return self

    def __exit__(self, *exc):
        if self.gomp and self.gomp.omp_get_max_threads() != self.before:
            self.gomp.omp_set_num_threads(self.before)


def _libgomp():
    import ctypes

    try:
        return ctypes.CDLL("libgomp.so.1")  # the copy already loaded, if any
    except OSError:
        return None
