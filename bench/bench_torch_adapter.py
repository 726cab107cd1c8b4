"""fastrms.torch.RMSprop vs torch.optim.RMSprop on a 100-tensor model (CPU), per step.

The model: 100 float32 tensors whose sizes are spread geometrically from 10² to 10⁶ elements
(11.2 M in all), gradients fixed, plain RMSprop (torch's defaults). Variants: torch's for-loop
(its CPU default), torch's foreach, fastrms without and with ``flatten=True``.

    pytest bench/bench_torch_adapter.py --benchmark-only -s      # table + side-by-side ratios

The issue's targets: flatten=True ≥ 4x torch.optim.RMSprop per step, ≥ 2x without flattening.
``test_side_by_side`` times the four variants interleaved, round by round, in one process (so that
load from other processes hits all of them alike) and prints the ratios of the medians; no timing
is asserted anywhere.
"""

import platform
import statistics
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastrms.torch  # noqa: E402

N_TENSORS = 100
SIZES = np.unique(np.geomspace(100, 1_000_000, N_TENSORS).astype(int))
assert SIZES.size == N_TENSORS
VARIANTS = ["torch_forloop", "torch_foreach", "fastrms", "fastrms_flat"]
ROUNDS = 15


def build(variant, seed=0):
    """Params with fixed random grads and the optimizer of ``variant``, warmed up (compiled)."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for n in SIZES:
        p = torch.nn.Parameter(torch.randn(int(n), generator=gen))
        p.grad = torch.randn(int(n), generator=gen)
        params.append(p)
    if variant == "torch_forloop":
        opt = torch.optim.RMSprop(params, foreach=False)
    elif variant == "torch_foreach":
        opt = torch.optim.RMSprop(params, foreach=True)
    else:
        opt = fastrms.torch.RMSprop(params, flatten=variant == "fastrms_flat")
    for _ in range(2):
        opt.step()
    return opt


def info(benchmark, variant):
    import numba

    elements = int(SIZES.sum())
    benchmark.extra_info.update(
        variant=variant, tensors=N_TENSORS, elements=elements,
        bytes_per_step_fused=20 * elements,  # float32: read p, g, s; write p, s
        torch=torch.__version__, numba=numba.__version__, numpy=np.__version__,
        cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads(),
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_step(benchmark, variant):
    opt = build(variant)
    info(benchmark, variant)
    benchmark.pedantic(opt.step, rounds=ROUNDS, iterations=1, warmup_rounds=1)


def test_side_by_side(benchmark):
    """The four variants interleaved round by round; prints medians and ratios to torch's."""
    opts = {v: build(v) for v in VARIANTS}
    times = {v: [] for v in VARIANTS}
    for _ in range(ROUNDS):
        for v, opt in opts.items():
            start = time.perf_counter()
            opt.step()
            times[v].append(time.perf_counter() - start)
    medians = {v: statistics.median(t) for v, t in times.items()}
    base = medians["torch_forloop"]
    print(f"\n100 tensors, {int(SIZES.sum()):,} float32 elements, {ROUNDS} interleaved rounds, "
          f"torch threads {torch.get_num_threads()}")
    for v in VARIANTS:
        print(f"  {v:14s} median {medians[v] * 1e3:8.2f} ms   torch for-loop / this = "
              f"{base / medians[v]:5.2f}x")
    info(benchmark, "side_by_side")
    benchmark.extra_info.update({f"median_ms_{v}": medians[v] * 1e3 for v in VARIANTS})
    benchmark.extra_info.update({f"speedup_{v}": base / medians[v] for v in VARIANTS})
    # the benchmark's own timing: the flat fastrms step, for the pytest-benchmark table
    benchmark.pedantic(opts["fastrms_flat"].step, rounds=ROUNDS, iterations=1)
