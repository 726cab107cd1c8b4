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

import numba as nb
from numba import types
from numba.extending import overload

from ..rule import N_SCALARS, rmsprop_element

from .jit import compile_loop

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


assert N_SCALARS == 8, "update _scalar_tuple"


@nb.njit(inline="always")
def _scalar_tuple(k):
    """Array → tuple, read once before the loop so that the values stay in registers."""
    return (k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7])


@nb.njit(inline="always")
def sweep(x, g, s, b, a, kt, modes):
    """The fused step over whole 1-D arrays, one element after another (the serial loop)."""
    for i in range(x.size):
        gi = g[i]
        xi, si, bi, ai = _element(x[i], gi, s[i], _load(b, i, gi), _load(a, i, gi), kt, modes)
        x[i] = xi
        s[i] = si
        _store(b, i, bi)
        _store(a, i, ai)


@functools.lru_cache(maxsize=None)
def rmsprop_kernel(modes, parallel):
    """The fused loop ``f(x, g, s, b, a, k)`` for one mode tuple; serial or parallel."""
    if parallel:
        def loop(x, g, s, b, a, k):
            kt = _scalar_tuple(k)
            for i in nb.prange(x.size):
                gi = g[i]
                xi, si, bi, ai = _element(x[i], gi, s[i], _load(b, i, gi), _load(a, i, gi),
                                          kt, modes)
                x[i] = xi
                s[i] = si
                _store(b, i, bi)
                _store(a, i, ai)
    else:
        def loop(x, g, s, b, a, k):
            sweep(x, g, s, b, a, _scalar_tuple(k), modes)

    kind = "parallel" if parallel else "serial"
    loop.__name__ = loop.__qualname__ = f"rmsprop_{kind}_" + "_".join(map(str, modes))
    return compile_loop(loop, parallel)


def same_traffic_parallel(x, g, s, b, a, k):
    """The roofline: the step's exact memory traffic with one multiply-add per element."""
    c = k[0]
    for i in nb.prange(x.size):
        gi = g[i]
        x[i] = x[i] * c + gi
        s[i] = s[i] * c + gi
        _store(b, i, _load(b, i, gi) * c + gi)
        _store(a, i, _load(a, i, gi) * c + gi)


same_traffic_parallel = compile_loop(same_traffic_parallel, parallel=True)


def same_traffic_serial(x, g, s, b, a, k):
    """``same_traffic_parallel`` on one thread, for the small sizes the serial loop serves."""
    c = k[0]
    for i in range(x.size):
        gi = g[i]
        x[i] = x[i] * c + gi
        s[i] = s[i] * c + gi
        _store(b, i, _load(b, i, gi) * c + gi)
        _store(a, i, _load(a, i, gi) * c + gi)


same_traffic_serial = compile_loop(same_traffic_serial)
