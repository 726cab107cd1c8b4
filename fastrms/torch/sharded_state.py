"""``ShardedRMSprop``'s checks across ranks and state dicts: a rank's own shard, the whole state
consolidated on one rank (torch.optim.RMSprop's layout), and loading either (re-sharding a whole
one to this world size).
"""

import numpy as np
import torch

from .. import eight_bit
from .param_state import FORMAT, MASTER, STATE_BUFFERS, format_info

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_DIMS = 8  # dimensions compared per param (more are folded into the last)


def _signatures(param_groups):
    """One row per param: group, dtype, device type, ndim, shape (int64)."""
    rows = []
    for index, group in enumerate(param_groups):
        for p in group["params"]:
            shape = list(p.shape[:_DIMS - 1]) + ([p.shape[_DIMS - 1:].numel()]
                                                 if p.dim() >= _DIMS else [])
            dtype = _DTYPES.index(p.dtype) if p.dtype in _DTYPES else len(_DTYPES)
            rows.append([index, dtype, p.device.type == "cuda", p.dim()]
                        + shape + [-1] * (_DIMS - len(shape)))
    return torch.tensor(rows, dtype=torch.int64).reshape(-1, 4 + _DIMS)


def _describe(row):
    group, dtype, cuda, ndim = row[:4]
    dtype = str(_DTYPES[dtype]) if dtype < len(_DTYPES) else "another dtype"
    return (f"a {dtype} param of shape {tuple(row[4:4 + min(ndim, _DIMS)])} on "
            f"{'cuda' if cuda else 'the cpu'} in group {group}")


def check_same_params(coll, param_groups):
    """Every rank must hold the same params (count, groups, shapes, dtypes, devices): else a
    ValueError on every rank naming the first mismatch."""
    if coll.world == 1:
        return
    rows = _signatures(param_groups)
    counts = coll.all_gather(torch.tensor([len(rows)], device=coll.device), "the param check")
    counts = counts.reshape(-1).tolist()
    if len(set(counts)) > 1:
        rank = next(r for r, n in enumerate(counts) if n != counts[0])
        raise ValueError(f"ShardedRMSprop: rank {rank} has {counts[rank]} params and rank 0 "
                         f"{counts[0]}: every rank must pass the same params")
    every = coll.all_gather(rows.to(coll.device), "the param check").cpu().tolist()
    for rank, theirs in enumerate(every):
        for position, (mine, other) in enumerate(zip(every[0], theirs)):
            if mine != other:
                raise ValueError(f"ShardedRMSprop: param {position} is {_describe(mine)} on "
                                 f"rank 0 but {_describe(other)} on rank {rank}: every rank must "
                                 "pass the same params")


def _indices(optimizer):
    """Every param's index in torch's state dicts (its position over the groups)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return {id(p): k for k, p in enumerate(params)}


def shard_state_dict(optimizer, param_groups):
    """This rank's state: its shards' buffers and every param's step count, under a key
    ("shards") in place of torch's "state", so that torch's optimizers refuse it."""
    index = _indices(optimizer)
    shards = []
    for position, buckets in enumerate(optimizer._buckets):
        for b in buckets:
            shards.append({"group": position, "params": [index[id(p)] for p in b.params],
                           "size": b.flat.size, "start": b.start, "end": b.end,
                           "step": b.steps.clone(),
                           "state": {name: t.clone() for name, t in b.state.items()}})
    return {"param_groups": param_groups, "shards": shards,
            "fastrms": {"format": FORMAT, "sharded": {"world_size": optimizer.world_size,
                                                      "rank": optimizer.rank}}}


def consolidate(optimizer, param_groups, to):
    """The whole state on rank ``to`` in torch.optim.RMSprop's layout (None on the others)."""
    coll, index = optimizer._coll, _indices(optimizer)
    if not (isinstance(to, int) and 0 <= to < coll.world):
        raise ValueError(f"to must be a rank of the group (0 to {coll.world - 1}), got {to!r}")
    state = {}
    for b in optimizer._all_buckets():
        for name in sorted(b.state):  # the same names on every rank: created at the same steps
            pieces = coll.gather_to(b.state[name], to, f"the consolidation of {name}")
            if pieces is None:
                continue
            full = torch.cat(pieces)
            for j, p in enumerate(b.params):
                if b.steps[j] > 0:
                    state.setdefault(index[id(p)], {})[name] = b.whole(j, full, name)
        if coll.rank == to:
            for j, p in enumerate(b.params):
                if b.steps[j] > 0:
                    state.setdefault(index[id(p)], {})["step"] = b.steps[j].clone()
    if coll.rank != to:
        return None
    info = {"format": FORMAT, "flatten": False}
    if optimizer.state_bits == 8:
        info["state_bits"] = 8
    return {"state": dict(sorted(state.items())), "param_groups": param_groups, "fastrms": info}


def load(optimizer, state_dict):
    """Load a rank's own shard dict, or a whole one (each rank takes its shard)."""
    info = format_info(state_dict)
    saved_groups = state_dict["param_groups"]
    if len(saved_groups) != len(optimizer.param_groups):
        raise ValueError("loaded state dict has a different number of parameter groups")
    for saved, group in zip(saved_groups, optimizer.param_groups):
        if len(saved["params"]) != len(group["params"]):
            raise ValueError("loaded state dict contains a parameter group that doesn't match "
                             "the size of optimizer's group")
    sharded = info.get("sharded")
    if sharded is not None:
        _load_shards(optimizer, state_dict, sharded)
    else:
        _load_whole(optimizer, state_dict, saved_groups)
    for saved, group in zip(saved_groups, optimizer.param_groups):
        group.update({k: v for k, v in saved.items() if k != "params"})


def _load_shards(optimizer, state_dict, sharded):
    if (sharded["world_size"], sharded["rank"]) != (optimizer.world_size, optimizer.rank):
        raise ValueError(
            f"this state dict is rank {sharded['rank']}'s shard of {sharded['world_size']} ranks; "
            f"this is rank {optimizer.rank} of {optimizer.world_size}: load a consolidated state "
            "dict (consolidate_state_dict) to change the world size")
    buckets = optimizer._all_buckets()
    index = _indices(optimizer)
    shards = state_dict["shards"]
    if len(shards) != len(buckets):
        raise ValueError(f"the state dict has {len(shards)} shards, this optimizer {len(buckets)}")
    for k, (shard, b) in enumerate(zip(shards, buckets)):
        layout = ([index[id(p)] for p in b.params], b.flat.size, b.start, b.end)
        if (shard["params"], shard["size"], shard["start"], shard["end"]) != layout:
            raise ValueError(f"shard {k} of the state dict does not fit this optimizer's params "
                             f"(params, size, start, end: {layout})")
        for name, t in shard["state"].items():
            expected = b.expected(name)
            if expected is None or (t.numel(), t.dtype) != expected:
                raise ValueError(f"shard {k}'s {name!r} ({t.dtype}, {t.numel()} values) does not "
                                 f"fit a shard of {b.length} values"
                                 + ("" if expected else f" with state_bits={8 if b.eight else 32}"))
    for shard, b in zip(shards, buckets):
        b.steps.copy_(shard["step"])
        b.drop_state()
        for name, t in shard["state"].items():
            b.tensor(name).copy_(t)


def _load_whole(optimizer, state_dict, saved_groups):
    saved_index = {id(p): k for saved, group in zip(saved_groups, optimizer.param_groups)
                   for k, p in zip(saved["params"], group["params"])}
    state = {k: s for k, s in state_dict["state"].items() if isinstance(s, dict)}
    if optimizer.state_bits != 8 and any(eight_bit.is_eight_bit(s) for s in state.values()):
        raise ValueError("this state dict holds 8-bit state (codes and scales): load it into "
                         "ShardedRMSprop(state_bits=8), or convert it with "
                         "fastrms.torch.float32_state_dict first")
    wanted = {}  # param index -> its state as its bucket keeps it (8-bit or float)
    for b in optimizer._all_buckets():  # check everything before writing
        for p in b.params:
            k = saved_index[id(p)]
            saved = state.get(k, {})
            for name, value in saved.items():
                if name in (*STATE_BUFFERS, MASTER) and value.numel() != p.numel():
                    raise ValueError(f"the state {name!r} of param {k} has {value.numel()} "
                                     f"elements; the param has {p.numel()}")
            eight_bit.check_codes_fit(saved, tuple(p.shape), f"state of param {k}")
            wanted[k] = _as_kept(saved, b.eight)
    for b in optimizer._all_buckets():
        b.drop_state()
        b.steps.zero_()
        for j, p in enumerate(b.params):
            saved = wanted[saved_index[id(p)]]
            if "step" in saved:
                b.steps[j] = float(saved["step"])
            for name, value in saved.items():
                if name != "step" and b.expected(name) is not None:
                    piece = b.shard_of(j, value, name)
                    buffer = b.tensor(name)  # created whole (zeros, or the params for masters)
                    if piece is not None:
                        buffer[piece[1]:piece[2]].copy_(piece[0].reshape(-1))


def _as_kept(saved, eight):
    """A param's saved state with its buffers as a bucket keeps them: coded (``eight``) or
    float32, converted where the state dict holds the other kind."""
    if eight_bit.is_eight_bit(saved) == eight or not any(
            name in saved for name in (*STATE_BUFFERS, *eight_bit.CODE_KEYS)):
        return saved
    host = {key: (value.detach().cpu().float().numpy() if key in STATE_BUFFERS
                  else value.detach().cpu().numpy() if key in eight_bit.CODE_KEYS else value)
            for key, value in saved.items()}
    converted = eight_bit.eight_bit_state(host) if eight else eight_bit.float32_state(host)
    return {key: torch.from_numpy(np.ascontiguousarray(value))
            if key in (*STATE_BUFFERS, *eight_bit.CODE_KEYS) else value
            for key, value in converted.items()}


__all__ = ["check_same_params", "consolidate", "load", "shard_state_dict"]
