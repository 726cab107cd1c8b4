"""fastrms.torch.RMSprop vs torch.optim.RMSprop on a 100-tensor model, per step (CPU; CUDA too
where torch sees a device).

The issue's model: 100 float32 tensors whose sizes are spread geometrically from 10² to 10⁶
elements (11.2 M in all; memory-bound), and a small one, 10² to 10⁴ (0.2 M; call-overhead-bound).
Gradients fixed, plain RMSprop (torch's defaults). Variants: torch's for-loop (its CPU default),
torch's foreach, fastrms without and with ``flatten=True``.

    pytest -n 0 bench/bench_torch_adapter.py --benchmark-only -s      # table + side-by-side ratios

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
MODELS = {
    "1e2-1e6": np.unique(np.geomspace(100, 1_000_000, N_TENSORS).astype(int)),
    "1e2-1e4": np.unique(np.geomspace(100, 10_000, N_TENSORS).astype(int)),
}
assert all(sizes.size == N_TENSORS for sizes in MODELS.values())
VARIANTS = ["torch_forloop", "torch_foreach", "fastrms", "fastrms_flat"]
ROUNDS = 21
DEVICES = ["cpu", "cuda"]  # cuda: skipped where torch sees no device


def on(device):
    """``device``, or a skip where it is CUDA and torch sees none."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    return device


def timed(step, device):
    """A step and the wall time it took, the device's queue drained before and after."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def build(variant, model="1e2-1e6", seed=0, device="cpu"):
    """Params with fixed random grads and the optimizer of ``variant``, warmed up (compiled)."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for n in MODELS[model]:
        p = torch.nn.Parameter(torch.randn(int(n), generator=gen).to(device))
        p.grad = torch.randn(int(n), generator=gen).to(device)
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


def info(benchmark, variant, model, device):
    import numba

    elements = int(MODELS[model].sum())
    benchmark.extra_info.update(
        variant=variant, model=model, device=device, tensors=N_TENSORS, elements=elements,
        bytes_per_step_fused=20 * elements,  # float32: read p, g, s; write p, s
        torch=torch.__version__, numba=numba.__version__, numpy=np.__version__,
        cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads(),
    )


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("device", DEVICES)
def test_step(benchmark, device, model, variant):
    opt = build(variant, model, device=on(device))
    info(benchmark, variant, model, device)
    benchmark.group = f"step, 100 tensors {model}, {device}"
    benchmark.pedantic(lambda: timed(opt.step, device), rounds=ROUNDS, iterations=1,
                       warmup_rounds=1)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("device", DEVICES)
def test_side_by_side(benchmark, device, model):
    """The four variants interleaved round by round; prints medians and ratios to torch's.

    A fifth entry, the floor: fastrms bench's same-traffic kernel (the fused step's memory
    traffic, trivial math) over as many elements in one buffer, interleaved too, so that its
    caches are as cold as the steps' (on the large CPU model the five sets of buffers overflow
    the L3; the small one fits). torch's time over it is the most any fused step can reach under
    the same interleaving. On CUDA its time includes the two synchronisations and Python's launch.
    """
    from fastrms.bench import runners

    elements = int(MODELS[model].sum())
    try:
        floor = runners.roofline_runner(on(device), "plain", "float32", elements,
                                        runners.host_buffers("plain", "float32", elements))
    except runners.Skip as why:  # CUDA without a usable CuPy
        pytest.skip(str(why))
    steps = {v: build(v, model, device=device).step for v in VARIANTS}
    steps["same_traffic"] = floor.step
    times = {v: [] for v in steps}
    for _ in range(ROUNDS):
        for v, step in steps.items():
            times[v].append(timed(step, device))
    medians = {v: statistics.median(t) for v, t in times.items()}
    base = medians["torch_forloop"]
    print(f"\n{device}: 100 tensors {model}, {int(MODELS[model].sum()):,} float32 elements, "
          f"{ROUNDS} interleaved rounds, "
          f"torch threads {torch.get_num_threads()}")
    for v in steps:
        print(f"  {v:14s} median {medians[v] * 1e3:8.2f} ms   torch for-loop / this = "
              f"{base / medians[v]:5.2f}x")
    info(benchmark, "side_by_side", model, device)
    benchmark.group = f"side by side, 100 tensors {model}, {device}"
    benchmark.extra_info.update({f"median_ms_{v}": medians[v] * 1e3 for v in steps})
    benchmark.extra_info.update({f"speedup_{v}": base / medians[v] for v in steps})
    # the benchmark's own timing: the flat fastrms step, for the pytest-benchmark table
    benchmark.pedantic(lambda: timed(steps["fastrms_flat"], device), rounds=ROUNDS, iterations=1)
