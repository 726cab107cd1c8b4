"""dtypes, written once: the optional bfloat16, what kind of array an object is, torch's dtypes as
NumPy's and back, and the state dtype of a param dtype.

Importing this module imports NumPy only. ml_dtypes (NumPy's bfloat16, the one torch and JAX
share) is imported the first time bfloat16 is asked for: it takes a while to import, and
``import fastrms`` must stay light. torch and CuPy are never imported to recognise their arrays or
dtypes (by the module of their type); torch is imported only to name a torch dtype, for a caller
that holds torch tensors, hence has torch imported already.
"""

import numpy as np

KINDS = ("numpy", "cupy", "torch")


def bfloat16_dtype():
    """NumPy's bfloat16 dtype (from ml_dtypes), or None where ml_dtypes is not installed.

    Not memoized: once imported, ml_dtypes is a lookup in ``sys.modules``, and an install after
    the first look is seen.
    """
    try:
        from ml_dtypes import bfloat16
    except ImportError:  # bfloat16 buffers are then not accepted
        return None
    return np.dtype(bfloat16)


def __getattr__(name):
    """``bfloat16``: ml_dtypes' scalar type (``np.dtype(bfloat16)`` is NumPy's bfloat16), or None
    where ml_dtypes is not installed; imported on first use (``from fastrms.dtypes import
    bfloat16`` imports it then)."""
    if name == "bfloat16":
        dtype = bfloat16_dtype()
        return None if dtype is None else dtype.type
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def array_kind(x):
    """"numpy", "cupy" or "torch": the library of ``x``'s type, by its module (importing none);
    None for anything else."""
    module = type(x).__module__.split(".")[0]
    return module if module in KINDS else None


def is_torch_dtype(dtype):
    """Whether ``dtype`` is a ``torch.dtype`` (told without importing torch)."""
    return type(dtype).__module__.startswith("torch")


def is_bfloat16(dtype):
    """Whether ``dtype`` (NumPy's, ml_dtypes' or torch's) is bfloat16. torch hands no bfloat16
    tensor to NumPy (``Tensor.numpy()`` refuses it, ml_dtypes or not)."""
    return str(dtype).removeprefix("torch.") == "bfloat16"


def numpy_dtype(dtype):
    """``dtype`` as a NumPy dtype: torch's dtypes by name, anything else as ``np.dtype`` takes it.

    torch's bfloat16 (and any other dtype ml_dtypes names) needs ml_dtypes; a torch dtype that
    NumPy cannot name is a TypeError that says so.
    """
    if not is_torch_dtype(dtype):
        return np.dtype(dtype)
    name = str(dtype).removeprefix("torch.")
    if name == "bfloat16":
        bfloat16 = bfloat16_dtype()
        if bfloat16 is None:
            raise TypeError("bfloat16 tensors need the ml_dtypes package (pip install ml_dtypes)")
        return bfloat16
    try:
        return np.dtype(name)
    except TypeError:
        pass
    bfloat16_dtype()  # ml_dtypes, once imported, names its dtypes (float8_e4m3fn, ...) for NumPy
    try:
        return np.dtype(name)
    except TypeError:
        raise TypeError(f"torch dtype {dtype} has no NumPy equivalent") from None


def torch_dtype(dtype):
    """``dtype`` as a ``torch.dtype``: torch's own as they are, NumPy's (or what ``np.dtype``
    takes) by name. Imports torch: call it only for torch tensors."""
    if is_torch_dtype(dtype):
        return dtype
    import torch

    return getattr(torch, np.dtype(dtype).name)


def state_dtype(param_dtype):
    """The state (and compute) dtype: float32 for half-precision params, else the params' own.

    Given in kind: a torch dtype gives a torch dtype (torch's bfloat16 needs no ml_dtypes), and
    anything else (NumPy's dtypes, what ``np.dtype`` takes) a NumPy dtype.
    """
    if is_torch_dtype(param_dtype):
        dtype, float32 = param_dtype, torch_dtype(np.float32)
    else:
        dtype, float32 = np.dtype(param_dtype), np.dtype(np.float32)
    return float32 if dtype.itemsize < 4 else dtype
