"""GPU buffers as CuPy arrays over their own memory (zero-copy), and where they live.

Imported only when a buffer is on a GPU (``fastrms.native``), so CuPy is imported then.
torch CUDA tensors are wrapped from their own metadata (``data_ptr``, strides, device): that needs
no device call, keeps bfloat16 (which ``__cuda_array_interface__`` cannot name), and marks the
array as torch's, so that the step is launched on torch's current stream.
"""

import sys

import cupy
import numpy as np

from ..dtypes import numpy_dtype as torch_dtype_to_numpy  # torch dtype -> NumPy's (bfloat16 too)
from ..validate import refuse_read_only_interface


class TorchCudaArray(cupy.ndarray):
    """A CuPy array over a torch CUDA tensor's memory (kept alive by the array)."""


def as_cupy(x, name):
    """``(array, "cuda:N")`` for ``x``: a CuPy array, torch CUDA tensor, anything with
    ``__cuda_array_interface__`` or a CUDA DLPack capsule. ``name`` is the argument's, for errors.
    """
    if isinstance(x, cupy.ndarray):
        array = x
    elif _is_torch_tensor(x):
        array = from_torch(x)
    elif hasattr(x, "__cuda_array_interface__"):
        _, read_only = x.__cuda_array_interface__["data"]
        if read_only:  # CuPy arrays carry no writeable flag for fastrms.validate to see
            refuse_read_only_interface(name)
        array = cupy.asarray(x)  # zero-copy; CuPy honours the interface's stream (v3)
    else:
        array = cupy.from_dlpack(x)
    return array, f"cuda:{array.device.id}"


def launch_stream(array):
    """The stream a step on ``array`` goes to: torch's current one for torch tensors, else CuPy's."""
    device = array.device.id
    if isinstance(array, TorchCudaArray):
        import torch

        return _from_torch_stream(torch.cuda.current_stream(device), device)
    return cupy.cuda.get_current_stream(device)


def cupy_stream(stream, device):
    """CuPy's handle on ``stream`` for a launch on device ``device``, for use inside
    ``cupy.cuda.Device(device)``: a CuPy stream as it is, a torch CUDA stream as ``launch_stream``
    takes torch's, and None as CuPy's current stream there."""
    if stream is None:
        return cupy.cuda.get_current_stream(device)
    return _from_torch_stream(stream, device) if hasattr(stream, "cuda_stream") else stream


def _from_torch_stream(stream, device):
    """CuPy's handle on a torch stream, for use inside ``cupy.cuda.Device(device)``: through the
    CUDA stream protocol where both sides have it (CuPy 14 deprecates ExternalStream)."""
    if hasattr(cupy.cuda.Stream, "from_external") and hasattr(stream, "__cuda_stream__"):
        return cupy.cuda.Stream.from_external(stream)
    return cupy.cuda.ExternalStream(stream.cuda_stream, device)


def _is_torch_tensor(x):
    torch = sys.modules.get("torch")  # never import torch for a non-torch array
    return torch is not None and isinstance(x, torch.Tensor)


def from_torch(tensor):
    """A ``TorchCudaArray`` over ``tensor``'s memory."""
    dtype = torch_dtype_to_numpy(tensor.dtype)
    strides = tuple(s * dtype.itemsize for s in tensor.stride())
    return wrap(tensor.data_ptr(), tuple(tensor.shape), strides, dtype, tensor.device.index,
                owner=tensor, cls=TorchCudaArray)


def wrap(address, shape, strides, dtype, device_id, owner, cls=cupy.ndarray):
    """A ``cls`` array over device memory at ``address`` (strides in bytes), owned by ``owner``.

    Builds the array without a device call: the memory is described, not queried.
    """
    dtype = np.dtype(dtype)
    if 0 in shape:
        low = high = 0
    else:
        low = sum((n - 1) * s for n, s in zip(shape, strides) if s < 0)
        high = sum((n - 1) * s for n, s in zip(shape, strides) if s > 0) + dtype.itemsize
    memory = cupy.cuda.UnownedMemory(address + low, high - low, owner, device_id=device_id)
    return cls(shape, dtype, cupy.cuda.MemoryPointer(memory, -low), strides)
