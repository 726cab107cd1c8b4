"""One bucket of ``ShardedRMSprop``: the params of a (group, device, dtype) re-pointed into one
``FlatBuffer`` padded to ``world × length`` elements, of which this rank owns the slice
``[rank·length, (rank+1)·length)`` and keeps the optimizer state of that slice only.

``length`` is a multiple of ``ALIGN`` elements, so every shard starts on a block of 8-bit state
and on a 64-byte line. The padding holds zeros in every buffer, which the update keeps zero.
"""

import torch

from ..dtypes import state_dtype
from ..flat import FlatBuffer
from .flat_group import gather_grads
from .param_state import MASTER, _get_scalar_dtype
from .tensors import HALF_DTYPES, _array_of

ALIGN = 256  # elements per shard boundary: a block of 8-bit state, 1 KiB of float32


class Bucket:
    """``params`` (one device and dtype) in one flat buffer, this rank's shard of it and its state.

    ``master``: keep float32 master weights of the shard (half-precision params).
    """

    def __init__(self, params, world, rank, master):
        self.params = params
        self.flat = FlatBuffer([p.detach() for p in params], multiple=world * ALIGN)
        self.length = self.flat.size // world
        self.start, self.end = rank * self.length, (rank + 1) * self.length
        for p, view in zip(params, self.flat.views):
            p.data = view
        self.addresses = [p.data_ptr() for p in params]
        self.numels = [p.numel() for p in params]
        self.shard = self.flat.data[self.start:self.end]
        self.shard_grad = self.flat.grad[self.start:self.end]  # reduce_scatter_single: in place
        self.steps = torch.zeros(len(params), dtype=_get_scalar_dtype())  # every param's count
        self.state = {}  # name -> this shard's buffer (the state dtype)
        self.master = master and params[0].dtype in HALF_DTYPES
        self.natives = {}  # id of a whole shard tensor -> its native array
        # j -> (lo, hi, at): param j's elements [lo, hi) lie in this shard from offset ``at``.
        self.pieces = {}
        for j, (offset, numel) in enumerate(zip(self.flat.offsets, self.numels)):
            lo, hi = max(self.start - offset, 0), min(self.end - offset, numel)
            if lo < hi:
                self.pieces[j] = (lo, hi, lo + offset - self.start)

    def current(self):
        """Whether every param still lives in the flat buffer (``model.to(...)`` moves them)."""
        return all(p.data_ptr() == a for p, a in zip(self.params, self.addresses))

    def buffer(self, name):
        """This shard's state buffer ``name``, created on first use (zeros; the master weights
        from the params' own values, which widen exactly)."""
        if name not in self.state:
            dtype = state_dtype(self.params[0].dtype)
            self.state[name] = torch.zeros(self.length, dtype=dtype, device=self.shard.device)
            if name == MASTER:
                self.state[name].copy_(self.shard)
        return self.state[name]

    def drop_state(self):
        """Forget the state buffers (a load replaces them), and the arrays made over them: a new
        buffer may get a freed one's id."""
        self.state.clear()
        self.natives.clear()

    def state_names(self, names):
        return tuple(names) + ((MASTER,) if self.master else ())

    def gather_grads(self):
        """A flag per param: has a gradient here; that gradient is moved into the flat gradient
        buffer, and the flat views of params without one are zeroed (they add nothing)."""
        with_grad = gather_grads(self.params, self.flat.grad_views)
        flags = torch.zeros(len(self.params), dtype=torch.int32)
        flags[with_grad] = 1
        for j in set(range(len(self.params))) - set(with_grad):
            self.flat.grad_views[j].zero_()
        return flags

    def columns(self, names, stepped):
        """What ``apply`` takes: the whole shard's param, grad and state (one call) when every
        param in it steps, else lists of the pieces of the params that do (``stepped``)."""
        names = self.state_names(names)
        tensors = [self.shard, self.shard_grad] + [self.buffer(n) for n in names]
        if all(stepped[j] for j in self.pieces):
            columns = [self._native(t) for t in tensors]
        else:
            columns = [[_array_of(t[at:at + hi - lo]) for j, (lo, hi, at) in self.pieces.items()
                        if stepped[j]] for t in tensors]
        by_name = dict(zip(names, columns[2:]))
        return (columns[0], columns[1], by_name["square_avg"], by_name.get("momentum_buffer"),
                by_name.get("grad_avg"), by_name.get(MASTER))

    def _native(self, t):
        array = self.natives.get(id(t))
        if array is None:
            array = self.natives[id(t)] = _array_of(t)
        return array

    # -- state of whole params, for the consolidated state dict -------------------------------

    def shard_of(self, j, value):
        """The part of ``value`` (param ``j``'s whole state buffer) that this shard holds, and
        where it goes in the shard: ``(piece, shard_lo, shard_hi)``, or None."""
        if j not in self.pieces:
            return None
        lo, hi, at = self.pieces[j]
        return value.reshape(-1)[lo:hi], at, at + hi - lo

    def whole(self, j, full):
        """Param ``j``'s state buffer, shaped like it, from ``full`` (every rank's shards of one
        state buffer, concatenated)."""
        offset = self.flat.offsets[j]
        return full[offset:offset + self.numels[j]].reshape(self.params[j].shape).clone()


def state_bytes(buckets):
    """Bytes of optimizer state these buckets hold (their shards' buffers and step counts)."""
    return sum(t.numel() * t.element_size() for b in buckets
               for t in (*b.state.values(), b.steps))

