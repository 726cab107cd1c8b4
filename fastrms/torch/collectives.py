"""The collectives of ``ShardedRMSprop``: which ones each backend gets, each waited for with a
timeout that ends in a clear error, and the bytes each rank sends.

Chosen by measurement (``python bench/zero_step_times.py`` prints the times; its output is
docs/zero-step-times-cpu.txt): on gloo over loopback (this project's 2-core machine, 2²⁴ float32
values, 2 ranks) ``all_reduce`` took 56.8 ms and ``reduce_scatter_single`` 108.7 ms; one
``broadcast`` per rank's shard took 23.1 ms in all and ``all_gather_single`` 88.7 ms. So gloo
reduces the whole gradient with ``all_reduce`` (twice the bytes of a reduce-scatter, in half the
time) and gathers the params with broadcasts. NCCL runs
reduce-scatter and all-gather as rings that each send half an all-reduce's bytes, so CUDA
buckets on NCCL take those. Only the APIs torch 2.13 does not deprecate are used
(``*_single``, not ``*_into_tensor``/``*_tensor``).
"""

import datetime

import torch
import torch.distributed as dist

REDUCTIONS = ("all_reduce", "reduce_scatter")  # of the gradients
GATHERS = ("broadcast", "all_gather")  # of the updated params
PLANS = {"gloo": ("all_reduce", "broadcast"), "nccl": ("reduce_scatter", "all_gather")}


def check_choice(choice):
    """``collectives``: "auto" or a (reduction, gather) pair of the names above."""
    if choice == "auto":
        return choice
    if not (isinstance(choice, (tuple, list)) and len(choice) == 2
            and choice[0] in REDUCTIONS and choice[1] in GATHERS):
        raise ValueError(f"collectives must be 'auto' or a pair (one of {REDUCTIONS}, one of "
                         f"{GATHERS}), got {choice!r}")
    return tuple(choice)


def bytes_sent(reduction, gather, n, itemsize, world):
    """Bytes one rank sends per step for ``n`` elements of ``itemsize`` bytes: ring all-reduce
    2(w−1)/w·n, ring reduce-scatter and all-gather (w−1)/w·n each, and as the root of its own
    shard's broadcast (w−1)·n/w (the root sends the shard to every other rank)."""
    shard = n * itemsize / world
    per_op = {"all_reduce": 2 * (world - 1) * shard, "reduce_scatter": (world - 1) * shard,
              "all_gather": (world - 1) * shard, "broadcast": (world - 1) * shard}
    return per_op[reduction] + per_op[gather]


class Collectives:
    """The collectives of one optimizer on ``group``, each waited for at most ``timeout``."""

    def __init__(self, group, timeout):
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("fastrms.torch.ShardedRMSprop needs torch.distributed initialised "
                               "first (dist.init_process_group, or run under torchrun)")
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
            timeout = datetime.timedelta(seconds=timeout)
        if not isinstance(timeout, datetime.timedelta) or timeout.total_seconds() <= 0:
            raise ValueError(f"timeout must be a positive number of seconds or a timedelta, "
                             f"got {timeout!r}")
        self.group, self.timeout = group, timeout
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
        self.backend = str(dist.get_backend(group))  # "gloo", "nccl", "cpu:gloo,cuda:nccl"...
        # Where the small tensors of the bookkeeping collectives live: NCCL reduces CUDA ones.
        self.device = torch.device("cuda", torch.cuda.current_device()) \
            if self.backend == "nccl" else torch.device("cpu")

    def plan(self, choice, device):
        """The (reduction, gather) pair for a bucket on ``device``: ``choice`` if given (a pair of
        names), else by backend: NCCL's for CUDA tensors on an NCCL group, gloo's otherwise."""
        if choice != "auto":
            return choice
        return PLANS["nccl" if "nccl" in self.backend and device.type == "cuda" else "gloo"]

    def wait(self, works, what):
        """Wait for ``works``; a failure or a timeout becomes one error that says what, where."""
        try:
            for work in works:
                work.wait(self.timeout)
        except RuntimeError as error:
            raise RuntimeError(
                f"fastrms.torch.ShardedRMSprop: {what} failed on rank {self.rank} of "
                f"{self.world}: another rank raised, exited, or did not reach the same step "
                f"within the timeout of {self.timeout.total_seconds():g} s ({error})") from error

    def reduce(self, reduction, flat_grad, shard_grad):
        """Sum the gradients over the ranks: the whole of ``flat_grad`` (all_reduce), or this
        rank's shard into ``shard_grad`` (reduce_scatter)."""
        if reduction == "all_reduce":
            work = dist.all_reduce(flat_grad, group=self.group, async_op=True)
        else:
            work = dist.reduce_scatter_single(shard_grad, flat_grad, group=self.group,
                                              async_op=True)
        self.wait([work], f"the gradients' {reduction}")

    def gather(self, gather, flat, length):
        """Every rank's updated shard of ``flat`` (shards of ``length`` elements) to every rank."""
        if gather == "broadcast":
            works = [dist.broadcast(flat[r * length:(r + 1) * length], group=self.group,
                                    group_src=r, async_op=True) for r in range(self.world)]
        else:
            mine = flat[self.rank * length:(self.rank + 1) * length]
            works = [dist.all_gather_single(flat, mine, group=self.group, async_op=True)]
        self.wait(works, f"the params' {gather}")

    def broadcast(self, tensor, what):
        """``tensor`` from the group's rank 0 to every rank."""
        self.wait([dist.broadcast(tensor, group=self.group, group_src=0, async_op=True)], what)

    def any(self, flags, what):
        """``flags`` (a tensor) set to its maximum over the ranks."""
        self.wait([dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.group,
                                   async_op=True)], what)

    def all_gather(self, tensor, what):
        """Every rank's ``tensor`` (same shape everywhere) stacked: shape (world, *shape)."""
        out = torch.empty(self.world * tensor.numel(), dtype=tensor.dtype, device=tensor.device)
        self.wait([dist.all_gather_single(out, tensor.reshape(-1), group=self.group,
                                          async_op=True)], what)
        return out.reshape(self.world, *tensor.shape)

    def gather_to(self, tensor, to, what):
        """Every rank's ``tensor`` as a list on rank ``to`` (None elsewhere)."""
        pieces = [torch.empty_like(tensor) for _ in range(self.world)] if self.rank == to else None
        self.wait([dist.gather(tensor, pieces, group=self.group, group_dst=to, async_op=True)],
                  what)
        return pieces
