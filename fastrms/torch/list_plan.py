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

from collections import OrderedDict

import numpy as np
import torch

from .. import overlaps
from .._buffers import NAMES, PLAIN, Buffers
from ..functional import checked_lists
from ..rounding import STOCHASTIC, offset_of
from .param_state import MASTER, STATE_BUFFERS
from .tensors import _array_of, _check_strided, _dense, _flat_run, _real

GRAD = NAMES.index("grad")
PREPARED_KEPT = 16  # capturable launches kept per bucket (each: its tables on the device)


class ListPlan:
    """The buckets of lists of params, grads and state (``states``: name -> list, for the names
    the rule uses), one per (device, dtype)."""

    def __init__(self, rule, params, grads, states, backend, capturable=False, offsets=None):
        rows = {}
        for j, p in enumerate(params):
            rows.setdefault((p.device, _real(p).dtype), []).append(j)
        self.rows = None if len(rows) == 1 else list(rows.values())  # None: one bucket, all rows
        offsets = [offset_of(j) for j in range(len(params))] if offsets is None else offsets
        self.buckets = [Bucket(rule, *self._split(params, grads, states, offsets, picked),
                               backend, capturable) for picked in rows.values()]

    def _split(self, params, grads, states, offsets, picked):
        take = (lambda ts: [ts[j] for j in picked]) if self.rows is not None else list
        return (take(params), take(grads), {n: take(ts) for n, ts in states.items()},
                tuple(take(offsets)))

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

    def run(self, rule, params, gathered, step=None, threads=None, lr_device=0, extras=PLAIN):
        """One backend call per bucket (``gathered``: what ``gather`` returned)."""
        for j, (bucket, grads) in enumerate(zip(self.buckets, gathered)):
            picked = params if self.rows is None else [params[i] for i in self.rows[j]]
            bucket.run(rule, picked, grads, step, threads, lr_device, extras)


class Bucket:
    """The params of one (device, dtype): their checked pointer table.

    ``runs[j]`` is the tensor whose memory the kernel updates for param j: the param itself
    (``_dense``) or its contiguous scratch copy. The table's grad column is rewritten when the
    grads move; the other columns are fixed while the plan lives. Params are not kept: each call
    passes them (a plan cached by the operator must not keep a model alive).
    """

    def __init__(self, rule, params, grads, states, offsets, backend, capturable=False):
        self.offsets = offsets  # each param's counter for stochastic rounding
        for j, p in enumerate(params):
            if torch._debug_has_internal_overlap(p) == 1:  # 1: yes (2: cannot tell cheaply)
                raise ValueError(f"param[{j}] of shape {tuple(p.shape)} has elements that share "
                                 "memory (an expanded view): it cannot be updated in place")
        self.dtypes = [p.dtype for p in params]
        self.addresses = [p.data_ptr() for p in params]
        self.numels = [p.numel() for p in params]  # with the strides: the shape of a dense one
        self.param_strides = [p.stride() for p in params]
        self.complex = [p.is_complex() for p in params]
        self.device = params[0].device
        runs = [p if _dense(p) else torch.empty_like(p, memory_format=torch.contiguous_format)
                for p in params]
        self.strides = [run.stride() for run in runs]  # the grads must have them too
        self.gapped = {j: run for j, (p, run) in enumerate(zip(params, runs)) if run is not p}
        grads, _ = self._conformed(params, grads)
        masters = states.get(MASTER)
        if masters is not None and any(m is None for m in masters):
            masters = None  # (a bucket is of one dtype: all its params have masters, or none)
        if masters is not None and self.gapped:
            raise ValueError("master weights for params with gaps (strided views) are not "
                             "supported: make the param contiguous")
        columns = Buffers([_array_of(_flat_run(run)) for run in runs],
                          [_array_of(_flat_run(g)) for g in grads],
                          *(None if n not in states else [_array_of(_flat_run(s)) for s in states[n]]
                            for n in STATE_BUFFERS),
                          None if masters is None else [_array_of(_flat_run(m)) for m in masters])
        self.module, columns, self.table, self.sizes = checked_lists(rule, columns, backend)
        itemsizes = np.array([0 if c is None else c[0].itemsize for c in columns], dtype=np.int64)
        self.nbytes = self.sizes[:, None] * itemsizes
        self.spans = _with_gapped(overlaps.written_spans(self.table, self.nbytes), params,
                                  self.gapped)
        overlaps.check_grads_clear(self.spans, self.table, self.nbytes)
        self.grad_addresses = self.table[:, GRAD].tolist()
        self.update_many = getattr(self.module, "update_many", None)
        # What update_many reads of the columns: dtype, device, which state buffers. Arrays of
        # our own, not the callers' (a plan cached by the operator must not keep a model or the
        # build step's grads alive); the reference backend, without update_many, needs them all.
        self.columns = columns if self.update_many is None else _tags(columns, runs[0])
        self.capturable = capturable
        self.prepared = OrderedDict()  # capturable: table bytes -> its PreparedMany
        self.launch = None  # the PreparedMany of the current table

    def gather(self, params, grads):
        """The grads as the kernel reads them, their addresses written into the table and
        checked, the gapped params copied to scratch; None if a param or its memory changed."""
        conformed = self._conformed(params, grads)
        if conformed is None:
            return None
        grads, addresses = conformed
        if addresses != self.grad_addresses:
            self.grad_addresses = self.launch = None  # until the new ones pass
            self.table[:, GRAD] = addresses
            overlaps.check_grads_clear(self.spans, self.table, self.nbytes)
            self.grad_addresses = addresses
        if self.capturable and self.launch is None:
            self.launch = self.prepared.get(self.table.tobytes())
            if self.launch is None:  # checked here, before any bucket launches
                refuse_under_capture("the grads moved since the last eager step, so the step "
                                     "would copy a new pointer table to the device")
        for j, run in self.gapped.items():
            run.copy_(params[j])
        return grads

    def _conformed(self, params, grads):
        """The grads with their runs' strides (a grad of other strides, or a lazily conjugated
        one, is copied) and their addresses, or None if a param, its memory or layout, or a
        grad's dtype changed. One pass over the params: it runs every step."""
        out, addresses = [], []
        if len(params) != len(self.addresses):
            return None
        try:
            for p, g, address, numel, p_stride, dtype, stride, is_complex in zip(
                    params, grads, self.addresses, self.numels, self.param_strides, self.dtypes,
                    self.strides, self.complex):
                if p.data_ptr() != address or p.stride() != p_stride or p.numel() != numel \
                        or g.dtype is not dtype:
                    return None
                if is_complex:  # torch's lazy conj/neg bits: the memory holds other values
                    g = g.resolve_conj().resolve_neg()
                if g.stride() != stride:  # (a sparse grad has none: it raises)
                    g = torch.empty_strided(g.shape, stride, dtype=dtype, device=g.device).copy_(g)
                out.append(g)
                addresses.append(g.data_ptr())
        except RuntimeError:
            _check_strided(g)  # a sparse grad: torch's RMSprop's error
            raise
        return out, addresses

    def run(self, rule, params, grads, step=None, threads=None, lr_device=0, extras=PLAIN):
        extras = extras._replace(offsets=self.offsets)
        if self.capturable:
            self._launch_prepared(rule, lr_device, extras)
        elif self.update_many is not None:
            self.update_many(self.columns, rule, step, self.table, self.sizes, threads,
                             extras=extras)
        else:  # a backend without a multi-tensor entry (the NumPy reference): one call a param
            for j, g in enumerate(grads):
                row = Buffers(*(None if c is None else c[j] for c in self.columns))
                self.module.update(row._replace(grad=_array_of(_flat_run(g))), rule, step,
                                   threads, extras=extras._replace(offsets=self.offsets[j]))
        for j, run in self.gapped.items():
            params[j].copy_(run)

    def _launch_prepared(self, rule, lr_device, extras):
        """The capturable launch: its tables on the device since the step that prepared them.
        The last ``PREPARED_KEPT`` prepared launches are kept, by their table's bytes: a captured
        graph replays its tables' address, so they must outlive a later eager step whose grads
        moved; and grads that come back to earlier addresses find their launch ready."""
        stream = torch.cuda.current_stream(self.device)
        if extras.rounding == STOCHASTIC:
            refuse_under_capture("stochastic rounding keys each step on the host (a graph "
                                 "would replay one step's random bits)")
        if self.launch is None:
            first, columns = self.columns.param[0], self.columns
            self.launch = self.prepared[self.table.tobytes()] = self.module.prepare_many(
                first.device.id, first.dtype, self.table, self.sizes,
                columns.momentum_buffer is not None, columns.grad_avg is not None, stream=stream,
                offsets=self.offsets)
            if len(self.prepared) > PREPARED_KEPT:
                self.prepared.popitem(last=False)
        self.launch.launch(rule, None, lr_device, stream=stream, extras=extras)


def _tags(columns, run):
    """``columns`` as the backends' ``update_many`` reads them when the table holds the addresses
    (the param dtype and device, which state buffers are present): one array of ours for each."""
    tag = [_array_of(_flat_run(torch.empty(1, dtype=run.dtype, device=run.device)))]
    return Buffers(*(None if c is None else tag for c in columns))


def _with_gapped(spans, params, gapped):
    """The written spans and the extents of the gapped params (from their first to their last
    element: their scratch copies are in the table, their own memory is not), sorted; refused if
    an extent overlaps another, as a dense param's memory would be."""
    if not gapped:
        return spans
    starts, ends = spans
    extents = [(params[j].data_ptr(), _extent_end(params[j]), j) for j in gapped]
    for start, end, j in extents:
        others = [(s, e) for s, e, k in extents if k != j]
        if any(start < e and s < end for s, e in zip(starts, ends)) \
                or any(start < e and s < end for s, e in others):
            raise ValueError(f"param[{j}] (a strided view with gaps) lies among the memory of "
                             "another buffer of the step; fastrms refuses it rather than update "
                             "memory it cannot tell apart")
    starts = np.concatenate([starts, [s for s, _, _ in extents]])
    ends = np.concatenate([ends, [e for _, e, _ in extents]])
    order = np.argsort(starts, kind="stable")
    return starts[order], ends[order]


def _extent_end(t):
    """One past the last byte of a tensor with positive strides."""
    last = sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
    return t.data_ptr() + (last + 1) * t.element_size()


def refuse_under_capture(why):
    """Raise, saying ``why`` and what to do, if the current CUDA stream is being captured."""
    if torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(
            f"fastrms: {why}, which a CUDA graph capture does not allow: run an eager step "
            "(warm-up) before capture, with the grads where the captured step will find them "
            "(zero_grad(set_to_none=False), so that backward accumulates into the same grads)")
