"""A torch param group's rule and checks: torch.optim.RMSprop's checks of the arguments, what
fastrms refuses, and the ``fastrms`` rule of a group's values."""

import functools

import torch

from .._spec import rule_for


@functools.lru_cache(maxsize=256)
def _torch_rule(lr, alpha, eps, weight_decay, momentum, centered, maximize):
    return rule_for("torch", lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                    momentum=momentum, centered=centered, maximize=maximize)


# The rule's lr where a capturable step reads the group's lr tensor on the device instead.
READ_ON_DEVICE = 1.0


def rule_of(group, lr_on_device=False):
    """The ``fastrms`` rule of a param group (cached: one ``Rule`` per set of values). A tensor lr
    is read here, on the host, unless the step reads it on the device (``lr_on_device``: the
    unflattened capturable step), which the rule then marks ``READ_ON_DEVICE``."""
    lr = group["lr"]
    if isinstance(lr, torch.Tensor):
        lr = READ_ON_DEVICE if lr_on_device else lr.item()
    return _torch_rule(float(lr), float(group["alpha"]), float(group["eps"]),
                       float(group["weight_decay"]), float(group["momentum"]),
                       bool(group["centered"]), bool(group["maximize"]))


def _check_defaults(lr, alpha, eps, weight_decay, momentum):
    """torch.optim.RMSprop's checks, messages and order, before the params are read; the stricter
    ones of fastrms (finite values, alpha <= 1) follow per group (``_check_group``)."""
    if isinstance(lr, torch.Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    for value, message in ((lr, "Invalid learning rate"), (eps, "Invalid epsilon value"),
                           (momentum, "Invalid momentum value"),
                           (weight_decay, "Invalid weight_decay value"),
                           (alpha, "Invalid alpha value")):
        if not 0.0 <= value:
            raise ValueError(f"{message}: {value}")


def _check_group(group, lr_on_device=None):
    """Refuse what fastrms does not do; return the group's rule (``rule_of``, which validates
    the hyperparameters). ``lr_on_device``: as for ``rule_of``; by default, where capturable
    (validation then reads no tensor lr, a host synchronisation on CUDA)."""
    if lr_on_device is None:
        lr_on_device = bool(group.get("capturable"))
    if group.get("differentiable"):
        raise ValueError("differentiable=True is not supported: the fused step updates in place, "
                         "outside autograd")
    return rule_of(group, lr_on_device)
