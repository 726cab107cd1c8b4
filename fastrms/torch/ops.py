"""``torch.ops.fastrms.rmsprop_``: the fused update as a torch operator, for compiled code.

One operator over lists of tensors, mutating params and state in place (``mutates_args``), with a
fake implementation for tracing; its real implementation is ``fastrms.functional.apply`` (every
check of ``rmsprop_update``; Numba for CPU tensors, CuPy for CUDA ones). ``torch.compile`` of
``fastrms.torch.RMSprop.step`` calls it, and inductor calls it on the buffers themselves (no
functionalisation copies). Anyone may call it (``import fastrms.torch`` registers it)::

    torch.ops.fastrms.rmsprop_(params, grads, square_avgs, [], [], lr=0.01, alpha=0.9)

Its arguments: the lists (empty ones where the rule has no momentum buffer or grad average), a
``convention`` of ``fastrms._spec`` ("book", as ``rmsprop_update``; "torch", ...), the rule's
fields by name (None: the convention's value), ``lr_tensor`` (a one-element tensor read at each
call in place of ``lr``, so that a compiled step follows an LR scheduler without recompiling),
``step``, ``backend`` and ``threads`` (default: as the torch adapter, ``torch.get_num_threads()``
unless ``fastrms.set_num_threads`` says otherwise).

The eager ``RMSprop.step`` calls the backends directly (``fastrms.torch.step_plan``): the
operator's own dispatch costs ~2-3 µs a tensor, more than the step; both give the same bits.
"""

import functools
from typing import Optional

import torch

from .._spec import RULE_FIELDS, rule_for
from ..functional import apply
from ..threads import resolve as resolve_threads
from ..validate import refuse_tracked
from .tensors import _real

WRITTEN = ("params", "square_avgs", "momentum_buffers", "grad_avgs")


@torch.library.custom_op("fastrms::rmsprop_", mutates_args=WRITTEN)
def rmsprop_(params: list[torch.Tensor], grads: list[torch.Tensor],
             square_avgs: list[torch.Tensor], momentum_buffers: list[torch.Tensor],
             grad_avgs: list[torch.Tensor], lr_tensor: Optional[torch.Tensor] = None,
             convention: str = "book", lr: Optional[float] = None,
             alpha: Optional[float] = None, eps: Optional[float] = None,
             eps_in_sqrt: Optional[bool] = None, momentum: Optional[float] = None,
             lr_in_momentum: Optional[bool] = None, nesterov: Optional[bool] = None,
             centered: Optional[bool] = None, centered_lerp: Optional[bool] = None,
             weight_decay: Optional[float] = None,
             decoupled_weight_decay: Optional[bool] = None,
             bias_correction: Optional[bool] = None, maximize: Optional[bool] = None,
             initial_scale: Optional[float] = None, step: Optional[int] = None,
             backend: str = "auto", threads: Optional[int] = None) -> None:
    if lr_tensor is not None:
        lr = _lr_of(lr_tensor)
    rule = _rule(convention, lr, alpha, eps, eps_in_sqrt, momentum, lr_in_momentum, nesterov,
                 centered, centered_lerp, weight_decay, decoupled_weight_decay, bias_correction,
                 maximize, initial_scale)
    apply(rule, _reals(params), _reals(grads), _reals(square_avgs),
          _reals(momentum_buffers) if momentum_buffers else None,
          _reals(grad_avgs) if grad_avgs else None, step, backend,
          resolve_threads(threads, framework=torch.get_num_threads()))


@rmsprop_.register_fake
def _(params, grads, square_avgs, momentum_buffers, grad_avgs, *rule_and_options, **by_name):
    return None  # it only mutates its arguments


@functools.lru_cache(maxsize=64)
def _rule(convention, *values):
    """The ``Rule`` of the operator's arguments (``RULE_FIELDS`` order), cached on their values."""
    return rule_for(convention, **dict(zip(RULE_FIELDS, values)))


def _reals(tensors):
    """Complex tensors as their real views (re and im as two reals, as torch's RMSprop)."""
    return [_real(t) if t.is_complex() else t for t in tensors]


def _lr_of(lr_tensor):
    if lr_tensor.numel() != 1:
        raise ValueError(f"lr_tensor must have one element, got shape {tuple(lr_tensor.shape)}")
    return float(lr_tensor.item())


def _autograd_kernel(keyset, params, grads, square_avgs, momentum_buffers, grad_avgs, *args,
                     **kwargs):
    """Refuse, as ``rmsprop_update`` and torch's in-place ops do, to write a tensor that requires
    grad while grad mode is on; then run the operator below autograd. (custom_op's own kernel
    would run it inside an autograd.Function, under no_grad, and allow it.)"""
    if torch.is_grad_enabled():
        for name, tensors in zip(WRITTEN, (params, square_avgs, momentum_buffers, grad_avgs)):
            for j, t in enumerate(tensors):
                if t.requires_grad:
                    refuse_tracked(t, f"{name}[{j}]")
    with torch._C._AutoDispatchBelowAutograd():
        return torch.ops.fastrms.rmsprop_.default.redispatch(
            keyset & torch._C._after_autograd_keyset, params, grads, square_avgs,
            momentum_buffers, grad_avgs, *args, **kwargs)


_LIBRARY = torch.library.Library("fastrms", "IMPL")  # kept: dropping it unregisters the kernel
_LIBRARY.impl("rmsprop_", _autograd_kernel, "Autograd", with_keyset=True)
