"""``state_bits=8`` in ``fastrms.torch.RMSprop``: each param's 8-bit state, its step, and the
state-dict conversions (docs/eight-bit.md).

A param with 8-bit state (``eight_bit.takes_codes``: at least ``threshold`` values, float32 or
half, contiguous) keeps ``"step"`` and, per buffer, ``"<name>_codes"`` (uint8, the param's shape)
and ``"<name>_scales"`` (float32, one per block): keys torch.optim.RMSprop does not know, so it
refuses such state (KeyError at its step) rather than stepping on the codes as float32. Float32
buffers found under torch's names (a float32 state dict just loaded) are quantised at the first
step. Every other param keeps torch's float state (``param_state``) and steps in the group's
plan (``step_plan``); each param with 8-bit state in a fused call of its own
(``eight_bit.apply8``), or with ``flatten=True`` in one over a flat buffer (``flat_group8``).
"""

import numpy as np
import torch

from .. import eight_bit
from ..eight_bit import Codes, apply8, code_keys
from ..rounding import offset_of
from .param_state import MASTER, STATE_BUFFERS, _get_scalar_dtype, _has_master, saved_states
from .tensors import _check_dtype, _checked_grad


_CODED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # eight_bit.PARAM_DTYPES


def takes_codes(p, threshold, flat=False):
    """Whether param ``p`` keeps 8-bit state (``eight_bit.takes_codes``, and contiguous, as
    every param is once ``flat``tened)."""
    return p.numel() >= threshold and p.dtype in _CODED_DTYPES and (flat or p.is_contiguous())


def _host(t):
    """A CPU tensor as the NumPy array over its memory (what ``fastrms.native`` would make, at a
    fraction of its cost per call); any other tensor as it is."""
    if t.device.type == "cpu" and t.dtype != torch.bfloat16:
        return t.detach().numpy()
    return t


def _wanted(group):
    return dict(zip(STATE_BUFFERS, (True, group["momentum"] > 0, group["centered"])))


def state8_of(state, p, group, master_weights):
    """``self.state[p]`` for a param with 8-bit state: created as torch creates its state (zero
    buffers), with float32 buffers under torch's names quantised (``eight_bit.eight_bit_state``)."""
    if len(state) == 0:
        state["step"] = torch.zeros((), dtype=_get_scalar_dtype())
    if not torch.is_tensor(state["step"]):
        state["step"] = torch.tensor(float(state["step"]), dtype=_get_scalar_dtype())
    wanted = _wanted(group)
    floats = {name: state.pop(name).detach().float().cpu().numpy() for name in STATE_BUFFERS
              if name in state}
    if floats:  # loaded from a float32 state dict
        for key, value in eight_bit.eight_bit_state(floats).items():
            state[key] = torch.from_numpy(np.ascontiguousarray(value)).to(p.device)
    for name in STATE_BUFFERS:
        codes_key, scales_key = code_keys(name)
        if wanted[name] and codes_key not in state:
            codes, scales = eight_bit.filled(tuple(p.shape), 0.0, name)
            state[codes_key] = torch.from_numpy(codes).to(p.device)
            state[scales_key] = torch.from_numpy(scales).to(p.device)
    if _has_master(master_weights, p) and state.get(MASTER) is None:
        state[MASTER] = p.detach().float().contiguous()
    return state


def step_eight_bit(optimizer, group, rule, threads, extras, step_increment=None):
    """One step of ``group``'s params with 8-bit state (``takes_codes``; the step plan steps the
    others): a fused call per param with a grad, each checked before it writes (an error leaves
    the earlier params of the step stepped). ``step_increment``: see ``GroupPlan.run``."""
    written = []
    wanted = _wanted(group)
    for position, p in enumerate(group["params"]):
        if p.grad is None or not takes_codes(p, optimizer.threshold):
            continue
        _checked_grad(p)
        _check_dtype(p)
        state = state8_of(optimizer.state[p], p, group, optimizer.master_weights)
        buffers = [Codes(*(_host(state[key]) for key in code_keys(name))) if on else None
                   for name, on in wanted.items()]
        master = _host(state[MASTER]) if _has_master(optimizer.master_weights, p) else None
        # torch's rule has no bias correction: the kernel does not read the step count
        apply8(rule, _host(p), _host(p.grad), *buffers, backend=optimizer.backend,
               threads=threads, master_param=master, extras=extras._replace(
                   offsets=offset_of(position)))
        state["step"].add_(1 if step_increment is None else step_increment.to("cpu"))
        written.append(p)
    if written:
        torch.autograd.graph.increment_version(written)


def float32_state_dict(state_dict):
    """A copy of a ``state_dict()`` with its 8-bit state decoded to float32 buffers under
    torch's names: what torch.optim.RMSprop, and fastrms with ``state_bits=32``, load."""
    out = {**state_dict, "state": {}}
    for index, state in state_dict["state"].items():
        if not eight_bit.is_eight_bit(state):
            out["state"][index] = dict(state)
            continue
        host = {key: (value.detach().cpu().numpy() if key in eight_bit.CODE_KEYS else value)
                for key, value in state.items()}
        device = state[code_keys("square_avg")[0]].device
        out["state"][index] = {key: (torch.from_numpy(np.ascontiguousarray(value)).to(device)
                                     if key in STATE_BUFFERS else value)
                               for key, value in eight_bit.float32_state(host).items()}
    info = dict(state_dict.get("fastrms", {}))
    info.pop("state_bits", None)
    if info:
        out["fastrms"] = info
    return out


def check_loadable(optimizer, state_dict):
    """Refuse, before anything is written, 8-bit state that this optimizer cannot load: into
    ``state_bits=32`` (convert it first), or codes and scales that do not fit their params.
    Returns ``param_state.saved_states``, for ``restore_dtypes``."""
    saved = saved_states(optimizer, state_dict)
    if any(eight_bit.is_eight_bit(s) for _, _, s in saved) and optimizer.state_bits != 8:
        raise ValueError("this state dict holds 8-bit state (codes and scales): load it into "
                         "RMSprop(state_bits=8), or convert it with "
                         "fastrms.torch.float32_state_dict first")
    for index, p, s in saved:
        if eight_bit.is_eight_bit(s):
            eight_bit.check_codes_fit(s, tuple(p.shape), f"state of param {index}")
    return saved
