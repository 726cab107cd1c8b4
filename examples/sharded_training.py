"""Data-parallel training with the optimizer state sharded across the ranks (ZeRO stage 1).

    torchrun --standalone --nproc-per-node 2 examples/sharded_training.py   # 2 ranks, this machine
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 \\
        --rdzv-backend c10d --rdzv-endpoint host0:29500 examples/sharded_training.py  # on host0;
    # the same with --node-rank 1 on the second machine

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address; the script picks NCCL on
GPUs, gloo on CPUs. Each rank trains on its slice of every global batch; ``ShardedRMSprop``
averages the gradients over the ranks, updates the slice of the params whose state it keeps, and
gathers the rest. No DDP wrapper. At the end rank 0 writes one whole state dict (``--save``),
which ``torch.optim.RMSprop``, ``fastrms.torch.RMSprop`` or any number of ranks load.
"""

import argparse
import datetime
import os

import torch
import torch.distributed as dist

from fastrms.torch import ShardedRMSprop


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=96, help="global batch (all ranks)")
    parser.add_argument("--save", help="write the consolidated optimizer state dict here")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=5))
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(device)

    torch.manual_seed(0)  # the data; the model's values come from rank 0 (broadcast)
    x = torch.linspace(-1, 1, args.batch * 8, device=device)[:, None]
    y = torch.sin(3 * x)
    model = torch.nn.Sequential(torch.nn.Linear(1, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64),
                                torch.nn.Tanh(), torch.nn.Linear(64, 1)).to(device)
    opt = ShardedRMSprop(model.parameters(), lr=3e-3, momentum=0.9)

    share = args.batch // world
    for step in range(args.steps):
        seed = torch.Generator().manual_seed(step)  # the same global batch on every rank
        batch = torch.randint(0, len(x), (args.batch,), generator=seed)
        mine = batch[rank * share:(rank + 1) * share].to(device)  # this rank's slice
        opt.zero_grad(set_to_none=False)  # backward accumulates into the flat gradient buffer
        loss = torch.nn.functional.mse_loss(model(x[mine]), y[mine])
        loss.backward()
        opt.step()  # mean of the gradients over the ranks, update of this rank's shard, gather
        if step % 50 == 0 or step == args.steps - 1:
            total = loss.detach().clone()
            dist.all_reduce(total)
            if rank == 0:
                print(f"step {step:4d}  loss {total.item() / world:.5f}  "
                      f"(optimizer state on this rank: {opt.state_bytes()} bytes)", flush=True)

    whole = opt.consolidate_state_dict(to=0)  # every rank calls it; rank 0 gets the state dict
    if rank == 0 and args.save:
        torch.save({"model": model.state_dict(), "optimizer": whole}, args.save)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
