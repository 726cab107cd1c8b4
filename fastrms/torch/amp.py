"""Loss scaling, inf skipping and clipping for ``fastrms.torch.RMSprop``: torch AMP's contract for
fused optimizers (docs/mixed-precision.md).

``torch.amp.GradScaler.step`` sees ``_step_supports_amp_scaling`` and, instead of unscaling the
grads in a pass of its own, sets ``optimizer.grad_scale`` (None after an explicit ``unscale_``)
and ``optimizer.found_inf`` (its own inf check) for the step. ``verdict`` turns those, and
``max_grad_norm``, into what the step applies: on the CPU, host values (the step is skipped
outright when an inf was found); on CUDA, device values that the kernel reads (found_inf, grad
scale, clip factor) and a device step increment (1 − found_inf), so that the host never waits.
"""

from typing import Any, NamedTuple

import numpy as np
import torch

from .._spec import clip_factor
from ..functional import extras_of
from ..grad_stats import inspect_grads


class Verdict(NamedTuple):
    skip: bool  # host: skip the step (nothing written, nothing counted)
    grad_scale: Any  # host: the scale to unscale by (None: none)
    clip: Any  # host: the clip factor (None: none)
    device_amp: Any  # CUDA: float32 [found_inf, grad_scale, clip] read by the kernel, or None
    step_increment: Any  # CUDA: 1 − found_inf, counting the step on the device, or None


NOTHING = Verdict(False, None, None, None, None)


def verdict(optimizer):
    """What this step does around the rule, from the GradScaler's attributes (if any) and the
    optimizer's ``max_grad_norm`` (over every grad of the step)."""
    grad_scale = getattr(optimizer, "grad_scale", None)
    found_inf = getattr(optimizer, "found_inf", None)
    max_norm = optimizer.max_grad_norm
    if grad_scale is None and found_inf is None and max_norm is None:
        return NOTHING
    grads = [] if max_norm is None else [p.grad for group in optimizer.param_groups
                                         for p in group["params"] if p.grad is not None]
    on_device = any(torch.is_tensor(v) and v.device.type == "cuda"
                    for v in (grad_scale, found_inf))
    if on_device:
        return _on_device(grad_scale, found_inf, max_norm, grads)
    skip = bool(found_inf.item()) if torch.is_tensor(found_inf) else bool(found_inf)
    scale = float(grad_scale.item()) if torch.is_tensor(grad_scale) else grad_scale
    clip = None
    if max_norm is not None and not skip and grads:
        found, norm = inspect_grads(grads, 1.0 if scale is None else scale,
                                    backend=optimizer.backend, threads=optimizer.threads)
        skip = found
        clip = float(clip_factor(max_norm, norm, np.float32))
    return Verdict(skip, scale, clip, None, None)


def step_extras(optimizer, judged):
    """The ``Extras`` of a step: the verdict's scale and clip (or device values), the optimizer's
    rounding keyed by its count of ``step()`` calls."""
    extras = extras_of(judged.grad_scale, judged.clip, optimizer.rounding, optimizer.seed,
                       optimizer.calls)
    if judged.device_amp is not None:
        extras = extras._replace(device_amp=judged.device_amp.data_ptr())
    return extras


def _on_device(grad_scale, found_inf, max_norm, grads):
    """The CUDA verdict: device tensors only, no host synchronisation."""
    like = found_inf if torch.is_tensor(found_inf) else grad_scale
    device = like.device
    found = found_inf.float().reshape(()) if torch.is_tensor(found_inf) else \
        torch.zeros((), device=device)
    scale = grad_scale.float().reshape(()) if torch.is_tensor(grad_scale) else \
        torch.ones((), device=device)
    clip = torch.ones((), device=device)
    if max_norm is not None and grads:
        # The norm of the scaled grads, divided by the scale (the scale stays on the device).
        grad_found, norm = (torch.as_tensor(v, device=device) for v in inspect_grads(grads))
        found = torch.maximum(found, grad_found.float())
        unscaled = (norm / scale.double()).float()
        clip = (max_norm / (unscaled + 1e-6)).clamp(max=1.0)
    amp = torch.stack([found, scale, clip]).contiguous()
    return Verdict(False, None, None, amp, 1 - found)
