"""The CPU rooflines of ``fastrms bench``: loops with exactly one step's loads and stores and one
multiply-add per element, in the step's scaffolding (docs/design.md §6).

One kind of loop per way a step moves its param:

- ``FLOAT``: x (float32 or float64) read and written, g read, each state buffer read and
  written: ``fastrms.cpu.kernels.same_traffic``;
- ``HALF``: x and g as uint16 views (float16, bfloat16), float32 state: the step without a
  master, with either rounding (stochastic rounding moves the same bytes as nearest);
- ``MASTER``: as ``HALF``, but the float32 master w is read and written and x only written;
- ``CODES``: as ``FLOAT`` (float32), with 8-bit state: each state buffer's codes read and
  written, then its scales (one per 256 values) in a loop of their own.

The half loops multiply-add in integers on the uint16 patterns: what they compute is not used,
the bytes they move are. Each loop is written once and compiled serial and parallel, each under
its own ``__qualname__`` (numba issue 6845: one function jitted twice under ``cache=True`` shares
a disk-cache entry). They run
through ``fastrms.cpu.backend._run``, as a step does: serial below ``PARALLEL_FROM`` elements,
else in parallel on the step's thread count. ``grad_read`` is the roofline of the extra read
of the grads that clipping and loss scaling cost: ``fastrms.cpu.grad_stats.same_traffic``.
"""

import numba as nb
import numpy as np

from .backend import _run
from .grad_stats import LANES, same_traffic as _read_words
from .jit import compile_loop
from .kernels import _load, _store, same_traffic, specialised

FLOAT, HALF, MASTER, CODES = "float", "half", "master", "codes"
_MUL = np.uint16(3)  # the half loops' integer multiplier
_MUL8 = np.uint8(3)  # the 8-bit loop's


def half(x, g, s, b, a, k):
    """``HALF``: reads and writes x (uint16) and the state, reads g (uint16)."""
    c = k[0]
    for i in nb.prange(x.size):
        x[i] = x[i] * _MUL + g[i]
        s[i] = s[i] * c + c
        _store(b, i, _load(b, i, c) * c + c)
        _store(a, i, _load(a, i, c) * c + c)


def master(x, g, s, b, a, w, k):
    """``MASTER``: reads and writes w (float32) and the state, reads g and writes x (uint16)."""
    c = k[0]
    for i in nb.prange(x.size):
        w[i] = w[i] * c + c
        x[i] = g[i] * _MUL + _MUL
        s[i] = s[i] * c + c
        _store(b, i, _load(b, i, c) * c + c)
        _store(a, i, _load(a, i, c) * c + c)


def codes(x, g, s, b, a, ss, bs, as_, k):
    """``CODES``: reads and writes x (float32), the codes and the scales, reads g."""
    c = k[0]
    for i in nb.prange(x.size):
        x[i] = x[i] * c + g[i]
        s[i] = s[i] * _MUL8 + _MUL8
        _store(b, i, _load(b, i, _MUL8) * _MUL8 + _MUL8)
        _store(a, i, _load(a, i, _MUL8) * _MUL8 + _MUL8)
    for j in nb.prange(ss.size):
        ss[j] = ss[j] * c + c
        _store(bs, j, _load(bs, j, c) * c + c)
        _store(as_, j, _load(as_, j, c) * c + c)


# Each loop compiled serial (prange runs as range) and parallel, each under its own name.
_KERNELS = {(kind, parallel): compile_loop(
                specialised(loop, f"{loop.__name__}_{'parallel' if parallel else 'serial'}"),
                parallel)
            for kind, loop in ((FLOAT, same_traffic), (HALF, half), (MASTER, master),
                               (CODES, codes))
            for parallel in (False, True)}


def kernel(kind, parallel):
    """The compiled loop of ``kind`` (``FLOAT``, ``HALF``, ``MASTER``), serial or parallel."""
    return _KERNELS[kind, parallel]


def step_pass(x, g, s, b=None, a=None, w=None, threads=None):
    """A callable that runs one same-traffic pass over a step's buffers (NumPy arrays, written:
    pass copies), as ``fastrms.rmsprop_update(x, g, s, momentum_buffer=b, grad_avg=a,
    master_param=w)`` moves them; ``threads`` as for the step."""
    x, g = x.reshape(-1), g.reshape(-1)
    if isinstance(s, tuple):  # 8-bit state (fastrms.eight_bit.Codes): float32 params only
        parts = [(None, None) if c is None else (c.codes.reshape(-1), c.scales) for c in (s, b, a)]
        args = (x, g, *(p[0] for p in parts), *(p[1] for p in parts),
                np.array([0.5], dtype=np.float32))
        return lambda: _run(kernel, CODES, x.size, threads, args, args)
    half = x.dtype.itemsize == 2
    if half:
        x, g = x.view(np.uint16), g.view(np.uint16)
    k = np.array([0.5], dtype=np.float32 if half else x.dtype)
    kind = MASTER if w is not None else HALF if half else FLOAT
    args = (x, g, s, b, a, w, k) if kind == MASTER else (x, g, s, b, a, k)
    n = x.size
    return lambda: _run(kernel, kind, n, threads, args, args)


def grad_read(g, threads=None):
    """A callable that reads ``g``'s bytes once as ``inspect_grads``' loop does, without its math
    (``grad_stats.same_traffic``): whole rows of ``LANES`` float32 words, so a last partial row
    (fewer than 128 bytes) is left out; nothing to read below one row."""
    raw = g.reshape(-1).view(np.uint8)
    words = raw[:raw.size - raw.size % (4 * LANES)].view(np.float32)
    if not words.size:
        return lambda: None
    return lambda: _read_words(words, threads)
