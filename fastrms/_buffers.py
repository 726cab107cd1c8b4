"""Turning the caller's buffers into native arrays, and refusing what cannot be updated in place.

Anything exposing ``__array_interface__``, ``__cuda_array_interface__`` or DLPack is accepted
zero-copy: host buffers become NumPy arrays, GPU buffers CuPy arrays (through
``fastrms.cuda.arrays``). Every check runs before anything is written.
"""

import functools
import sys
import weakref
from typing import Any, NamedTuple

import numpy as np

HOST = "host"


class Buffers(NamedTuple):
    """The buffers of one step, by name: what travels from the API to a backend.

    For a single step each field is an array (``None`` for an absent state buffer); for a
    multi-tensor step each field is a list of arrays, one per tensor (``None`` for an absent
    column). ``grad`` is the only buffer that is read and never written.
    """

    param: Any
    grad: Any
    square_avg: Any
    momentum_buffer: Any = None
    grad_avg: Any = None


NAMES = Buffers._fields
_DLPACK_CPU, _DLPACK_CUDA = 1, 2


def native(x, name):
    """``(array, place)``: a NumPy or CuPy array over ``x``'s own memory, and where it lives."""
    if type(x) is np.ndarray:
        return x, HOST
    cupy = sys.modules.get("cupy")  # never import CuPy for a host buffer
    if cupy is not None and isinstance(x, cupy.ndarray):
        # Already native. (Asking a CuPy array for __cuda_array_interface__ queries the device's
        # current stream: microseconds per buffer and step.)
        return cuda_arrays().as_cupy(x, name)
    if getattr(x, "requires_grad", False):  # a torch leaf: its data, as torch's in-place ops see it
        x = x.detach()
    if getattr(x, "is_cuda", False) is True:  # a torch CUDA tensor: wrapped from its metadata
        return cuda_arrays().as_cupy(x, name)
    if hasattr(x, "__cuda_array_interface__"):
        return cuda_arrays().as_cupy(x, name)
    if isinstance(x, np.ndarray) or hasattr(x, "__array_interface__"):
        return np.asarray(x), HOST
    if getattr(getattr(x, "device", None), "type", None) == "cpu" and hasattr(x, "numpy"):
        # A torch CPU tensor: .numpy() is zero-copy and writeable (np.from_dlpack is read-only
        # before NumPy 2.2.5).
        try:
            return x.numpy(), HOST
        except (TypeError, RuntimeError) as exc:  # e.g. bfloat16, which NumPy lacks
            raise TypeError(f"{name}: {exc}") from None
    if hasattr(x, "__dlpack_device__"):
        kind, device = x.__dlpack_device__()
        if kind == _DLPACK_CPU:
            return np.from_dlpack(x), HOST
        if kind == _DLPACK_CUDA:
            return cuda_arrays().as_cupy(x, name)
        raise ValueError(f"{name} lives on DLPack device type {int(kind)}, which fastrms cannot update")
    raise TypeError(
        f"{name} must be an array (NumPy, CuPy, torch, or anything with __array_interface__, "
        f"__cuda_array_interface__ or DLPack), got {type(x).__name__}"
    )


@functools.cache
def cuda_arrays():
    from .cuda import arrays  # imports CuPy: only once a buffer is on a GPU

    return arrays


def check(backend, rule, arrays):
    """Refuse, naming the argument, whatever ``backend`` cannot update in place.

    ``arrays`` holds native arrays in the order of ``NAMES`` (``None`` for absent buffers).
    """
    param = arrays[0]
    if param.dtype not in backend.DTYPES:
        refuse_dtype(backend, "param", param.dtype)
    state_dtype = rule.state_dtype(param.dtype)
    for i, a in enumerate(arrays):
        if a is None:
            continue
        want = param.dtype if i < 2 else state_dtype
        flags = a.flags
        # One combined test on the hot path; ``refuse`` works out what is wrong.
        if a.dtype != want or a.shape != param.shape or not flags.c_contiguous \
                or (i != 1 and not getattr(flags, "writeable", True)):
            refuse(NAMES[i], a, want, param.dtype, param.shape, written=i != 1)
    if param.size:
        _check_disjoint(arrays)


def refuse_dtype(backend, name, dtype):
    supported = ", ".join(sorted(d.name for d in backend.DTYPES))
    raise TypeError(f"{name} has dtype {dtype}, which backend {backend.NAME!r} does not support "
                    f"(it takes {supported})")


def refuse(name, a, want, param_dtype, shape, written):
    """Raise the error that says what is wrong with buffer ``name``."""
    if a.dtype != want:
        raise TypeError(f"{name} has dtype {a.dtype}, expected {want} for {param_dtype} params")
    if a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}, expected the param's shape {shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (fastrms updates buffers in place)")
    # CuPy arrays have no writeable flag; fastrms.cuda.arrays refuses read-only GPU buffers.
    if written and not getattr(a.flags, "writeable", True):
        raise ValueError(f"{name} is read-only, but fastrms updates it in place")


# Sets of buffers found disjoint, keyed by their ids and held weakly: a training loop passes the
# same few sets every step (a benchmark alternating two grads, two sets), and an ndarray's byte
# range cannot change while the object lives, so the pairwise test (a third of a small call's
# cost) runs once per set. A dead weakref (an id reused by a new array) is a miss.
_disjoint = {}
_DISJOINT_KEPT = 16


def _check_disjoint(arrays):
    key = tuple(map(id, arrays))
    refs = _disjoint.get(key)
    if refs is not None and all(r is None or r() is not None for r in refs):
        return
    # C-contiguous buffers overlap exactly when their byte ranges do, so the cheap bounds test of
    # may_share_memory is exact here. grad is only read, but must not overlap a written buffer.
    present = [(n, a) for n, a in zip(NAMES, arrays) if a is not None]
    may_share = np.may_share_memory if isinstance(arrays[0], np.ndarray) else _cupy_may_share
    for i, (name_i, a_i) in enumerate(present):
        for name_j, a_j in present[i + 1:]:
            if a_i is a_j or may_share(a_i, a_j):
                raise ValueError(f"{name_i} and {name_j} overlap in memory; each must be its own buffer")
    if isinstance(arrays[0], np.ndarray):
        if len(_disjoint) >= _DISJOINT_KEPT:
            _disjoint.clear()
        _disjoint[key] = tuple(None if a is None else weakref.ref(a) for a in arrays)


def _cupy_may_share(a, b):
    from .cuda import arrays

    return arrays.may_share_memory(a, b)
