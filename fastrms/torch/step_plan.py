"""The unflattened step, planned once per param group and reused while nothing changed.

A plan holds what a step hands the backend apart from the grads: per (device, dtype) bucket, the
pointer table of the params and their state (checked once: dtypes, shapes, layouts, overlaps), the
sizes, the tensors whose version counters a step bumps, and the step counters to count. A step
then reads each param's grad (``gather``: a few attribute reads and its address, about a
microsecond a param), and only where the grads moved (``zero_grad(set_to_none=True)`` frees them;
the allocator often hands the same addresses back) writes the new addresses into the table and
tests them against the written buffers in one vectorised pass.

A plan is stale, and the step rebuilds it with every check, when a param or its memory changed
(``p.data = ...``, ``model.to(...)``), a param gained or lost its grad, a state tensor or the
state dict was replaced, or the rule's state buffers changed (momentum or centered turned on or
off). ``fastrms.torch.RMSprop`` drops its plans when it loads a state dict.

Memory formats: a param whose elements fill one gapless run of memory (contiguous, channels_last,
any permutation: ``_dense``) is updated over that run, with state of the same strides, and a grad
of other strides is copied to them first. A param with gaps (a strided view made a param) is
copied into contiguous scratch memory each step, updated there and copied back: slower, but it
runs in the same kernel call.
"""

import operator

import numpy as np
import torch

from .. import validate
from .._buffers import NAMES, Buffers
from ..functional import checked_lists
from .param_state import STATE_BUFFERS, _adopt_step, _state_names, _state_of
from .tensors import _array_of, _check_dtype, _checked_grad, _dense, _flat_run, _real

GRAD = NAMES.index("grad")
_STRIDED = torch.strided


class GroupPlan:
    """One param group's step: its buckets (``_Bucket``), step counters and written tensors."""

    def __init__(self, optimizer, index, group, rule, backend):
        self.backend, self.names = backend, _state_names(rule)
        self.params = list(group["params"])
        self.state_map = optimizer.state
        self.step_block, step_views = optimizer._step_block(index, group)
        entries, positions = {}, []
        for position, p in enumerate(self.params):
            if p.grad is None:
                continue
            grad = _checked_grad(p)
            _check_dtype(p)
            state = _state_of(optimizer.state[p], p, group)
            _adopt_step(state, step_views[position])
            entries.setdefault((p.device, _real(p).dtype), []).append((p, grad, state))
            positions.append(position)
        self.without_grad = [p for p in self.params if p.grad is None]
        self.capturable = _capturable(group, entries)
        self.lr_on_device = None  # capturable with a tensor lr: a float64 copy the kernel reads
        if self.capturable and isinstance(group["lr"], torch.Tensor):
            self.lr_on_device = torch.empty((), dtype=torch.float64, device=group["lr"].device)
        self.buckets = [_Bucket(rule, self.names, listed, backend, self.capturable)
                        for listed in entries.values()]
        device = self.step_block.device
        self.step_index = None if len(positions) == len(self.params) else \
            torch.tensor(positions, device=device)
        self.step_ones = None if self.step_index is None else \
            torch.ones(len(positions), dtype=self.step_block.dtype, device=device)
        self.written = [t for b in self.buckets for t in b.written]

    def gather(self, group, optimizer_state, names):
        """Each bucket's grads for this step (``_Bucket.gather``), or None if the plan is stale.
        Checks everything a step needs; writes nothing the caller owns."""
        params = group["params"]
        if names != self.names or optimizer_state is not self.state_map \
                or len(params) != len(self.params) or any(map(_is_not, params, self.params)) \
                or any(p.grad is not None for p in self.without_grad):
            return None
        gathered = []
        for bucket in self.buckets:
            grads = bucket.gather()
            if grads is None:
                return None
            gathered.append(grads)
        return gathered

    def run(self, group, rule, gathered, threads):
        """The step: one backend call per bucket, then the step counts and version counters.
        Capturable: device work only (no host synchronisation, no host-to-device copy)."""
        lr_device = 0
        if self.lr_on_device is not None:
            lr_device = self.lr_on_device.copy_(group["lr"]).data_ptr()
        for bucket, grads in zip(self.buckets, gathered):
            bucket.run(rule, grads, threads, lr_device)
        if self.step_index is None:
            self.step_block.add_(1)
        elif len(self.step_index):
            self.step_block.index_add_(0, self.step_index, self.step_ones)
        torch.autograd.graph.increment_version(self.written)


def refuse_under_capture(why):
    """Raise, saying ``why`` and what to do, if the current CUDA stream is being captured."""
    if torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(
            f"fastrms: {why}, which a CUDA graph capture does not allow: run an eager step "
            "(warm-up) before capture, and keep the grads in place (zero_grad(set_to_none=False), "
            "or capture the backward pass too)")


def _capturable(group, entries):
    """Whether the group steps capturably: ``capturable=True``, which needs its params on one
    CUDA device and a tensor lr (if any) there too, as the step reads it without a copy."""
    if not group.get("capturable"):
        return False
    devices = {device for device, _ in entries}
    if any(d.type != "cuda" for d in devices) or len(devices) > 1:
        raise ValueError("capturable=True needs the group's params on one CUDA device (a CUDA "
                         f"graph replays device work only); got params on {sorted(map(str, devices))}")
    lr = group["lr"]
    if isinstance(lr, torch.Tensor) and devices and lr.device not in devices:
        raise ValueError(f"capturable=True needs lr as a float or a tensor on the params' device "
                         f"({next(iter(devices))}); got a tensor on {lr.device}")
    return True


def _is_not(a, b):
    return a is not b


class _Bucket:
    """The params of one (device, dtype) of a group with a grad: their checked pointer table.

    ``runs[j]`` is the tensor whose memory the kernel updates for param j: the param itself
    (``_dense``) or its contiguous scratch copy. The table's grad column is rewritten when the
    grads move; the other columns are fixed while the plan lives.
    """

    def __init__(self, rule, names, listed, backend, capturable=False):
        self.params = [p for p, _, _ in listed]
        self.states = [state for _, _, state in listed]
        self.read_state = operator.itemgetter("step", *names)  # a tuple, even of one
        self.state_tensors = [self.read_state(state) for state in self.states]
        self.dtypes = [p.dtype for p in self.params]
        self.addresses = [p.data_ptr() for p in self.params]
        self.runs = [p if _dense(p) else torch.empty_like(p, memory_format=torch.contiguous_format)
                     for p in self.params]
        self.strides = [run.stride() for run in self.runs]  # the grads must have them too
        self.gapped = [(j, p) for j, (p, run) in enumerate(zip(self.params, self.runs)) if run is not p]
        grads, _ = self._read_grads()
        by_name = {n: [_array_of(_flat_run(s[n])) for s in self.states] for n in names}
        columns = Buffers([_array_of(_flat_run(run)) for run in self.runs],
                          [_array_of(_flat_run(g)) for g in grads],
                          *(by_name.get(n) for n in STATE_BUFFERS))
        self.module, columns, self.table, self.sizes = checked_lists(rule, columns, backend)
        itemsizes = np.array([0 if c is None else c[0].itemsize for c in columns], dtype=np.int64)
        self.nbytes = self.sizes[:, None] * itemsizes
        self.spans = validate.written_spans(self.table, self.nbytes)
        self.grad_addresses = self.table[:, GRAD].tolist()  # checked with the rest
        self.columns = columns  # update_many reads their dtype and device; addresses: the table
        self.update_many = getattr(self.module, "update_many", None)
        self.capturable, self.prepared = capturable, None  # prepared: the capturable launch
        self.written = self.params + [s[n] for n in names for s in self.states]

    def gather(self):
        """This step's grads as the kernel reads them, their addresses written into the table
        and checked, the gapped params copied to scratch; None if the plan is stale."""
        read = self._read_grads()
        if read is None:
            return None
        grads, addresses = read
        if addresses != self.grad_addresses:
            self.grad_addresses = self.prepared = None  # until the new ones pass
            self.table[:, GRAD] = addresses
            validate.check_grads_clear(self.spans, self.table, self.nbytes)
            self.grad_addresses = addresses
        for j, p in self.gapped:
            self.runs[j].copy_(p)
        return grads

    def _read_grads(self):
        """The grads (with their runs' strides: a grad of other strides is copied) and their
        addresses, or None if a param, its memory, its grad or a state tensor changed. One pass
        over the params: it runs every step."""
        grads, addresses = [], []
        read_state = self.read_state
        try:
            for p, address, dtype, stride, state, kept in zip(
                    self.params, self.addresses, self.dtypes, self.strides, self.states,
                    self.state_tensors):
                g = p.grad
                if g is None or p.data_ptr() != address or g.dtype is not dtype \
                        or not all(map(operator.is_, read_state(state), kept)):
                    return None
                if g.layout is not _STRIDED:
                    _checked_grad(p)  # raises, as torch's RMSprop does
                if g.stride() != stride:
                    g = torch.empty_strided(g.shape, stride, dtype=dtype, device=g.device).copy_(g)
                grads.append(g)
                addresses.append(g.data_ptr())
        except KeyError:  # a state buffer was deleted
            return None
        return grads, addresses

    def run(self, rule, grads, threads, lr_device=0):
        if self.capturable:
            self._launch_prepared(rule, lr_device)
        elif self.update_many is not None:
            self.update_many(self.columns, rule, None, self.table, self.sizes, threads)
        else:  # a backend without a multi-tensor entry (the NumPy reference): one call a param
            for j, g in enumerate(grads):
                row = Buffers(*(None if c is None else c[j] for c in self.columns))
                self.module.update(row._replace(grad=_array_of(_flat_run(g))), rule, None, threads)
        for j, p in self.gapped:
            p.copy_(self.runs[j])

    def _launch_prepared(self, rule, lr_device):
        """The capturable launch: its tables on the device since the step that prepared it
        (the first, or the first after the grads moved), so that it only launches."""
        stream = torch.cuda.current_stream(self.params[0].device)
        if self.prepared is None:
            refuse_under_capture("the grads moved since the last eager step, so the step would "
                                 "copy a new pointer table to the device")
            first, columns = self.columns.param[0], self.columns
            self.prepared = self.module.prepare_many(
                first.device.id, first.dtype, self.table, self.sizes,
                columns.momentum_buffer is not None, columns.grad_avg is not None, stream=stream)
        self.prepared.launch(rule, None, lr_device, stream=stream)
