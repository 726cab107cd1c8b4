"""``RMSpropState``: the optimizer's buffers, allocated like the params, saved with torch's keys."""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .dtypes import array_kind, is_bfloat16, numpy_dtype, state_dtype, torch_dtype
from .eight_bit import Codes, code_keys, is_eight_bit

STATE_KEYS = ("square_avg", "momentum_buffer", "grad_avg")
MASTER_KEY = "master_param"  # float32 master weights of half-precision params (master_weights=True)


@dataclass
class RMSpropState:
    """The state of one parameter buffer.

    ``square_avg`` always; ``momentum_buffer`` with momentum > 0; ``grad_avg`` when centered;
    ``step`` counts completed steps; ``master_param``, the float32 master weights of a
    half-precision param (``RMSprop(master_weights=True)``). The arrays are of the params' kind
    (NumPy, CuPy, torch), on their device, float32 for half-precision params and else in the
    params' dtype. With ``RMSprop(state_bits=8)`` the state buffers are ``fastrms.eight_bit.Codes``
    (uint8 codes and float32 scales) instead.
    """

    square_avg: Any
    momentum_buffer: Any = None
    grad_avg: Any = None
    step: int = 0
    master_param: Any = None

    def state_dict(self):
        """A snapshot with torch's key names, as NumPy arrays (``step`` a float32 scalar, as torch)."""
        d = {"step": np.array(self.step, dtype=np.float32)}
        for key in (*STATE_KEYS, MASTER_KEY):
            value = getattr(self, key)
            if isinstance(value, Codes):  # 8-bit: under keys of their own (eight_bit.code_keys)
                d.update(zip(code_keys(key), map(to_numpy, value)))
            elif value is not None:
                d[key] = to_numpy(value)
        return d

    @classmethod
    def from_state_dict(cls, d, like=None):
        """Rebuild a state from ``state_dict()`` output (or torch's per-param state).

        The arrays are copied: NumPy arrays by default, or arrays of ``like``'s kind and device,
        in the state dtype for ``like`` (float32 for half-precision params: torch keeps their
        state in the param dtype).
        """
        missing = {"step", "square_avg"} - set(d)
        if is_eight_bit(d):
            missing.discard("square_avg")
        if missing:
            raise KeyError(f"state dict lacks {', '.join(sorted(missing))}")
        step = float(to_numpy(d["step"]))
        if not math.isfinite(step) or step != int(step) or step < 0:
            raise ValueError(f"state dict's step must be a whole number >= 0, got {step}")
        dtype = None if like is None else state_dtype(like.dtype)
        arrays = {k: copy_like(d[k], like, dtype) for k in (*STATE_KEYS, MASTER_KEY)
                  if d.get(k) is not None}
        for key in STATE_KEYS:  # 8-bit buffers: codes and scales as they are
            if code_keys(key)[0] in d:
                arrays[key] = Codes(*(copy_like(d[k], like) for k in code_keys(key)))
        return cls(step=int(step), **arrays)


def _kind(x):
    return array_kind(x) or "numpy"


def full_like(param, fill, dtype):
    """A new buffer of ``param``'s shape, kind and device, holding ``fill``, of ``dtype`` (NumPy's,
    or torch's for a torch ``param``)."""
    kind = _kind(param)
    if kind == "torch":
        import torch

        return torch.full(tuple(param.shape), fill, dtype=torch_dtype(dtype), device=param.device)
    if kind == "cupy":
        import cupy

        with param.device:
            return cupy.full(param.shape, fill, dtype=dtype)
    return np.full(np.shape(param), fill, dtype=dtype)


def widened_copy(param):
    """A float32 copy of a half-precision ``param`` (exact), of its kind and on its device: the
    master weights of ``RMSprop(master_weights=True)``."""
    kind = _kind(param)
    if kind == "torch":
        return param.detach().float().contiguous()  # .float() copies a half tensor
    return param.astype(np.float32, order="C")


def to_numpy(x):
    """A NumPy copy of an array of any kind."""
    kind = _kind(x)
    if kind == "torch":
        x = x.detach().cpu()
        if is_bfloat16(x.dtype):  # torch hands NumPy no bfloat16: widen (exact) to float32
            x = x.float()
        return x.numpy().copy()
    if kind == "cupy":
        return np.ascontiguousarray(x.get())
    return np.array(x, order="C")


def copy_like(value, like, dtype=None):
    """A C-contiguous copy of ``value`` of ``like``'s kind and device (NumPy when ``like`` is
    None), cast to ``dtype`` (NumPy's or torch's) when given."""
    host = to_numpy(value)
    if dtype is not None:
        host = host.astype(numpy_dtype(dtype))
    kind = _kind(like) if like is not None else "numpy"
    if kind == "torch":
        import torch

        return torch.from_numpy(host).to(like.device)
    if kind == "cupy":
        import cupy

        with like.device:
            return cupy.asarray(host)
    return host
