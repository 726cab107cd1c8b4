"""What the ranks of tests/test_sharded.py run (gloo on 127.0.0.1, spawned by the test): each
rank writes what it measured to ``<out>/rank<r>.pt`` for the test to assert on."""

import datetime
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

BATCH = 12  # the global batch: divisible by 1, 2, 3 and 6 ranks
OPTIONS = dict(lr=1e-3, alpha=0.9, momentum=0.9, centered=True, weight_decay=1e-3)
TIMEOUT = 20.0  # seconds, for every collective of these tests


def spawn(target, world, out, *args):
    """Run ``target(rank, world, out, *args)`` on ``world`` gloo ranks; return the exception of
    the first rank that raised, or None."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        mp.spawn(_rank, args=(world, port, target, out, args), nprocs=world, join=True)
    except mp.ProcessRaisedException as error:  # a rank raised: the test asserts on the files
        return error
    return None


def _rank(rank, world, port, target, out, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        target(rank, world, out, *args)
    finally:
        dist.destroy_process_group()


def mlp(seed=0, width=256):
    """32 → width → width → 10, tanh: 77 k params for width 256."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(32, width), torch.nn.Tanh(),
                               torch.nn.Linear(width, width), torch.nn.Tanh(),
                               torch.nn.Linear(width, 10))


def data(step):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(BATCH, 32, generator=g), torch.randn(BATCH, 10, generator=g)


def local_backward(model, step, rank, world):
    """This rank's slice of the global batch, mean loss (as under DDP)."""
    x, y = data(step)
    share = BATCH // world
    rows = slice(rank * share, (rank + 1) * share)
    torch.nn.functional.mse_loss(model(x[rows]), y[rows]).backward()


def full_backward(model, step):
    x, y = data(step)
    torch.nn.functional.mse_loss(model(x), y).backward()


def per_sample_abs(model, step):
    """Σ_b |∂(loss_b / B)/∂p| for each param: the terms the batch's mean gradient sums."""
    x, y = data(step)
    total = [torch.zeros_like(p) for p in model.parameters()]
    for b in range(BATCH):
        model.zero_grad()
        (torch.nn.functional.mse_loss(model(x[b:b + 1]), y[b:b + 1]) / BATCH).backward()
        for t, p in zip(total, model.parameters()):
            t += p.grad.abs()
    model.zero_grad()
    return total


def train(rank, world, out, steps, resume_from=None, save_at=None):
    """Exactness, then data-parallel training against one process's run of the global batch."""
    from fastrms.torch import RMSprop, ShardedRMSprop

    result = {}
    # 1. The same gradient bits give the same param bits: rank 0 holds the full batch's
    # gradient, the others zeros, so the sum is exact and the mean is one division. In float32,
    # and in bfloat16 with float32 master weights; at step 3 one param has no gradient anywhere.
    result["exact"] = all(_same_bits(rank, world, dtype, master)
                          for dtype, master in ((torch.float32, False), (torch.bfloat16, True)))
    # ... and with 8-bit state for the weights (threshold 1000: the biases keep float32 state),
    # of 3200, 10000 and 1000 values (not whole blocks): the same codes and scales, consolidated
    # or not, as the unsharded step's (each param's blocks its own, every shard on a block).
    result["exact8"] = _same_bits(rank, world, torch.float32, False,
                                  dict(state_bits=8, threshold=1000), width=100)

    # 2. Data parallel: each rank its slice of the batch (tests/test_sharded.py compares with
    # one process that averages the slices' gradients, ``emulate``).
    model = mlp(seed=rank)  # rank 0's values are broadcast at construction
    opt = ShardedRMSprop(model.parameters(), timeout=TIMEOUT, **OPTIONS)
    result["same_start"] = all(torch.equal(a, b) for a, b in zip(model.parameters(),
                                                                 mlp().parameters()))
    first = 0
    if resume_from is not None:
        saved = torch.load(resume_from, weights_only=True)
        first = saved["step"]
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
    result["grad_error"] = _grad_error(model, first, rank, world)
    for step in range(first, steps):
        opt.zero_grad()
        local_backward(model, step, rank, world)
        opt.step()
        if save_at == step + 1:
            whole = opt.consolidate_state_dict(to=0)
            if rank == 0:
                torch.save({"step": step + 1, "model": model.state_dict(), "optimizer": whole},
                           os.path.join(out, "saved.pt"))
    result["params"] = [p.detach().clone() for p in model.parameters()]
    result["state_bytes"] = opt.state_bytes()
    own = opt.state_dict()  # a rank's own shard: loads back exactly
    again = ShardedRMSprop(mlp().parameters(), timeout=TIMEOUT, **OPTIONS)
    again.load_state_dict(own)
    result["own_roundtrip"] = all(
        torch.equal(a.steps, b.steps) and a.state.keys() == b.state.keys()
        and all(torch.equal(a.state[n], b.state[n]) for n in a.state)
        for a, b in zip(opt._all_buckets(), again._all_buckets()))
    if resume_from is None:  # 3. Under DDP (its backward averages): reduce_grads=False
        model = mlp()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        opt = ShardedRMSprop(model.parameters(), reduce_grads=False, timeout=TIMEOUT, **OPTIONS)
        for step in range(steps):
            opt.zero_grad()
            local_backward(ddp, step, rank, world)
            opt.step()
        result["ddp_params"] = [p.detach().clone() for p in model.parameters()]
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))


def _same_bits(rank, world, dtype, master, bits=None, width=256):
    from fastrms.torch import RMSprop, ShardedRMSprop

    bits = bits or {}
    model, ref = mlp(width=width).to(dtype), mlp(width=width).to(dtype)
    opt = ShardedRMSprop(model.parameters(), timeout=TIMEOUT, master_weights=master, **bits,
                         **OPTIONS)
    ref_opt = RMSprop(ref.parameters(), master_weights=master, **bits, **OPTIONS)
    exact = True
    for step in range(5):
        for m, o in ((model, opt), (ref, ref_opt)):
            o.zero_grad()
            x, y = data(step)
            torch.nn.functional.mse_loss(m(x.to(dtype)), y.to(dtype)).backward()
            if step == 3:
                m[4].bias.grad = None
        for p in model.parameters():
            if p.grad is not None and rank != 0:
                p.grad.zero_()
        for p in ref.parameters():
            if p.grad is not None:
                p.grad.div_(world)
        opt.step()
        ref_opt.step()
        exact &= all(torch.equal(a, b) for a, b in zip(model.parameters(), ref.parameters()))
    if bits:
        whole, expected = opt.consolidate_state_dict(to=0), ref_opt.state_dict()
        if rank == 0:
            exact &= whole["state"].keys() == expected["state"].keys() and all(
                torch.equal(value, expected["state"][k][key])
                for k, state in whole["state"].items() for key, value in state.items())
        again = ShardedRMSprop(mlp(width=width).parameters(), timeout=TIMEOUT, **bits,
                               **OPTIONS)
        again.load_state_dict(expected)  # each rank takes its shards of the whole codes
        exact &= all(torch.equal(a.state[n], b.state[n]) and torch.equal(a.steps, b.steps)
                     for a, b in zip(opt._all_buckets(), again._all_buckets()) for n in a.state)
    return exact


def _grad_error(model, step, rank, world):
    """max |mean over ranks − one process's gradient of the batch| / (u · Σ_b |terms|), where u
    is float32's unit roundoff: the reordering of the batch's sum, in units of its bound."""
    copy = copy_module(model)
    copy.zero_grad()
    local_backward(copy, step, rank, world)
    reduced = [p.grad.clone() for p in copy.parameters()]
    for g in reduced:
        dist.all_reduce(g)
        g.div_(world)
    terms = per_sample_abs(copy, step)
    full_backward(copy, step)
    return max(((g - p.grad).abs() / t.clamp_min(1e-30)).max().item()
               for g, p, t in zip(reduced, copy.parameters(), terms)) / 2.0 ** -24


def copy_module(model):
    other = mlp()
    other.load_state_dict(model.state_dict())
    return other


def emulate(steps, slices, start=None):
    """One process's run: each step, the mean of the gradients of ``slices(step)`` equal
    slices of the batch, summed in rank order (what ShardedRMSprop reduces), then
    fastrms.torch.RMSprop's step. Returns the params and the optimizer (``start``: a
    (model state, optimizer state, first step) to continue from)."""
    from fastrms.torch import RMSprop

    model = mlp()
    opt = RMSprop(model.parameters(), **OPTIONS)
    first = 0
    if start is not None:
        model.load_state_dict(start[0])
        opt.load_state_dict(start[1])
        first = start[2]
    for step in range(first, steps):
        world = slices(step)
        total = None
        for rank in range(world):
            model.zero_grad()
            local_backward(model, step, rank, world)
            grads = [p.grad.clone() for p in model.parameters()]
            total = grads if total is None else [a + b for a, b in zip(total, grads)]
        for p, g in zip(model.parameters(), total):
            p.grad = g / world
        opt.step()
    return [p.detach().clone() for p in model.parameters()], opt, model


CLIP = 0.1  # max_norm of the GradScaler run: below the grads' norm, so that it clips


def scaled_backward(model, scaler, step, rank, world):
    """This rank's slice, its loss scaled; at step 3 rank 1's loss is infinite (so its grads)."""
    x, y = data(step)
    share = BATCH // world
    rows = slice(rank * share, (rank + 1) * share)
    loss = torch.nn.functional.mse_loss(model(x[rows]), y[rows])
    if step == 3 and rank == 1:
        loss = loss * float("inf")
    scaler.scale(loss).backward()


def scaler_step(model, opt, scaler):
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    scaler.step(opt)
    scaler.update()
    return scaler.get_scale()


def with_grad_scaler(rank, world, out, steps):
    """GradScaler and clip_grad_norm_ after reduce_gradients (no DDP)."""
    from fastrms.torch import ShardedRMSprop

    model = mlp()
    opt = ShardedRMSprop(model.parameters(), timeout=TIMEOUT, **OPTIONS)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    scales = []
    for step in range(steps):
        opt.zero_grad()
        scaled_backward(model, scaler, step, rank, world)
        opt.reduce_gradients()  # every rank's scaler sees the same mean
        scales.append(scaler_step(model, opt, scaler))
    torch.save({"params": [p.detach().clone() for p in model.parameters()], "scales": scales},
               os.path.join(out, f"rank{rank}.pt"))


def emulate_grad_scaler(steps, world):
    """One process: the slices' scaled gradients averaged, then the same GradScaler steps with
    fastrms.torch.RMSprop."""
    from fastrms.torch import RMSprop

    model = mlp()
    opt = RMSprop(model.parameters(), **OPTIONS)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    scales = []
    for step in range(steps):
        total = None
        for rank in range(world):
            model.zero_grad()
            scaled_backward(model, scaler, step, rank, world)
            grads = [p.grad.clone() for p in model.parameters()]
            total = grads if total is None else [a + b for a, b in zip(total, grads)]
        for p, g in zip(model.parameters(), total):
            p.grad = g / world
        scales.append(scaler_step(model, opt, scaler))
    return [p.detach().clone() for p in model.parameters()], scales


def bad_input(rank, world, out):
    """Params that differ across ranks, then a rank that raises mid-training."""
    from fastrms.torch import ShardedRMSprop

    result = {}
    model = mlp(width=256 if rank == 0 else 128)
    try:
        ShardedRMSprop(model.parameters(), timeout=TIMEOUT)
    except ValueError as error:
        result["mismatch"] = str(error)
    try:
        ShardedRMSprop(list(model.parameters())[:6 - rank], timeout=TIMEOUT)
    except ValueError as error:
        result["count"] = str(error)
    model = mlp()
    opt = ShardedRMSprop(model.parameters(), timeout=TIMEOUT)
    for step in range(3):
        opt.zero_grad()
        local_backward(model, step, rank, world)
        if rank == 1 and step == 2:
            torch.save(result, os.path.join(out, f"rank{rank}.pt"))
            raise RuntimeError("rank 1 fails on purpose")
        start = time.monotonic()
        try:
            opt.step()
        except RuntimeError as error:
            result["failure"], result["seconds"] = str(error), time.monotonic() - start
            break
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))
