"""``inspect_grads``: one read pass over the gradients that gives what loss scaling and gradient
clipping need before a step: whether any unscaled grad is not finite, and the global L2 norm of
the unscaled grads (docs/grad-stats.md).

The order of every operation is fixed, so the result has the same bits on every backend, for any
thread count or launch configuration. It is written once here, as the NumPy reference
(``reference_total``); the Numba loops (``fastrms.cpu.grad_stats``) and the CUDA kernels
(``fastrms/cuda/grad_stats.cu``) compute the same operations in the same order:

1. the unscaled value of an element g: ``v = float32(float32(g) * inv)`` for float16, bfloat16
   and float32 grads, with ``inv = float32(1 / grad_scale)`` (the reciprocal in float64, rounded
   once: torch's ``scale.double().reciprocal().float()``); ``v = g * (1 / grad_scale)`` in
   float64 for float64 grads. Half grads widen to float32 exactly.
2. its square in float64: ``q = double(v) * double(v)`` (exact for float32 v).
3. each buffer in chunks of ``CHUNK`` elements (the last may be shorter); in a chunk, lane l of
   ``LANES`` sums, in float64 from 0.0, the q of elements l, l + 32, l + 64, ... in that order;
   then lane[l] += lane[l + w] for l < w, w = 16, 8, 4, 2, 1; the chunk's partial is lane 0.
4. the partials of all chunks of all buffers, in list order and chunk order, by a pairwise tree:
   while more than one is left, append 0.0 if their count is odd, then p[i] = p[2i] + p[2i+1].
   The total is the last one (0.0 without elements).
5. ``norm = sqrt(total)`` (NaN as the one quiet NaN 0x7ff8000000000000), ``found_inf = not
   isfinite(total)``.

Adding 0.0 to a sum of squares changes no bit, so a missing element (past a buffer's end) or a
padding partial may be added or left out alike: that freedom is what lets every backend cut the
work its own way and still agree.
"""

import math

import numpy as np

from . import dispatch
from ._buffers import HOST
from .dtypes import is_bfloat16
from .native import native
from .threads import check_count
from .validate import check_real

CHUNK = 4096  # elements per chunk: one partial each
LANES = 32  # float64 lane sums per chunk
_BLOCK = 256  # chunks the reference handles at once (bounds its temporary memory)


def inspect_grads(grads, grad_scale=1.0, backend="auto", threads=None):
    """``(found_inf, norm)`` of the unscaled grads ``grads / grad_scale``, in one read pass.

    ``grads``: one array or a list or tuple of arrays, each C-contiguous, of any shape (empty ones
    allowed), of float16, bfloat16, float32 or float64 (mixed dtypes allowed), all in host memory
    or all on one GPU: NumPy (bfloat16 from ml_dtypes), torch CPU or CUDA tensors (bfloat16
    too), CuPy arrays, anything with ``__array_interface__``, ``__cuda_array_interface__`` or
    DLPack. They are only read. ``grad_scale``: the loss scale the grads carry, a real finite
    number > 0; each grad is unscaled as torch's GradScaler does, by ``float32(1 / grad_scale)``
    (float64 grads by ``1 / grad_scale`` in float64).

    ``found_inf``: whether any unscaled grad is inf or NaN (a finite grad that overflows when
    unscaled counts; so, for float64 grads, does a square that overflows float64). ``norm``: the
    L2 norm of all the unscaled grads together, summed in float64 in a fixed order (the module
    docstring): the same bits on every backend and for any number of threads, within about
    1e-14 relative of an exact norm. Host buffers give a Python ``(bool, float)``; GPU buffers
    give two 0-d CuPy arrays on their device, ``found_inf`` as float32 1.0 or 0.0 (as
    GradScaler keeps it) and ``norm`` as float64, computed on the framework's current stream
    without waiting for it. ``backend``: "auto" (Numba for host buffers, CuPy for GPU ones),
    "numba", "numpy" (the reference) or "cupy"; ``threads``: as for ``rmsprop_update``.
    """
    inv32, inv64 = unscale_factors(grad_scale)
    if threads is not None:
        check_count(threads)
    arrays, place = _natives(grads)
    module = dispatch.resolve(backend, HOST if place is None else place)
    if module.PLACE == "cuda":
        from .cuda import grad_stats as cuda_stats

        return cuda_stats.inspect(arrays, inv32, inv64)
    if module.NAME == "numba":
        from .cpu import grad_stats as cpu_stats

        total = pairwise_total(cpu_stats.chunk_partials(arrays, inv32, inv64, threads))
    else:
        total = reference_total(arrays, inv32, inv64)
    return finish(total)


def unscale_factors(grad_scale):
    """``(inv32, inv64)``: ``1 / grad_scale`` in float64, and rounded once to float32; a
    TypeError or ValueError naming grad_scale unless it is a real, finite number > 0."""
    check_real("grad_scale", grad_scale, positive=True)
    inv64 = 1.0 / float(grad_scale)
    return np.float32(inv64), inv64


def _natives(grads):
    """The grads as native arrays (NumPy or CuPy), checked, and the one place they live (None for
    an empty list)."""
    listed = isinstance(grads, (list, tuple))
    arrays, place = [], None
    for j, g in enumerate(grads if listed else [grads]):
        name = f"grads[{j}]" if listed else "grads"
        a, where = _native(g, name)
        if place is None:
            place = where
        elif where != place:
            raise ValueError(f"{name} lives on {where} but grads[0] on {place}: all grads of one "
                             "call must live in one place")
        dtype = a.dtype
        if dtype not in (np.float16, np.float32, np.float64) and not is_bfloat16(dtype):
            raise TypeError(f"{name} has dtype {dtype}; grads must be float16, bfloat16, float32 "
                            "or float64")
        if not a.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous")
        arrays.append(a)
    return arrays, place


def _native(g, name):
    """One grad as a NumPy or CuPy array over its memory (it is only read)."""
    if getattr(g, "requires_grad", False):  # a torch tensor in autograd's graph: only read
        g = g.detach()
    try:
        return native(g, name)
    except ValueError as exc:  # a read-only GPU buffer: refused for writing, fine for reading
        if "read-only" not in str(exc):
            raise
        return native(g, "grad")


# ---------------------------------------------------------------------------------------------
# The reference: the order of the module docstring on NumPy arrays.

def squares(g, inv32, inv64):
    """Steps 1 and 2: q of every element of ``g``, flat, in float64."""
    with np.errstate(over="ignore", invalid="ignore"):
        if g.dtype == np.float64:
            v = g.reshape(-1) * inv64
        else:  # float16, bfloat16: widened exactly
            v = g.reshape(-1).astype(np.float32) * inv32
        v = v.astype(np.float64)
        return v * v


def chunk_partials(g, inv32, inv64):
    """Step 3: the partial of every chunk of ``g``, in chunk order (float64)."""
    q = squares(g, inv32, inv64)
    count = -(-q.size // CHUNK)
    out = np.empty(count)
    for first in range(0, count, _BLOCK):
        block = q[first * CHUNK:(first + _BLOCK) * CHUNK]
        rows = -(-block.size // CHUNK)
        padded = np.zeros(rows * CHUNK)  # missing elements: q = 0.0 adds nothing
        padded[:block.size] = block
        padded = padded.reshape(rows, CHUNK // LANES, LANES)
        lanes = np.zeros((rows, LANES))
        for k in range(CHUNK // LANES):  # one add per element, in increasing order
            lanes = lanes + padded[:, k]
        w = LANES // 2
        while w >= 1:
            lanes[:, :w] = lanes[:, :w] + lanes[:, w:2 * w]
            w //= 2
        out[first:first + rows] = lanes[:, 0]
    return out


def pairwise_total(partials):
    """Step 4: the pairwise tree over ``partials`` (0.0 when there are none)."""
    p = np.asarray(partials, dtype=np.float64)
    if p.size == 0:
        return 0.0
    while p.size > 1:
        if p.size % 2:
            p = np.append(p, 0.0)
        p = p[0::2] + p[1::2]
    return float(p[0])


def reference_total(arrays, inv32, inv64):
    """Steps 1 to 4 over a list of NumPy arrays: the total."""
    partials = [chunk_partials(g, inv32, inv64) for g in arrays if g.size]
    return pairwise_total(np.concatenate(partials) if partials else [])


def finish(total):
    """Step 5: ``(found_inf, norm)`` from the total."""
    return (not math.isfinite(total)), (math.nan if math.isnan(total) else math.sqrt(total))
