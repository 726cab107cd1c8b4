"""Fused RMSProp loops in Numba: the element math of ``fastrms.rule`` inlined into one pass.

Each mode tuple (``Rule.modes()``) gets its own compiled loop, with the modes frozen in as
constants, so that the branches of the rule fold away and the loop vectorises (runtime mode
switches in the loop body blocked SIMD and cost 30% of the plain step's speed). Each such loop is
its own Python function with its own ``__qualname__``, so Numba's disk cache keeps one entry per
mode tuple and kind of loop: one function jitted twice under ``cache=True`` shares one entry and
gets the wrong variant served (numba issue 6845).

``error_model='numpy'`` lets the loops vectorise; no ``fastmath``, so the results equal the NumPy
reference bit for bit. Absent buffers (no momentum, not centered) are passed as ``None``; their
loads and stores compile to nothing.

Note for developers: Numba's disk cache checks this file's timestamp only, not ``rule.py``'s.
After editing ``rule.py``, touch this file (or clear ``__pycache__``) to recompile.
"""

import functools
import types as types_module

import numba as nb
import numpy as np
from numba import types
from numba.extending import overload
from numba.np.unsafe.ndarray import to_fixed_tuple

from ..rounding import FLOAT, NEAREST
from ..rule import N_SCALARS, at_least_zero, rmsprop_element

from .halves import storage_functions
from .jit import compile_loop

BLOCK = 1 << 14  # elements per parallel task: blocks, not elements, keep each task's loop SIMD

@overload(at_least_zero, inline="always")
def _at_least_zero_impl(v, zero):
    return lambda v, zero: zero if v < zero else v


_element = nb.njit(inline="always", error_model="numpy")(rmsprop_element)


def _load(buf, i, default):
    """``buf[i]``, or ``default`` when the buffer is absent."""


def _store(buf, i, value):
    """``buf[i] = value``, or nothing when the buffer is absent."""


@overload(_load, inline="always")
def _load_impl(buf, i, default):
    if isinstance(buf, types.NoneType):
        return lambda buf, i, default: default
    return lambda buf, i, default: buf[i]


@overload(_store, inline="always")
def _store_impl(buf, i, value):
    if isinstance(buf, types.NoneType):
        return lambda buf, i, value: None

    def store(buf, i, value):
        buf[i] = value

    return store


def _part(buf, lo, hi):
    """``buf[lo:hi]``, or None when the buffer is absent."""


@overload(_part, inline="always")
def _part_impl(buf, lo, hi):
    if isinstance(buf, types.NoneType):
        return lambda buf, lo, hi: None
    return lambda buf, lo, hi: buf[lo:hi]


@nb.njit(inline="always")
def _scalar_tuple(k):
    """Array → tuple, read once before the loop so that the values stay in registers."""
    return to_fixed_tuple(k, N_SCALARS)


@functools.lru_cache(maxsize=None)
def sweep_for(storage):
    """The serial fused step over whole 1-D arrays for ``storage`` = (param format, rounding)
    (``fastrms.rounding``): ``sweep(x, g, s, b, a, w, kt, modes, key, offset)``. Half params and
    grads arrive as uint16 views; ``w`` is the float32 master (None: the param is read and
    widened; with a master it is only written); ``key`` and ``offset`` (uint64) drive stochastic
    rounding, element ``i`` drawing counter ``offset + i``."""
    widen, narrow = storage_functions(*storage)

    @nb.njit(inline="always", error_model="numpy")
    def sweep(x, g, s, b, a, w, kt, modes, key, offset):
        for i in range(x.size):
            gi = widen(g[i])
            xi, si, bi, ai = _element(_load(w, i, widen(x[i])), gi, s[i], _load(b, i, gi),
                                      _load(a, i, gi), kt, modes)
            _store(w, i, xi)
            x[i] = narrow(xi, key, offset + np.uint64(i))
            s[i] = si
            _store(b, i, bi)
            _store(a, i, ai)

    return sweep


def _name(kind, modes, storage):
    """A loop's ``__qualname__``: its own disk-cache entry per variant (numba issue 6845)."""
    return f"rmsprop_{kind}_" + "_".join(map(str, modes + storage))


def rmsprop_kernel(modes, parallel, storage=(FLOAT, NEAREST)):
    """The fused loop ``f(x, g, s, b, a, w, k, key, offset)`` for one mode tuple and ``storage``
    (param format, rounding); serial or parallel (see ``sweep_for``)."""
    return _kernel(modes, parallel, storage)  # one cache entry, however storage was passed


@functools.lru_cache(maxsize=None)
def _kernel(modes, parallel, storage):
    template = _parallel_loop if parallel else _serial_loop
    name = _name("parallel" if parallel else "serial", modes, storage)
    return compile_loop(specialised(template, name, SWEEP=sweep_for(storage), MODES=modes),
                        parallel)


def specialised(template, name, **constants):
    """``template`` (a loop of this package) as a new function ``name`` that reads ``constants``
    as globals, which Numba freezes into the compiled loop. Not closures: Numba's disk cache keys
    a closure by its pickled cells, and a jitted function pickles differently in every process
    (its cache entry would never be found again)."""
    loop = types_module.FunctionType(template.__code__, {**template.__globals__, **constants},
                                     name)
    loop.__qualname__ = name
    return loop


SWEEP = MODES = None  # the globals a loop's template reads, bound per variant by ``specialised``


def _serial_loop(x, g, s, b, a, w, k, key, offset):
    SWEEP(x, g, s, b, a, w, _scalar_tuple(k), MODES, key, offset)


def _parallel_loop(x, g, s, b, a, w, k, key, offset):
    kt = _scalar_tuple(k)
    # Blocks of elements per task, each swept by the serial loop from its start (SIMD within).
    for c in nb.prange((x.size + BLOCK - 1) // BLOCK):
        lo = c * BLOCK
        hi = min(lo + BLOCK, x.size)
        SWEEP(x[lo:hi], g[lo:hi], s[lo:hi], _part(b, lo, hi), _part(a, lo, hi), _part(w, lo, hi),
              kt, MODES, key, offset + np.uint64(lo))


def same_traffic(x, g, s, b, a, k):
    """The roofline: the step's exact memory traffic with one multiply-add per element
    (compiled serial and parallel by ``fastrms.cpu.same_traffic``: prange runs as range there)."""
    c = k[0]
    for i in nb.prange(x.size):
        gi = g[i]
        x[i] = x[i] * c + gi
        s[i] = s[i] * c + gi
        _store(b, i, _load(b, i, gi) * c + gi)
        _store(a, i, _load(a, i, gi) * c + gi)
