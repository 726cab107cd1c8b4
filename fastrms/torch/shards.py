"""One bucket of ``ShardedRMSprop``: the params of a (group, device, dtype) re-pointed into one
``FlatBuffer`` padded to ``world × length`` elements, of which this rank owns the slice
``[rank·length, (rank+1)·length)`` and keeps the optimizer state of that slice only.

``length`` is a multiple of ``ALIGN`` elements, so every shard starts on a block of 8-bit state
and on a 64-byte line. The padding holds zeros in every buffer, which the update keeps zero.

A bucket with 8-bit state (``eight``) also starts every param on a block, so that each param's
blocks are its own (and a whole param's codes and scales are slices of the shards'); its state
is, per buffer, codes and scales under ``eight_bit.code_keys``.
"""

import torch

from .. import eight_bit, quant8
from ..dtypes import state_dtype
from ..eight_bit import Codes, code_keys
from ..flat import FlatBuffer
from .flat_group import gather_grads
from .param_state import MASTER, _get_scalar_dtype
from .tensors import HALF_DTYPES, _array_of

ALIGN = 256  # elements per shard boundary: a block of 8-bit state, 1 KiB of float32


class Bucket:
    """``params`` (one device and dtype) in one flat buffer, this rank's shard of it and its state.

    ``master``: keep float32 master weights of the shard (half-precision params). ``eight``:
    keep its state in 8 bits.
    """

    def __init__(self, params, world, rank, master, eight=False):
        self.params, self.eight = params, eight
        align = quant8.BLOCK * params[0].element_size() if eight else 64
        self.flat = FlatBuffer([p.detach() for p in params], align=align,
                               multiple=world * ALIGN)
        self.length = self.flat.size // world
        self.start, self.end = rank * self.length, (rank + 1) * self.length
        for p, view in zip(params, self.flat.views):
            p.data = view
        self.addresses = [p.data_ptr() for p in params]
        self.numels = [p.numel() for p in params]
        self.shard = self.flat.data[self.start:self.end]
        self.shard_grad = self.flat.grad[self.start:self.end]  # reduce_scatter_single: in place
        self.steps = torch.zeros(len(params), dtype=_get_scalar_dtype())  # every param's count
        self.state = {}  # name (or 8-bit key) -> this shard's buffer
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
        """This shard's state buffer ``name`` (``Codes`` of 8-bit state), created on first use
        (zeros; the master weights from the params' own values, which widen exactly)."""
        if self.eight and name != MASTER:
            return Codes(*(self.tensor(key) for key in code_keys(name)))
        return self.tensor(name)

    def tensor(self, key):
        """This shard's state tensor ``key`` (a buffer's name, or an 8-bit one's ``code_keys``),
        created on first use as ``buffer`` says."""
        if key not in self.state:
            if key in eight_bit.CODE_KEYS:
                name = eight_bit.NAME_OF[key]
                for k, a in zip(code_keys(name), eight_bit.filled((self.length,), 0.0, name)):
                    self.state[k] = torch.from_numpy(a).to(self.shard.device)
                return self.state[key]
            dtype = state_dtype(self.params[0].dtype)
            self.state[key] = torch.zeros(self.length, dtype=dtype, device=self.shard.device)
            if key == MASTER:
                self.state[key].copy_(self.shard)
        return self.state[key]

    def expected(self, key):
        """``(numel, dtype)`` of this shard's tensor ``key``, or None: not a state it keeps."""
        names = {MASTER} | (eight_bit.CODE_KEYS if self.eight else set(eight_bit.KINDS))
        if key not in names or (key == MASTER and not self.master):
            return None
        if key in eight_bit.CODE_KEYS:
            per = per_value(key)
            return self.length // per, (torch.float32 if per > 1 else torch.uint8)
        return self.length, state_dtype(self.params[0].dtype)

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
            columns = [[_piece(t, at, hi - lo) for j, (lo, hi, at) in self.pieces.items()
                        if stepped[j]] for t in tensors]
        by_name = dict(zip(names, columns[2:]))
        return (columns[0], columns[1], by_name["square_avg"], by_name.get("momentum_buffer"),
                by_name.get("grad_avg"), by_name.get(MASTER))

    def _native(self, t):
        if isinstance(t, Codes):
            return Codes(*(self._native(x) for x in t))
        array = self.natives.get(id(t))
        if array is None:
            array = self.natives[id(t)] = _array_of(t)
        return array

    # -- state of whole params, for the consolidated state dict -------------------------------

    def shard_of(self, j, value, key):
        """The part of ``value`` (param ``j``'s whole state tensor ``key``) that this shard
        holds, and where it goes in the shard: ``(piece, shard_lo, shard_hi)``, or None."""
        if j not in self.pieces:
            return None
        per = per_value(key)
        lo, hi, at = self.pieces[j]
        lo, hi, at = lo // per, -(-hi // per), at // per
        return value.reshape(-1)[lo:hi], at, at + hi - lo

    def whole(self, j, full, key):
        """Param ``j``'s state tensor ``key`` (shaped like the param, or one scale per block)
        from ``full`` (every rank's shards of it, concatenated)."""
        per = per_value(key)
        offset, numel = self.flat.offsets[j] // per, -(-self.numels[j] // per)
        piece = full[offset:offset + numel]
        return (piece.reshape(self.params[j].shape) if per == 1 else piece).clone()


def per_value(key):
    """Values per element of state tensor ``key``: a block's for 8-bit scales, else one."""
    return quant8.BLOCK if key in eight_bit.SCALE_KEYS else 1


def _piece(t, at, n):
    """What ``apply`` (``apply8`` for ``Codes``) takes for ``n`` values of shard tensor ``t``
    from ``at`` (a block's start, for ``Codes``)."""
    if isinstance(t, Codes):
        return Codes(_array_of(t.codes[at:at + n]),
                     _array_of(t.scales[at // quant8.BLOCK:][:quant8.blocks_of(n)]))
    return _array_of(t[at:at + n])


def state_bytes(buckets):
    """Bytes of optimizer state these buckets hold (their shards' buffers and step counts)."""
    return sum(t.numel() * t.element_size() for b in buckets
               for t in (*b.state.values(), b.steps))

