"""pytest-benchmark suite: the fused step per backend × variant × size, backends side by side.

    pytest -n 0 bench --benchmark-only                                   # run and print
    pytest -n 0 bench --benchmark-only --benchmark-save=mine             # save under .benchmarks/
    pytest -n 0 bench --benchmark-only --benchmark-compare               # against the last save

Each benchmark records bytes moved, GB/s, device and library versions in ``extra_info``; groups
are "variant n=…", so that each table lists the backends for one size.
"""

import pytest

from fastrms.bench import report, runners
from fastrms.bench.traffic import VARIANTS, bytes_per_element, gbps

SIZES = [2**10, 2**16, 2**22, 2**26]
BACKENDS = ["numpy", "numba", "torch", "torch-foreach", "cupy", "torch-cuda-foreach", "roofline"]
MACHINE = report.machine()


@pytest.fixture(scope="module", params=SIZES, ids=lambda n: f"n2_{n.bit_length() - 1}")
def size(request):
    return request.param


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_step(benchmark, backend, variant, size):
    host = runners.host_buffers(variant, "float32", size)
    try:
        if backend == "roofline":  # the same-traffic kernel on the CPU
            runner = runners.roofline_runner("cpu", variant, "float32", size, host)
        else:
            runner = runners.prepare(backend, variant, "float32", size, host)
    except runners.Skip as why:
        pytest.skip(str(why))
    benchmark.group = f"{variant} n=2^{size.bit_length() - 1}"
    step, sync = runner.step, runner.sync or (lambda: None)

    def synced():
        step()
        sync()

    rounds = 11 if size >= 2**22 else 200
    benchmark.pedantic(synced, rounds=rounds, iterations=1 if size >= 2**22 else 20, warmup_rounds=1)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(
        device=runner.device, bytes=bytes_per_element(variant, "float32") * size,
        gbps=round(gbps(variant, "float32", size, median), 2), versions=MACHINE["versions"],
        cpu=MACHINE["cpu"], gpu=MACHINE["gpu"],
    )
