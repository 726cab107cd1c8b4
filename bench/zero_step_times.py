"""ZeRO-1 on gloo ranks of one machine: fastrms.torch.ShardedRMSprop against torch's
ZeroRedundancyOptimizer(optimizer_class=torch.optim.RMSprop) with DDP for its gradient
all-reduce, the same training step side by side in one run.

    python bench/zero_step_times.py [--ranks 1,2] [--params 2^24] [--steps 10] [--batch 16]

Per world size and rank: the median training step (zero_grad, forward, backward, opt.step();
DDP's all-reduce runs inside backward, ShardedRMSprop's reduction inside step), the median
opt.step() alone, the optimizer state each rank holds, and the bytes each rank sends per step
(computed from the collectives: ``fastrms.torch.collectives.bytes_sent``). Then the median time of
each collective on the same flat buffer, which is how ShardedRMSprop's choice per backend was made,
and on paper the bytes per step on NCCL for both designs. Each rank gets cores // ranks threads
(OMP_NUM_THREADS, as torchrun sets it).
"""

import argparse
import datetime
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastrms.torch.collectives import bytes_sent


def mlp(params, width):
    """Square Linear layers of ``width`` with tanh, as many as make ``params`` parameters."""
    torch.manual_seed(0)
    layers = max(1, round(params / (width * width + width)))
    return torch.nn.Sequential(*[m for _ in range(layers)
                                 for m in (torch.nn.Linear(width, width), torch.nn.Tanh())])


def timed_steps(model, opt, step_model, args, rank):
    x = torch.randn(args.batch, args.width, generator=torch.Generator().manual_seed(rank))
    whole, steps = [], []
    for i in range(args.steps + 3):
        dist.barrier()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        step_model(x).square().mean().backward()
        middle = time.perf_counter()
        opt.step()
        end = time.perf_counter()
        if i >= 3:  # the first steps compile, allocate state and warm the caches
            whole.append(end - start)
            steps.append(end - middle)
    return statistics.median(whole), statistics.median(steps)


def state_bytes_of(optimizer):
    return sum(t.numel() * t.element_size() for s in optimizer.state.values()
               for t in s.values() if torch.is_tensor(t) and t.dim() > 0)


def collective_times(n, world, rank, repeat=5):
    flat = torch.randn(n)
    length = n // world
    mine = flat[rank * length:(rank + 1) * length]
    ops = {
        "all_reduce": lambda: dist.all_reduce(flat),
        "reduce_scatter_single": lambda: dist.reduce_scatter_single(mine, flat),
        "all_gather_single": lambda: dist.all_gather_single(flat, mine),
        "broadcast per rank": lambda: [dist.broadcast(flat[r * length:(r + 1) * length], src=r)
                                       for r in range(world)],
    }
    times = {}
    for name, op in ops.items():
        samples = []
        for _ in range(repeat):
            dist.barrier()
            start = time.perf_counter()
            op()
            samples.append(time.perf_counter() - start)
        times[name] = statistics.median(samples)
    return times


def rank_main(rank, world, port, args, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(minutes=5))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from torch.distributed.optim import ZeroRedundancyOptimizer

    from fastrms.torch import ShardedRMSprop

    out = {}
    for name, pair in (("fastrms ShardedRMSprop", "auto"),
                       ("  with reduce_scatter+all_gather", ("reduce_scatter", "all_gather"))):
        model = mlp(args.params, args.width)
        n = sum(p.numel() for p in model.parameters())
        opt = ShardedRMSprop(model.parameters(), lr=1e-3, collectives=pair)
        sent = bytes_sent(*(("all_reduce", "broadcast") if pair == "auto" else pair), n, 4, world)
        out[name] = (*timed_steps(model, opt, model, args, rank), opt.state_bytes(),
                     sent if world > 1 else 0)
        del opt, model
    model = mlp(args.params, args.width)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.RMSprop, lr=1e-3)
    out["torch ZeRO + DDP"] = (*timed_steps(model, opt, ddp, args, rank), state_bytes_of(opt.optim),
                               bytes_sent("all_reduce", "broadcast", n, 4, world)
                               if world > 1 else 0)
    del opt, ddp, model
    results[(world, rank)] = (n, out, collective_times(n, world, rank) if world > 1 else {})
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="1,2,4" if (os.cpu_count() or 1) >= 4 else "1,2")
    parser.add_argument("--params", default="2^24", help="model size (2^k or a number)")
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=16, help="samples per rank")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    args.params = 2 ** int(args.params[2:]) if args.params.startswith("2^") else int(args.params)
    results = mp.Manager().dict()
    for world in [int(w) for w in args.ranks.split(",")]:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // world))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(rank_main, args=(world, port, args, results), nprocs=world, join=True)
    report(dict(results), args)


def report(results, args):
    n = next(iter(results.values()))[0]
    print(f"ZeRO-1 on gloo (127.0.0.1), {n / 2 ** 20:.1f} Mi float32 params (MLP {args.width} "
          f"wide), batch {args.batch} per rank, median of {args.steps} steps; unsharded RMSprop "
          f"state {4 * n / 2 ** 20:.1f} MiB")
    print(f"{'ranks':>5} {'rank':>4}  {'optimizer':32s} {'train step':>11} {'opt.step()':>11} "
          f"{'state MiB':>10} {'x 1/world':>9} {'MiB sent':>9}")
    for (world, rank), (_, out, _) in sorted(results.items()):
        for name, (whole, step, state, sent) in out.items():
            print(f"{world:>5} {rank:>4}  {name:32s} {whole * 1e3:8.1f} ms {step * 1e3:8.1f} ms "
                  f"{state / 2 ** 20:10.2f} {state / (4 * n / world):9.3f} {sent / 2 ** 20:9.1f}")
        base = out["torch ZeRO + DDP"][0]
        print(f"{'':>11}train step: ShardedRMSprop {base / out['fastrms ShardedRMSprop'][0]:.2f}x "
              "torch ZeRO + DDP")
    for (world, rank), (_, _, times) in sorted(results.items()):
        if times and rank == 0:
            print(f"collectives at {world} ranks, rank 0, {n / 2 ** 20:.1f} Mi float32: "
                  + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in times.items()))
    for world in sorted({w for w, _ in results if w > 1}):
        print(f"on paper, NCCL, {world} ranks, MiB sent per rank per step: ShardedRMSprop "
              f"(reduce_scatter + all_gather) "
              f"{bytes_sent('reduce_scatter', 'all_gather', n, 4, world) / 2 ** 20:.1f}; "
              f"ZeRO + DDP (all_reduce + broadcasts) "
              f"{bytes_sent('all_reduce', 'broadcast', n, 4, world) / 2 ** 20:.1f}")


if __name__ == "__main__":
    main()
