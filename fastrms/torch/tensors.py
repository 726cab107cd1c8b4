"""Tensors as what ``fastrms.functional.apply`` takes, and the checks on params and gradients.

A CPU tensor becomes a NumPy array over its own memory, a CUDA tensor a CuPy array over its own
memory (``fastrms.cuda.arrays``), launched on torch's current stream; complex tensors go as their
real views (re and im as two reals), as torch treats them.
"""

import torch

from ..native import _bfloat16_numpy, cuda_arrays

_HOST_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64,
                torch.complex128)
HALF_DTYPES = (torch.float16, torch.bfloat16)


def _checked_grad(p):
    return _check_strided(p.grad)


def _check_strided(grad):
    if grad.layout is not torch.strided:  # sparse (COO, CSR, ...) layouts
        raise RuntimeError("RMSprop does not support sparse gradients")
    return grad


def _check_dtype(p):
    if p.device.type == "cpu" and p.dtype not in _HOST_DTYPES:
        raise TypeError(f"fastrms.torch.RMSprop updates float16, bfloat16, float32, float64, "
                        f"complex64 and complex128 CPU params; got a {p.dtype} param of shape "
                        f"{tuple(p.shape)}")


def _dense(t):
    """Whether ``t``'s elements fill one gapless run of memory, each once, in any order of
    dimensions (contiguous, channels_last, a transpose...): an elementwise update can then run
    over that run as a flat buffer, if grad and state have the same strides."""
    if t.numel() == 0:
        return True
    expected = 1
    for size, stride in sorted(((n, s) for n, s in zip(t.shape, t.stride()) if n != 1),
                               key=lambda pair: pair[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def _flat_run(t):
    """A dense tensor's memory as a 1-D tensor (``_dense``), complex as real pairs."""
    t = _real(t)
    return t.as_strided((t.numel(),), (1,), t.storage_offset())


def _real(t):
    """``t`` detached, complex tensors as their real view (torch's own treatment)."""
    t = t.detach()
    return torch.view_as_real(t) if t.is_complex() else t


def _array_of(t):
    """What ``apply`` takes for tensor ``t``: a NumPy (CPU) or CuPy (CUDA) array over its memory."""
    return _host_array(t) if t.device.type == "cpu" else _device_array(t)


def _host_array(t):
    """A NumPy array over a CPU tensor's own memory (complex as real pairs; bfloat16 as
    ml_dtypes')."""
    if t.dtype is torch.bfloat16:
        return _bfloat16_numpy(t, "param")
    return _real(t).numpy()


def _device_array(t):
    """A CuPy array over a CUDA tensor's own memory (complex as real pairs), on which fastrms
    launches on torch's current stream; the tensor itself where CuPy cannot load (the step's
    dispatch then says why it cannot run)."""
    if t.device.type != "cuda":  # meta, xpu, mps...: refused, by name, by fastrms.native
        return _real(t)
    try:
        arrays = cuda_arrays()
    except Exception:  # noqa: BLE001 - CuPy missing or broken: reported by dispatch
        return _real(t)
    return arrays.from_torch(_real(t))
