"""Multi-tensor RMSProp loops: one compiled call updates a whole list of buffers.

The buffers reach the loop as a pointer table (int64 ``[n, 5]``: the data addresses of param, grad,
square_avg, momentum_buffer, grad_avg; 0 where absent) and a sizes array, as torch's
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

from .jit import compile_loop
from .kernels import _scalar_tuple, sweep

# Columns of the pointer table.
PARAM, GRAD, SQUARE_AVG, MOMENTUM_BUFFER, GRAD_AVG = range(5)
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
def _views(row, skip, n, like, b_like, a_like):
    """The five buffers of one table row, ``n`` elements from byte ``skip`` on."""
    return (_view(row[PARAM] + skip, n, like), _view(row[GRAD] + skip, n, like),
            _view(row[SQUARE_AVG] + skip, n, like), _view(row[MOMENTUM_BUFFER] + skip, n, b_like),
            _view(row[GRAD_AVG] + skip, n, a_like))


@functools.lru_cache(maxsize=None)
def rmsprop_multi_kernel(modes, parallel):
    """The loop over a pointer table for one mode tuple.

    Serial: ``f(table, sizes, chunks, k, like, b_like, a_like)`` walks the tensors in order
    (``chunks`` is unused). Parallel: the same signature, one prange item per row of ``chunks``
    (``[tensor, start, stop]``). ``like`` is an empty array of the dtype; ``b_like`` and ``a_like``
    are the same, or None where the rule has no momentum buffer / grad average.
    """
    if parallel:
        def loop(table, sizes, chunks, k, like, b_like, a_like):
            kt = _scalar_tuple(k)
            for c in nb.prange(chunks.shape[0]):
                # Views of just this chunk, so that the inner loop is the serial one (starting at
                # 0): a loop from chunks[c, 1] over whole-tensor views ran 4x slower here.
                n = chunks[c, 2] - chunks[c, 1]
                skip = chunks[c, 1] * like.itemsize
                x, g, s, b, a = _views(table[chunks[c, 0]], skip, n, like, b_like, a_like)
                sweep(x, g, s, b, a, kt, modes)
    else:
        def loop(table, sizes, chunks, k, like, b_like, a_like):
            kt = _scalar_tuple(k)
            for j in range(sizes.size):
                x, g, s, b, a = _views(table[j], 0, sizes[j], like, b_like, a_like)
                sweep(x, g, s, b, a, kt, modes)

    kind = "parallel" if parallel else "serial"
    loop.__name__ = loop.__qualname__ = f"rmsprop_multi_{kind}_" + "_".join(map(str, modes))
    return compile_loop(loop, parallel)


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
