"""The unflattened step, planned once per param group and reused while nothing changed.

A ``GroupPlan`` holds a group's ``ListPlan`` (``list_plan``: the pointer tables of the params with
a grad and their state, checked once), its step counters and the tensors whose version counters a
step bumps. A step reads each param's grad and checks that its state tensors are still the ones
planned (``gather``), then makes one backend call per (device, dtype).

A plan is stale, and the step rebuilds it with every check, when a param or its memory changed
(``p.data = ...``, ``model.to(...)``), a param gained or lost its grad, a state tensor or the
state dict was replaced, or the rule's state buffers changed (momentum or centered turned on or
off). ``fastrms.torch.RMSprop`` drops its plans when it loads a state dict.
"""

import operator

import torch

from .._buffers import PLAIN
from ..rounding import offset_of
from .list_plan import ListPlan, refuse_under_capture
from .param_state import MASTER, _state_names, _stepped_states


class GroupPlan:
    """One param group's step: its ``ListPlan``, step counters and written tensors.

    ``planned``: a predicate on params; the others are left out (with ``state_bits=8``, those
    with 8-bit state, which step in calls of their own).
    """

    def __init__(self, optimizer, index, group, rule, backend, planned=None):
        self.backend, self.names = backend, _state_names(rule)
        self.params = list(group["params"])
        self.state_map = optimizer.state
        self.step_block, step_views = optimizer._step_block(index, group)
        with_grad, positions, states = [], [], []
        for position, p, state in _stepped_states(optimizer, group, step_views, planned):
            with_grad.append(p)
            positions.append(position)
            states.append(state)
        self.with_grad, self.states = with_grad, states
        self.state_ids = frozenset(map(id, states))  # (a lookup by tensor costs a Python hash)
        self.without_grad = [p for p in self.params
                             if p.grad is None and (planned is None or planned(p))]
        # What a step reads of each state (tuples, even of one): master weights for some params.
        plain = operator.itemgetter("step", *self.names)
        with_master = operator.itemgetter("step", *self.names, MASTER)
        masters = [MASTER in state for state in states]
        self.read_states = [with_master if m else plain for m in masters]
        self.state_addresses = [t.data_ptr() for state, read in zip(states, self.read_states)
                                for t in read(state)]
        self.capturable = _capturable(group, with_grad)
        self.lr_kind = _lr_kind(group["lr"])
        self.lr_on_device = None  # capturable with a tensor lr: a float64 copy the kernel reads
        if self.capturable and self.lr_kind is not None and with_grad:
            self.lr_on_device = torch.empty((), dtype=torch.float64, device=with_grad[0].device)
        columns = {n: [s[n] for s in states] for n in self.names}
        if any(masters):
            columns[MASTER] = [s.get(MASTER) for s in states]
        self.lists = ListPlan(rule, with_grad, [p.grad for p in with_grad], columns, backend,
                              self.capturable, [offset_of(j) for j in positions])
        device = self.step_block.device
        self.step_index = None if len(positions) == len(self.params) else \
            torch.tensor(positions, device=device)
        self.step_ones = None if self.step_index is None else \
            torch.ones(len(positions), dtype=self.step_block.dtype, device=device)
        self.written = with_grad + [s[n] for n in self.names for s in states] + [
            s[MASTER] for s, m in zip(states, masters) if m]

    def gather(self, group, optimizer_state, names):
        """This step's grads as the plan's buckets read them (``ListPlan.gather``), or None if the
        plan is stale. Checks everything a step needs; writes nothing the caller owns."""
        params = group["params"]
        if names != self.names or optimizer_state is not self.state_map \
                or len(params) != len(self.params) \
                or any(map(operator.is_not, params, self.params)) \
                or any(p.grad is not None for p in self.without_grad) \
                or bool(group.get("capturable")) != self.capturable \
                or _lr_kind(group["lr"]) != self.lr_kind:
            return None
        if not self.state_ids.issubset(map(id, optimizer_state.values())):
            return None  # the state was reset (opt.state.clear()) or a param's replaced
        grads, state_tensors = [], []
        try:
            for p, state, read_state in zip(self.with_grad, self.states, self.read_states):
                g = p.grad
                if g is None:
                    return None  # a param lost its grad
                state_tensors += read_state(state)
                grads.append(g)
        except KeyError:  # a state buffer was deleted
            return None
        # A state tensor replaced, or its memory swapped (t.data = ...), has another address (a
        # new view of the same memory is the same buffer to the kernel).
        if list(map(_DATA_PTR, state_tensors)) != self.state_addresses:
            return None
        if not grads:
            return []
        return self.lists.gather(self.with_grad, grads)

    def run(self, group, rule, gathered, threads, extras=PLAIN, step_increment=None):
        """The step: one backend call per bucket, then the step counts and version counters.
        Capturable: device work only (no host synchronisation, no host-to-device copy).
        ``extras``: loss scale, clip factor, rounding (``fastrms._buffers.Extras``; each bucket
        sets its params' counter offsets). ``step_increment``: a device tensor (1 − found_inf)
        that counts the step where the GradScaler's verdict stays on the device."""
        lr_device = 0
        if self.lr_on_device is not None:
            if group["lr"].device.type == "cpu":  # allowed eagerly (torch.compile may set
                refuse_under_capture("lr is a CPU tensor, which the step would copy to the "
                                     "device")  # capturable=True on a group with one)
            lr_device = self.lr_on_device.copy_(group["lr"]).data_ptr()
        if gathered:
            self.lists.run(rule, self.with_grad, gathered, None, threads, lr_device, extras)
        increment = 1 if step_increment is None else step_increment
        if self.step_index is None:
            self.step_block.add_(increment)
        elif len(self.step_index):
            self.step_block.index_add_(0, self.step_index, self.step_ones * increment)
        torch.autograd.graph.increment_version(self.written)


def _capturable(group, params):
    """Whether the group steps capturably: ``capturable=True``, which needs its params on one
    CUDA device (a CUDA graph replays device work only)."""
    if not group.get("capturable"):
        return False
    devices = {p.device for p in params}
    if any(d.type != "cuda" for d in devices) or len(devices) > 1:
        raise ValueError("capturable=True needs the group's params on one CUDA device (a CUDA "
                         f"graph replays device work only); got params on {sorted(map(str, devices))}")
    return True


def _lr_kind(lr):
    """None for a float lr, else the tensor's device: a plan reads the lr by one or the other."""
    return lr.device if isinstance(lr, torch.Tensor) else None


_DATA_PTR = torch.Tensor.data_ptr
