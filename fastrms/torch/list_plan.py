"""A step over explicit lists of tensors, planned once and reused while the same tensors come back:
what the eager optimizer step (``step_plan``) and the torch operator (``ops``) both run.

A ``ListPlan`` keeps, per (device, dtype) ``Bucket``, the pointer table of the params and their
state (every check of ``rmsprop_update`` run once: dtypes, shapes, layouts, overlaps), the sizes
and the backend. A call then only checks the params' memory and the grads (``gather``: a few
attribute reads and an address per tensor), and only where the grads moved (``set_to_none``
frees them; the allocator often hands the same addresses back) writes their addresses into the
table and tests them against the written buffers in one vectorised pass. The caller makes sure
the state tensors are the ones the plan was built with.

Memory formats: a param whose elements fill one gapless run of memory (contiguous,
``channels_last``, any permutation: ``_dense``) is updated over that run, with state of the same
strides, and a grad of other strides is copied to them first. A param with gaps (a strided view
made a param) is copied into contiguous scratch memory each call, updated there and copied back.
"""

import numpy as np
import torch

from .. import validate
from .._buffers import NAMES, Buffers
from ..functional import checked_lists
from .param_state import STATE_BUFFERS
from .tensors import _array_of, _check_strided, _dense, _flat_run, _real

GRAD = NAMES.index("grad")


class ListPlan:
    """The buckets of lists of params, grads and state (``states``: name -> list, for the names
    the rule uses), one per (device, dtype)."""

    def __init__(self, rule, params, grads, states, backend, capturable=False):
        rows = {}
        for j, p in enumerate(params):
            rows.setdefault((p.device, _real(p).dtype), []).append(j)
        self.rows = None if len(rows) == 1 else list(rows.values())  # None: one bucket, all rows
        self.buckets = [Bucket(rule, *self._split(params, grads, states, picked), backend,
                               capturable) for picked in rows.values()]

    def _split(self, params, grads, states, picked):
        take = (lambda ts: [ts[j] for j in picked]) if self.rows is not None else list
        return take(params), take(grads), {n: take(ts) for n, ts in states.items()}

    def gather(self, params, grads):
        """Each bucket's grads as its kernel reads them (``Bucket.gather``), or None if a param
        or its memory changed. Writes nothing the caller owns."""
        if self.rows is None:
            grads = self.buckets[0].gather(params, grads)
            return None if grads is None else [grads]
        gathered = []
        for bucket, picked in zip(self.buckets, self.rows):
            bucket_grads = bucket.gather([params[j] for j in picked], [grads[j] for j in picked])
            if bucket_grads is None:
                return None
            gathered.append(bucket_grads)
        return gathered

    def run(self, rule, params, gathered, step=None, threads=None, lr_device=0):
        """One backend call per bucket (``gathered``: what ``gather`` returned)."""
        for j, (bucket, grads) in enumerate(zip(self.buckets, gathered)):
            picked = params if self.rows is None else [params[i] for i in self.rows[j]]
            bucket.run(rule, picked, grads, step, threads, lr_device)


class Bucket:
    """The params of one (device, dtype): their checked pointer table.

    ``runs[j]`` is the tensor whose memory the kernel updates for param j: the param itself
    (``_dense``) or its contiguous scratch copy. The table's grad column is rewritten when the
    grads move; the other columns are fixed while the plan lives. Params are not kept: each call
    passes them (a plan cached by the operator must not keep a model alive).
    """

    def __init__(self, rule, params, grads, states, backend, capturable=False):
        self.dtypes = [p.dtype for p in params]
        self.addresses = [p.data_ptr() for p in params]
        self.device = params[0].device
        runs = [p if _dense(p) else torch.empty_like(p, memory_format=torch.contiguous_format)
                for p in params]
        self.strides = [run.stride() for run in runs]  # the grads must have them too
        self.gapped = {j: run for j, (p, run) in enumerate(zip(params, runs)) if run is not p}
        self.grad_addresses = None
        grads, _ = self._conformed(params, grads)
        columns = Buffers([_array_of(_flat_run(run)) for run in runs],
                          [_array_of(_flat_run(g)) for g in grads],
                          *(None if n not in states else [_array_of(_flat_run(s)) for s in states[n]]
                            for n in STATE_BUFFERS))
        self.module, columns, self.table, self.sizes = checked_lists(rule, columns, backend)
        itemsizes = np.array([0 if c is None else c[0].itemsize for c in columns], dtype=np.int64)
        self.nbytes = self.sizes[:, None] * itemsizes
        self.spans = validate.written_spans(self.table, self.nbytes)
        self.grad_addresses = self.table[:, GRAD].tolist()  # checked with the rest
        self.columns = columns  # update_many reads their dtype and device; addresses: the table
        self.update_many = getattr(self.module, "update_many", None)
        self.capturable, self.prepared = capturable, None  # prepared: the capturable launch

    def gather(self, params, grads):
        """The grads as the kernel reads them, their addresses written into the table and
        checked, the gapped params copied to scratch; None if a param or its memory changed."""
        conformed = self._conformed(params, grads)
        if conformed is None:
            return None
        grads, addresses = conformed
        if addresses != self.grad_addresses:
            self.grad_addresses = self.prepared = None  # until the new ones pass
            self.table[:, GRAD] = addresses
            validate.check_grads_clear(self.spans, self.table, self.nbytes)
            self.grad_addresses = addresses
        for j, run in self.gapped.items():
            run.copy_(params[j])
        return grads

    def _conformed(self, params, grads):
        """The grads with their runs' strides (a grad of other strides is copied) and their
        addresses, or None if a param, its memory or a grad's dtype changed. One pass over the
        params: it runs every step."""
        out, addresses = [], []
        if len(params) != len(self.addresses):
            return None
        try:
            for p, g, address, dtype, stride in zip(params, grads, self.addresses, self.dtypes,
                                                    self.strides):
                if p.data_ptr() != address or g.dtype is not dtype:
                    return None
                if g.stride() != stride:  # (a sparse grad has none: it raises)
                    g = torch.empty_strided(g.shape, stride, dtype=dtype, device=g.device).copy_(g)
                out.append(g)
                addresses.append(g.data_ptr())
        except RuntimeError:
            _check_strided(g)  # a sparse grad: torch's RMSprop's error
            raise
        return out, addresses

    def run(self, rule, params, grads, step=None, threads=None, lr_device=0):
        if self.capturable:
            self._launch_prepared(rule, lr_device)
        elif self.update_many is not None:
            self.update_many(self.columns, rule, step, self.table, self.sizes, threads)
        else:  # a backend without a multi-tensor entry (the NumPy reference): one call a param
            for j, g in enumerate(grads):
                row = Buffers(*(None if c is None else c[j] for c in self.columns))
                self.module.update(row._replace(grad=_array_of(_flat_run(g))), rule, step, threads)
        for j, run in self.gapped.items():
            params[j].copy_(run)

    def _launch_prepared(self, rule, lr_device):
        """The capturable launch: its tables on the device since the step that prepared it
        (the first, or the first after the grads moved), so that it only launches."""
        stream = torch.cuda.current_stream(self.device)
        if self.prepared is None:
            refuse_under_capture("the grads moved since the last eager step, so the step would "
                                 "copy a new pointer table to the device")
            first, columns = self.columns.param[0], self.columns
            self.prepared = self.module.prepare_many(
                first.device.id, first.dtype, self.table, self.sizes,
                columns.momentum_buffer is not None, columns.grad_avg is not None, stream=stream)
        self.prepared.launch(rule, None, lr_device, stream=stream)


def refuse_under_capture(why):
    """Raise, saying ``why`` and what to do, if the current CUDA stream is being captured."""
    if torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(
            f"fastrms: {why}, which a CUDA graph capture does not allow: run an eager step "
            "(warm-up) before capture, and keep the grads in place (zero_grad(set_to_none=False), "
            "or capture the backward pass too)")
