"""Multi-tensor RMSProp loops: one compiled call updates a whole list of buffers.

The buffers reach the loop as a pointer table (int64 ``[n, 6]``: the data addresses of param, grad,
square_avg, momentum_buffer, grad_avg, master_param; 0 where absent) and a sizes array, as torch's
``multi_tensor_apply`` passes them on the GPU: Numba would compile a new loop for every length of
a tuple of arrays, and a typed List costs microseconds per element to build. The addresses are
turned back into arrays inside the loop (``_view``); the caller has checked every buffer (dtype,
shape, contiguity, no overlaps) and keeps them alive for the call.

As in ``kernels``, each mode tuple and kind of loop is its own Python function with its own
``__qualname__`` (numba issue 6845), the element math is ``fastrms.rule``'s, inlined, and there is
no ``fastmath``: results equal the single-buffer kernels and the NumPy reference bit for bit.
The parallel loop splits the list into chunks of at most ``CHUNK`` elements (a 10⁶-element tensor
next to a hundred small ones would otherwise leave all but one thread idle).
"""

import functools

import numba as nb
import numpy as np
from numba import types
from numba.extending import intrinsic, overload

from ..rounding import FLOAT, NEAREST
from .jit import compile_loop
from .kernels import _name, _scalar_tuple, specialised, sweep_for

# Columns of the pointer table (fastrms._buffers.NAMES' order).
PARAM, GRAD, SQUARE_AVG, MOMENTUM_BUFFER, GRAD_AVG, MASTER_PARAM = range(6)
CHUNK = 1 << 14  # elements per parallel work item: 64 KiB of float32, well above a task's cost


@intrinsic
def _pointer(typingctx, address, like):
    """The integer ``address`` as a pointer to ``like``'s dtype (what ``numba.carray`` takes)."""
    pointer_type = types.CPointer(like.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(pointer_type))

    return pointer_type(address, like), codegen


def _view(address, n, like):
    """A 1-D array of ``n`` elements at ``address``, or None when ``like`` is None (absent)."""


@overload(_view, inline="always")
def _view_impl(address, n, like):
    if isinstance(like, types.NoneType):
        return lambda address, n, like: None
    return lambda address, n, like: nb.carray(_pointer(address, like), n)


@nb.njit(inline="always")
def _views(row, start, n, likes):
    """The six buffers of one table row, ``n`` elements from element ``start`` on. ``likes``:
    an empty array per column giving its dtype (None: absent)."""
    like, s_like, b_like, a_like, w_like = likes
    return (_view(row[PARAM] + start * like.itemsize, n, like),
            _view(row[GRAD] + start * like.itemsize, n, like),
            _view(row[SQUARE_AVG] + start * s_like.itemsize, n, s_like),
            _view(row[MOMENTUM_BUFFER] + start * s_like.itemsize, n, b_like),
            _view(row[GRAD_AVG] + start * s_like.itemsize, n, a_like),
            _view(row[MASTER_PARAM] + start * s_like.itemsize, n, w_like))


def rmsprop_multi_kernel(modes, parallel, storage=(FLOAT, NEAREST)):
    """The loop over a pointer table for one mode tuple and ``storage`` (``kernels.sweep_for``).

    Serial: ``f(table, sizes, chunks, k, likes, key, offsets)`` walks the tensors in order
    (``chunks`` is unused). Parallel: the same signature, one prange item per row of ``chunks``
    (``[tensor, start, stop]``). ``likes``: empty arrays of the param's (uint16 for half params)
    and the state's dtype, then the state's or None for the momentum buffer, grad average and
    master (absent columns). ``offsets``: uint64, each tensor's counter for stochastic rounding.
    """
    return _multi_kernel(modes, parallel, storage)  # one cache entry, however it was called


@functools.lru_cache(maxsize=None)
def _multi_kernel(modes, parallel, storage):
    template = _parallel_loop if parallel else _serial_loop
    name = _name(f"multi_{'parallel' if parallel else 'serial'}", modes, storage)
    return compile_loop(specialised(template, name, SWEEP=sweep_for(storage), MODES=modes),
                        parallel)


SWEEP = MODES = None  # bound per variant by kernels.specialised


def _parallel_loop(table, sizes, chunks, k, likes, key, offsets):
    kt = _scalar_tuple(k)
    for c in nb.prange(chunks.shape[0]):
        # Views of just this chunk, so that the inner loop is the serial one (starting at 0): a
        # loop from chunks[c, 1] over whole-tensor views ran 4x slower here.
        j, start = chunks[c, 0], chunks[c, 1]
        x, g, s, b, a, w = _views(table[j], start, chunks[c, 2] - start, likes)
        SWEEP(x, g, s, b, a, w, kt, MODES, key, offsets[j] + np.uint64(start))


def _serial_loop(table, sizes, chunks, k, likes, key, offsets):
    kt = _scalar_tuple(k)
    for j in range(sizes.size):
        x, g, s, b, a, w = _views(table[j], 0, sizes[j], likes)
        SWEEP(x, g, s, b, a, w, kt, MODES, key, offsets[j])


@functools.lru_cache(maxsize=64)
def _chunks_of(sizes_key):
    sizes = np.frombuffer(sizes_key, dtype=np.int64)
    rows = [(j, start, min(start + CHUNK, n)) for j, n in enumerate(sizes.tolist())
            for start in range(0, n, CHUNK)]
    chunks = np.array(rows, dtype=np.int64).reshape(-1, 3)
    chunks.flags.writeable = False
    return chunks


def chunks_of(sizes):
    """``[tensor, start, stop]`` rows covering every element of the tensors of ``sizes``."""
    return _chunks_of(sizes.tobytes())
