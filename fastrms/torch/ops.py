"""``torch.ops.fastrms.rmsprop_``: the fused update as a torch operator, for compiled code.

One operator over lists of tensors, mutating params and state in place (``mutates_args``), with a
fake implementation for tracing. Its real implementation runs a ``list_plan.ListPlan`` of the
lists (every check of ``rmsprop_update``, run once and kept while the same tensors come back;
Numba for CPU tensors, CuPy for CUDA ones; complex ones as their real views, as torch's). ``torch.compile`` of
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
import operator
import weakref
from collections import OrderedDict
from typing import Optional

import torch

from .. import validate
from .._buffers import NAMES, Buffers
from .._spec import RULE_FIELDS, rule_for
from ..threads import resolve as resolve_threads
from ..validate import refuse_tracked
from .list_plan import ListPlan
from .param_state import STATE_BUFFERS

GRAD = NAMES.index("grad")

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
    columns = Buffers(params, grads, square_avgs, momentum_buffers or None, grad_avgs or None)
    validate.check_lists(columns)
    validate.check_state_matches(rule, columns.momentum_buffer, columns.grad_avg)
    validate.check_step(rule, step)
    if params:
        _planned_run(rule, columns, step, backend,
                     resolve_threads(threads, framework=torch.get_num_threads()))


@rmsprop_.register_fake
def _(params, grads, square_avgs, momentum_buffers, grad_avgs, *rule_and_options, **by_name):
    return None  # it only mutates its arguments


@functools.lru_cache(maxsize=64)
def _rule(convention, *values):
    """The ``Rule`` of the operator's arguments (``RULE_FIELDS`` order), cached on their values."""
    return rule_for(convention, **dict(zip(RULE_FIELDS, values)))


# (backend, the lists' lengths and tensors' ids) -> (weak references to those tensors, their
# addresses, their ListPlan): a compiled step passes the same params and state every call. Weak,
# and the plan keeps no array over them, so that a plan never keeps a model alive; an id reused
# by a new tensor fails the identity test, a tensor whose memory was swapped the address test.
_PLANS = OrderedDict()
_PLANS_KEPT = 8


def _planned_run(rule, columns, step, backend, threads):
    """The update through a ``ListPlan`` of these lists, reused while the same tensors come
    back (rebuilt, with every check, when they or their memory changed)."""
    written = [t for i, column in enumerate(columns) if column is not None and i != GRAD
               for t in column]
    key = (backend, tuple(len(c or ()) for c in columns), tuple(map(id, written)))
    addresses = [t.data_ptr() for t in written]
    entry = _PLANS.get(key)
    gathered = None
    if entry is not None and all(map(operator.is_, (ref() for ref in entry[0]), written)) \
            and addresses == entry[1]:
        _PLANS.move_to_end(key)
        gathered = entry[2].gather(columns.param, columns.grad)
    if gathered is None:
        states = {name: column for name, column in zip(NAMES, columns)
                  if column is not None and name in STATE_BUFFERS}
        plan = ListPlan(rule, columns.param, columns.grad, states, backend)
        entry = _PLANS[key] = ([weakref.ref(t) for t in written], addresses, plan)
        if len(_PLANS) > _PLANS_KEPT:
            _PLANS.popitem(last=False)
        gathered = plan.gather(columns.param, columns.grad)
    entry[2].run(rule, columns.param, gathered, step, threads)


def _lr_of(lr_tensor):
    if lr_tensor.numel() != 1:
        raise ValueError(f"lr_tensor must have one element, got shape {tuple(lr_tensor.shape)}")
    return float(lr_tensor.item())


def _autograd_kernel(keyset, params, grads, square_avgs, momentum_buffers, grad_avgs, *args,
                     **kwargs):
    """Refuse, as ``rmsprop_update`` and torch's in-place ops do, to write a tensor that requires
    grad while grad mode is on (custom_op's own kernel would run the operator inside an
    autograd.Function, under no_grad, and allow it); bump the written tensors' versions in one
    call (custom_op's ADInplaceOrView kernel fills in the defaults and bumps them one by one in
    Python: ~5 µs a param of a compiled step); then run the implementation."""
    written = [*params, *square_avgs, *momentum_buffers, *grad_avgs]
    if torch.is_grad_enabled():
        for name, tensors in zip(WRITTEN, (params, square_avgs, momentum_buffers, grad_avgs)):
            for j, t in enumerate(tensors):
                if t.requires_grad:
                    refuse_tracked(t, f"{name}[{j}]")
    torch.autograd.graph.increment_version(written)
    with torch._C._AutoDispatchBelowADInplaceOrView():
        return torch.ops.fastrms.rmsprop_.default.redispatch(
            keyset & torch._C._after_ADInplaceOrView_keyset, params, grads, square_avgs,
            momentum_buffers, grad_avgs, *args, **kwargs)


_LIBRARY = torch.library.Library("fastrms", "IMPL")  # kept: dropping it unregisters the kernel
_LIBRARY.impl("rmsprop_", _autograd_kernel, "Autograd", with_keyset=True)
