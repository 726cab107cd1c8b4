"""fastrms.torch.RMSprop vs torch.optim.RMSprop per step, on three models (CPU; CUDA too where
torch sees a device).

Models of float32 tensors whose sizes are spread geometrically: 100 tensors of 10² to 10⁶
elements (11.2 M in all; memory-bound), 100 of 10² to 10⁴ (0.2 M; call-overhead-bound), and
1,000 of 10² to 10⁴ ("many small": 2 M; host-cost-bound, where the time per param is reported).
Gradients fixed, plain RMSprop (torch's defaults). Variants: torch's for-loop (its CPU default),
torch's foreach, fastrms without and with ``flatten=True``, fastrms's step compiled
(``torch.compile(lambda: opt.step())``), fastrms with 8-bit state (``state_bits=8``, default
threshold; docs/eight-bit.md) without and with ``flatten=True``; on CUDA also torch's
``capturable=True`` foreach step and fastrms's ``capturable=True`` step captured in a CUDA graph
and replayed.

    pytest -n 0 bench/bench_torch_adapter.py --benchmark-only -s      # table + side-by-side ratios

``test_side_by_side`` times the variants interleaved, round by round, in one process (so that
load from other processes hits all of them alike) and prints, per variant, the median, µs per
param, the ratio to torch's for-loop and foreach steps, and the fraction of the same-traffic floor
it reaches; no timing is asserted anywhere.
"""

import platform
import statistics
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastrms.torch  # noqa: E402

MODELS = {
    "1e2-1e6": np.unique(np.geomspace(100, 1_000_000, 100).astype(int)),
    "1e2-1e4": np.unique(np.geomspace(100, 10_000, 100).astype(int)),
    "many-small": np.geomspace(100, 10_000, 1000).astype(int),
}
VARIANTS = ["torch_forloop", "torch_foreach", "fastrms", "fastrms_flat", "fastrms_compiled",
            "fastrms_state8", "fastrms_state8_flat"]
CUDA_VARIANTS = ["torch_capturable", "fastrms_graph"]  # CUDA graphs: CUDA only
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
    """The step of ``variant``'s optimizer over params with fixed random grads, warmed up
    (compiled, or captured)."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for n in MODELS[model]:
        p = torch.nn.Parameter(torch.randn(int(n), generator=gen).to(device))
        p.grad = torch.randn(int(n), generator=gen).to(device)
        params.append(p)
    if variant.startswith("torch"):
        opt = torch.optim.RMSprop(params, foreach=variant != "torch_forloop",
                                  capturable=variant == "torch_capturable")
    else:
        opt = fastrms.torch.RMSprop(params, flatten=variant.endswith("_flat"),
                                    capturable=variant == "fastrms_graph",
                                    state_bits=8 if "state8" in variant else 32)
    step = opt.step
    if variant == "fastrms_compiled":
        step = torch.compile(lambda: opt.step())
    for _ in range(3):  # compiled: the first step creates the state, the second compiles again
        step()
    if variant == "fastrms_graph":
        step = captured(opt.step)
    return step


def captured(step):
    """``step`` captured in a CUDA graph (after the warm-up steps above), and its replay."""
    side = torch.cuda.Stream()  # torch's recipe: a warm-up step on a side stream first
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def info(benchmark, variant, model, device):
    import numba

    elements = int(MODELS[model].sum())
    benchmark.extra_info.update(
        variant=variant, model=model, device=device, tensors=len(MODELS[model]), elements=elements,
        bytes_per_step_fused=20 * elements,  # float32: read p, g, s; write p, s
        torch=torch.__version__, numba=numba.__version__, numpy=np.__version__,
        cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads(),
    )


@pytest.mark.parametrize("variant", VARIANTS + CUDA_VARIANTS)
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("device", DEVICES)
def test_step(benchmark, device, model, variant):
    if variant in CUDA_VARIANTS and device != "cuda":
        pytest.skip("CUDA graphs: CUDA only")
    step = build(variant, model, device=on(device))
    info(benchmark, variant, model, device)
    benchmark.group = f"step, {len(MODELS[model])} tensors {model}, {device}"
    benchmark.pedantic(lambda: timed(step, device), rounds=ROUNDS, iterations=1,
                       warmup_rounds=1)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("device", DEVICES)
def test_side_by_side(benchmark, device, model):
    """The variants interleaved round by round; prints medians, µs per param and ratios.

    One more entry, the floor: fastrms bench's same-traffic kernel (the fused step's memory
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
    variants = VARIANTS + (CUDA_VARIANTS if device == "cuda" else [])
    steps = {v: build(v, model, device=device) for v in variants}
    steps["same_traffic"] = floor.step
    times = {v: [] for v in steps}
    for _ in range(ROUNDS):
        for v, step in steps.items():
            times[v].append(timed(step, device))
    medians = {v: statistics.median(t) for v, t in times.items()}
    tensors = len(MODELS[model])
    print(f"\n{device}: {tensors} tensors {model}, {elements:,} float32 elements, "
          f"{ROUNDS} interleaved rounds, torch threads {torch.get_num_threads()}")
    print(f"  {'variant':19s} {'median ms':>9s} {'us/param':>8s} {'vs for-loop':>11s} "
          f"{'vs foreach':>10s} {'of floor':>8s}")
    for v in steps:
        print(f"  {v:19s} {medians[v] * 1e3:9.3f} {medians[v] / tensors * 1e6:8.2f} "
              f"{medians['torch_forloop'] / medians[v]:10.2f}x "
              f"{medians['torch_foreach'] / medians[v]:9.2f}x "
              f"{medians['same_traffic'] / medians[v]:8.2f}")
    info(benchmark, "side_by_side", model, device)
    benchmark.group = f"side by side, {tensors} tensors {model}, {device}"
    benchmark.extra_info.update({f"median_ms_{v}": medians[v] * 1e3 for v in steps})
    benchmark.extra_info.update({f"speedup_{v}": medians["torch_forloop"] / medians[v]
                                 for v in steps})
    # the benchmark's own timing: the flat fastrms step, for the pytest-benchmark table
    benchmark.pedantic(lambda: timed(steps["fastrms_flat"], device), rounds=ROUNDS, iterations=1)
