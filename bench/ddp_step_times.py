"""Optimizer step times per rank in 2-rank DDP on one machine, as ``torchrun`` runs it
(OMP_NUM_THREADS=1 per rank): torch.optim.RMSprop against fastrms.torch.RMSprop, side by side.

    python bench/ddp_step_times.py [--ranks 2] [--steps 60] [--layers 10] [--width 256]

fastrms follows the rank's thread limit (torch.get_num_threads(), here 1: the serial loop, no
thread pool); the row "fastrms, threads=2" ignores it on purpose, as fastrms did before it
followed thread limits, to show what oversubscribing the cores costs. gloo on 127.0.0.1.
"""

import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def optimizers(params):
    from fastrms.torch import RMSprop

    return {
        "torch.optim.RMSprop": lambda: torch.optim.RMSprop(params, lr=1e-3),
        "fastrms": lambda: RMSprop(params, lr=1e-3),
        "fastrms, flatten=True": lambda: RMSprop(params, lr=1e-3, flatten=True),
        "fastrms, threads=2": lambda: RMSprop(params, lr=1e-3, threads=2),
    }


def rank_main(rank, world, port, args, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(rank)  # DDP broadcasts rank 0's params; each rank has its own batch
    layers = [m for _ in range(args.layers)
              for m in (torch.nn.Linear(args.width, args.width), torch.nn.Tanh())]
    model = torch.nn.Sequential(*layers)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    x, y = torch.randn(64, args.width), torch.randn(64, args.width)
    times = {}
    for name, make in optimizers(list(ddp.parameters())).items():
        opt = make()
        samples = []
        for step in range(args.steps + 5):
            opt.zero_grad()
            torch.nn.functional.mse_loss(ddp(x), y).backward()
            start = time.perf_counter()
            opt.step()
            if step >= 5:  # the first steps compile or load kernels and allocate state
                samples.append(time.perf_counter() - start)
        times[name] = statistics.median(samples)
    results[rank] = (torch.get_num_threads(), times)
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--layers", type=int, default=10, help="Linear layers of the MLP")
    parser.add_argument("--width", type=int, default=256)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"  # what torchrun sets per rank
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(rank_main, args=(args.ranks, port, args, results), nprocs=args.ranks, join=True)
    elements = args.layers * (args.width + 1) * args.width
    print(f"{args.ranks} ranks, OMP_NUM_THREADS=1, an MLP of {args.layers} Linear layers "
          f"{args.width} wide ({2 * args.layers} tensors, {elements / 1e6:.2f} M float32 "
          "elements); median opt.step()")
    for rank in sorted(results):
        threads, times = results[rank]
        base = times["torch.optim.RMSprop"]
        print(f"rank {rank} (torch.get_num_threads() = {threads}):")
        for name, seconds in times.items():
            print(f"  {name:24s} {seconds * 1e3:7.3f} ms  {base / seconds:5.2f}x torch")


if __name__ == "__main__":
    main()
