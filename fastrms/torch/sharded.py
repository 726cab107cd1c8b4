"""``fastrms.torch.ShardedRMSprop``: ZeRO stage 1 on torch.distributed (docs/sharded.md).

Each param group's params are packed, per (device, dtype), into one flat buffer (``shards``)
that every rank holds whole; each rank keeps the optimizer state of one contiguous, aligned
slice of it. A step sums the gradients over the ranks (``collectives``), divides this rank's
shard by the world size, runs the fused update over that shard alone, and gathers every rank's
updated shard into every rank's params.
"""

import torch

from ..eight_bit import apply8, check_state_bits
from ..functional import apply
from ..threads import check_count
from ..threads import resolve as resolve_threads
from . import sharded_state
from .collectives import Collectives, check_choice
from .eight_bit_state import takes_codes
from .groups import _check_defaults, _check_group
from .param_state import _state_names
from .shards import Bucket, state_bytes
from .tensors import _check_dtype


class ShardedRMSprop(torch.optim.Optimizer):
    """``torch.optim.RMSprop``'s arguments, defaults and update, with its state sharded across the
    ranks of ``process_group`` (default: the whole world) as ZeRO stage 1 does.

    Every rank constructs it over the same params (checked: count, shapes, dtypes, devices), and
    rank 0's param values are broadcast to the others, so that a model without DDP starts and
    trains as with it. A step needs no DDP: it reduces the gradients itself (their mean over the
    ranks). Under DDP, whose backward has already averaged them, pass ``reduce_grads=False``.

    ``collectives``: "auto" (gloo: all_reduce then broadcasts; NCCL: reduce_scatter then
    all_gather, chosen by measurement: ``fastrms.torch.collectives``) or such a pair of names.
    ``timeout`` (seconds or a timedelta) bounds every collective: a rank that raised, exited or
    never reached the step makes the others raise instead of hanging. ``master_weights``: as in
    ``fastrms.torch.RMSprop``, for the shard only. ``backend``, ``threads``: of the update.
    ``state_bits=8``, ``threshold``: as in ``fastrms.torch.RMSprop`` (docs/eight-bit.md); the
    params with 8-bit state are packed apart, each starting on a block, and shards start on
    blocks, so that every block's scale lives on one rank.

    ``reduce_gradients()`` averages the gradients before the step, for what must see the mean on
    every rank (torch.amp.GradScaler, ``clip_grad_norm_``). Checkpoints: ``state_dict()`` is this
    rank's shard; ``consolidate_state_dict(to=0)`` gathers one in torch.optim.RMSprop's layout,
    which any world size loads.
    """

    def __init__(self, params, process_group=None, lr=1e-2, alpha=0.99, eps=1e-8,
                 weight_decay=0, momentum=0, centered=False, maximize=False, foreach=None,
                 capturable=False, differentiable=False, master_weights=False,
                 reduce_grads=True, collectives="auto", timeout=600.0, backend="auto",
                 threads=None, state_bits=32, threshold=4096):
        _check_defaults(lr, alpha, eps, weight_decay, momentum)
        self.state_bits, self.threshold = check_state_bits(state_bits, threshold)
        self._coll = Collectives(process_group, timeout)
        self.collectives = check_choice(collectives)
        self.master_weights, self.reduce_grads = bool(master_weights), bool(reduce_grads)
        self.backend = backend
        self.threads = None if threads is None else check_count(threads)
        self._buckets = None  # per param group: its Buckets (built once every group is known)
        self._reduced = None  # the flags of reduce_gradients, until the step that uses them
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                        maximize=maximize, differentiable=differentiable)
        super().__init__(params, defaults)
        sharded_state.check_same_params(self._coll, self.param_groups)
        self._buckets = [self._bucketed(group) for group in self.param_groups]
        for bucket in self._all_buckets():  # rank 0's values everywhere
            self._coll.broadcast(bucket.flat.data, "the broadcast of rank 0's params")

    def add_param_group(self, param_group):
        """As torch's, while constructing; afterwards refused (every rank would have to add the
        same group at the same time, and the shards to be rebuilt)."""
        if self._buckets is not None:
            raise NotImplementedError("ShardedRMSprop cannot add a param group after "
                                      "construction: build it with every group")
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            if group.get("capturable"):
                raise ValueError("capturable=True is not supported by ShardedRMSprop: its step "
                                 "runs collectives")
            _check_group(group)
            for p in group["params"]:
                _check_dtype(p)
                if p.is_complex():
                    raise TypeError("ShardedRMSprop does not shard complex params yet")
        except (ValueError, TypeError):
            self.param_groups.pop()
            raise

    def _bucketed(self, group):
        buckets = {}
        for p in group["params"]:
            coded = self.state_bits == 8 and takes_codes(p, self.threshold, flat=True)
            buckets.setdefault((p.device, p.dtype, coded), []).append(p)
        return [Bucket(params, self._coll.world, self._coll.rank, self.master_weights, coded)
                for (_, _, coded), params in buckets.items()]

    def _all_buckets(self):
        return [b for buckets in self._buckets for b in buckets]

    @property
    def rank(self):
        return self._coll.rank

    @property
    def world_size(self):
        return self._coll.world

    def state_bytes(self):
        """Bytes of optimizer state this rank holds (its shards' buffers and the step counts)."""
        return state_bytes(self._all_buckets())

    # -- the step ---------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure=None):
        """One step on every rank (a collective: every rank must call it): reduce the
        gradients (unless ``reduce_gradients`` did), update this rank's shards, gather the
        params. Params with a gradient on no rank are not stepped (as torch skips them)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        buckets = self._current_buckets()
        rules = [_check_group(group, False) for group in self.param_groups]
        if self._reduced is None:
            flags, reduce = self._exchange_flags(buckets), self.reduce_grads
        else:  # reduce_gradients ran: its flags, and the grads as they are now
            for bucket in buckets:
                bucket.gather_grads()
            flags, reduce, self._reduced = self._reduced, False, None
        threads = resolve_threads(self.threads, framework=torch.get_num_threads())
        at = 0
        for group, rule, group_buckets in zip(self.param_groups, rules, self._buckets):
            for bucket in group_buckets:
                stepped = flags[at:at + len(bucket.params)]
                at += len(bucket.params)
                if any(stepped):
                    self._step_bucket(bucket, rule, stepped, threads, reduce)
        return loss

    @torch.no_grad()
    def reduce_gradients(self):
        """Average the gradients over the ranks now, in every rank's whole gradient (one
        all_reduce per bucket), for what reads them before ``step()``: torch.amp.GradScaler's
        unscale and inf check, ``clip_grad_norm_``. Every param with a gradient on some rank then
        has it (``p.grad``, a view of the flat gradient) on every rank, and the next ``step()``
        reduces nothing. A collective: every rank must call it."""
        buckets = self._current_buckets()
        flags, world = self._exchange_flags(buckets), self._coll.world
        at = 0
        for bucket in buckets:
            if world > 1 and self.reduce_grads:
                self._coll.reduce("all_reduce", bucket.flat.grad, None)
                bucket.flat.grad.div_(world)
            for p, view, on in zip(bucket.params, bucket.flat.grad_views,
                                   flags[at:at + len(bucket.params)]):
                if on:
                    p.grad = view
            at += len(bucket.params)
        self._reduced = flags

    def zero_grad(self, set_to_none=True):
        """torch's; it also forgets a ``reduce_gradients`` whose step was skipped (by a
        GradScaler that found infs), so that the next step reduces its own gradients."""
        self._reduced = None
        super().zero_grad(set_to_none)

    def _current_buckets(self):
        buckets = self._all_buckets()
        if not all(b.current() for b in buckets):
            raise RuntimeError("ShardedRMSprop's params moved out of its flat buffers (say, by "
                               "model.to(...)): construct the optimizer after moving the model")
        return buckets

    def _exchange_flags(self, buckets):
        """Move the grads into the flat buffers; a flag per param: has a gradient on some rank."""
        flags = torch.cat([b.gather_grads() for b in buckets])
        if self._coll.world > 1:
            flags = flags.to(self._coll.device)
            self._coll.any(flags, "the exchange of which params have gradients")
        return flags.tolist()

    def _step_bucket(self, bucket, rule, stepped, threads, reduce):
        world = self._coll.world
        reduction, gather = self._coll.plan(self.collectives, bucket.shard.device)
        if world > 1 and reduce:
            self._coll.reduce(reduction, bucket.flat.grad, bucket.shard_grad)
            bucket.shard_grad.div_(world)  # the mean, correctly rounded, of this shard only
        columns = bucket.columns(_state_names(rule), stepped)
        if not bucket.eight:
            apply(rule, *columns[:5], backend=self.backend, threads=threads,
                  master_param=columns[5])
        else:  # one 8-bit call for the whole shard, or one per piece (lists)
            count = len(columns[0]) if isinstance(columns[0], list) else None
            for k in range(count or 1):
                piece = [c if count is None or c is None else c[k] for c in columns]
                apply8(rule, *piece[:5], backend=self.backend, threads=threads,
                       master_param=piece[5])
        if world > 1:
            self._coll.gather(gather, bucket.flat.data, bucket.length)
        bucket.steps += torch.tensor(stepped, dtype=bucket.steps.dtype)
        torch.autograd.graph.increment_version(bucket.params)

    # -- state dicts (fastrms.torch.sharded_state) -------------------------------------------

    def state_dict(self):
        """This rank's shard of the state (``consolidate_state_dict`` gathers the whole)."""
        return sharded_state.shard_state_dict(self, super().state_dict()["param_groups"])

    def consolidate_state_dict(self, to=0):
        """The whole state, in torch.optim.RMSprop's layout (which it and
        ``fastrms.torch.RMSprop`` load), on rank ``to``; None on the others. A collective:
        every rank must call it."""
        return sharded_state.consolidate(self, super().state_dict()["param_groups"], to)

    def load_state_dict(self, state_dict):
        """Load this rank's own ``state_dict()``, or a whole state dict (consolidated,
        torch.optim.RMSprop's or fastrms.torch.RMSprop's) of which each rank takes its shard,
        for any world size."""
        sharded_state.load(self, state_dict)
