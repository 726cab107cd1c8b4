"""A param's optimizer state as torch lays it out: its buffers, in the state dtype, and its step
count, a 0-d view of one tensor of step counters per group (or flat group).

``self.state[p]`` holds ``"step"`` (a float tensor, torch's step-counter dtype) and the buffers
the rule needs, under torch's names: ``square_avg`` always, ``momentum_buffer`` with momentum,
``grad_avg`` when centered.
"""

import torch

from ..dtypes import state_dtype
from ..eight_bit import CODE_KEYS
from ..state import STATE_KEYS as STATE_BUFFERS
from .tensors import HALF_DTYPES, _check_dtype, _checked_grad, _dense

MASTER = "master_param"  # a half param's float32 master weights (master_weights=True)
FORMAT = 1  # version of the state-dict layout written under the key "fastrms"

try:  # torch's step-counter dtype (float32, or float64 under a float64 default dtype)
    from torch.optim.optimizer import _get_scalar_dtype
except ImportError:  # pragma: no cover - older/newer torch
    def _get_scalar_dtype():
        return torch.float32


def format_info(state_dict):
    """A state dict's ``"fastrms"`` entry (torch's own have none: format 0), refusing one
    written by a newer fastrms."""
    info = state_dict.get("fastrms", {"format": 0})
    if info.get("format", 0) > FORMAT:
        raise ValueError(f"state dict format {info['format']} was written by a newer fastrms "
                         f"(this one reads up to {FORMAT})")
    return info


def _state_names(rule):
    """The state buffers ``rule`` reads and writes."""
    return tuple(n for n, on in zip(STATE_BUFFERS, (True, rule.momentum != 0, rule.centered)) if on)


def _has_master(master_weights, p):
    """Whether ``p`` keeps master weights: a half-precision param, with ``master_weights``."""
    return master_weights and p.dtype in HALF_DTYPES


def _state_of(state, p, group, master_weights=False):
    """``self.state[p]`` (passed as ``state``), created as torch creates it (and completed if the
    group changed; its buffers moved to the param's device and state dtype if the param moved)."""
    if len(state) == 0:
        state["step"] = torch.zeros((), dtype=_get_scalar_dtype())
    if not torch.is_tensor(state["step"]):
        state["step"] = torch.tensor(float(state["step"]), dtype=_get_scalar_dtype())
    dtype = state_dtype(p.dtype)
    for key, wanted in zip(STATE_BUFFERS, (True, group["momentum"] > 0, group["centered"])):
        if not wanted:
            continue
        buffer = state.get(key)
        if buffer is None:
            state[key] = _laid_out_for(p, dtype).zero_()
        elif buffer.dtype != dtype or buffer.device != p.device or buffer.shape != p.shape \
                or buffer.stride() != _state_strides(p):
            state[key] = _laid_out_for(p, dtype).copy_(buffer.reshape(p.shape))
    if _has_master(master_weights, p):
        master = state.get(MASTER)
        if master is None:  # from the param's own value: exact
            state[MASTER] = _laid_out_for(p, dtype).copy_(p.detach())
        elif master.dtype != dtype or master.device != p.device or master.shape != p.shape \
                or master.stride() != _state_strides(p):
            state[MASTER] = _laid_out_for(p, dtype).copy_(master.reshape(p.shape))
    return state


def _state_strides(p):
    """The strides of ``p``'s state: ``p``'s own where it is dense (torch's preserve_format, so
    that the update runs over the three as flat runs), else contiguous ones."""
    return p.stride() if _dense(p) else torch.empty(p.shape, device="meta").stride()


def _laid_out_for(p, dtype):
    """An uninitialised state buffer for ``p`` (``_state_strides``), on ``p``'s device."""
    return torch.empty_strided(p.shape, _state_strides(p), dtype=dtype, device=p.device)


def _step_counters(n, device="cpu"):
    """A tensor of ``n`` step counters and its 0-d views (``state[p]["step"]`` of each param)."""
    steps = torch.zeros(n, dtype=_get_scalar_dtype(), device=device)
    return steps, [steps[j] for j in range(n)]


def _adopt_step(state, view):
    """Make ``state["step"]`` the 0-d view ``view`` of a step block, keeping its count."""
    if state.get("step") is not view:
        view.fill_(float(state.get("step", 0)))
        state["step"] = view


def _stepped_states(optimizer, group, step_views, planned=None):
    """``(position, param, state)`` of each param of ``group`` with a grad (and ``planned(p)``,
    if given): the grad and the param's dtype checked, its state created as torch creates it and
    its step count made the view ``step_views[position]`` of the group's step block."""
    for position, p in enumerate(group["params"]):
        if p.grad is None or (planned is not None and not planned(p)):
            continue
        _checked_grad(p)
        _check_dtype(p)
        state = _state_of(optimizer.state[p], p, group, optimizer.master_weights)
        _adopt_step(state, step_views[position])
        yield position, p, state


def _copy_of(value):
    """``value`` with its tensors cloned, dicts looked into (entries that are not a param's state,
    like a hook's ``state["test"] = 1``, are kept as they are)."""
    if torch.is_tensor(value):
        return value.clone()
    if isinstance(value, dict):
        return {key: _copy_of(v) for key, v in value.items()}
    return value


def _step_device(group, device_steps=False):
    """Where a group's step counts live: on the params' device if capturable (torch's layout;
    counted there without a host copy) or once a GradScaler's verdict stayed on a CUDA device
    (``device_steps``: the count is corrected there), else on the CPU."""
    params = group["params"]
    if params and (group.get("capturable") or (device_steps and params[0].is_cuda)):
        return params[0].device
    return torch.device("cpu")


def saved_states(optimizer, state_dict):
    """``(index, param, saved state)`` for each param of ``optimizer`` that ``state_dict`` holds
    a state for (matched as torch's loader matches them: by the groups' order)."""
    params = {}
    for saved, group in zip(state_dict.get("param_groups", []), optimizer.param_groups):
        params.update(zip(saved["params"], group["params"]))
    return [(index, params[index], s) for index, s in state_dict.get("state", {}).items()
            if index in params and isinstance(s, dict)]


def restore_dtypes(optimizer, saved):
    """After torch's loader, which casts every state tensor of a float param to its dtype: the
    tensors whose dtype it changed, as saved (the float32 state and masters of half params, the
    uint8 codes and float32 scales of 8-bit state), on the param's device. ``saved``:
    ``saved_states``."""
    for _, p, state in saved:
        for key, value in state.items():
            now = optimizer.state[p].get(key)
            if key == "step" or not torch.is_tensor(value) or not torch.is_tensor(now):
                continue
            kept = value.dtype if key in CODE_KEYS else state_dtype(p.dtype)
            if now.dtype != value.dtype and value.dtype == kept:
                optimizer.state[p][key] = value.detach().to(p.device, copy=True)
