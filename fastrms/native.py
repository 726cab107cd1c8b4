"""The caller's buffers as native arrays: NumPy on the host, CuPy on a GPU, zero-copy.

Anything exposing ``__array_interface__``, ``__cuda_array_interface__`` or DLPack is accepted:
host buffers become NumPy arrays, GPU buffers CuPy arrays (through ``fastrms.cuda.arrays``,
imported only then). ``fastrms.validate`` checks them before anything is written.
"""

import functools
import sys

import numpy as np

from ._buffers import HOST
from .dtypes import bfloat16_dtype, is_bfloat16
from .validate import refuse_tracked

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
    if getattr(x, "requires_grad", False):  # a torch tensor in autograd's graph
        refuse_tracked(x, name)
        x = x.detach()  # its data, as torch's in-place ops under no_grad see it
    if getattr(x, "is_cuda", False) is True:  # a torch CUDA tensor: wrapped from its metadata
        return cuda_arrays().as_cupy(x, name)
    if hasattr(x, "__cuda_array_interface__"):
        return cuda_arrays().as_cupy(x, name)
    if isinstance(x, np.ndarray) or hasattr(x, "__array_interface__"):
        return np.asarray(x), HOST
    if getattr(getattr(x, "device", None), "type", None) == "cpu" and hasattr(x, "numpy"):
        # A torch CPU tensor: .numpy() is zero-copy and writeable (np.from_dlpack is read-only
        # before NumPy 2.2.5).
        if is_bfloat16(x.dtype):  # torch hands NumPy no bfloat16: its bits, as ml_dtypes'
            return _bfloat16_numpy(x, name), HOST
        try:
            return x.numpy(), HOST
        except (TypeError, RuntimeError) as exc:  # a dtype NumPy lacks
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


def _bfloat16_numpy(tensor, name):
    """A bfloat16 torch CPU tensor as a writeable ml_dtypes bfloat16 array over its memory."""
    bfloat16 = bfloat16_dtype()
    if bfloat16 is None:
        raise TypeError(f"{name}: bfloat16 tensors need the ml_dtypes package (pip install ml_dtypes)")
    import torch  # the tensor's own library, imported already

    return tensor.view(torch.int16).numpy().view(bfloat16)


@functools.cache
def cuda_arrays():
    from .cuda import arrays  # imports CuPy: only once a buffer is on a GPU

    return arrays
