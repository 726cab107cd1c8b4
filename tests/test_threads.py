"""Thread limits: one order of precedence, followed; torch's (OpenMP's) thread count untouched."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastrms
from fastrms import threads
from fastrms.cpu import backend


@pytest.fixture
def clean_threads(monkeypatch):
    for variable in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(threads, "_configured", None)
    monkeypatch.setattr(threads, "pool_size", lambda: 8)
    threads._from_environment.cache_clear()  # read once per process: again for each test
    yield
    threads._from_environment.cache_clear()


def test_precedence_explicit_configured_framework_environment_cores(clean_threads, monkeypatch):
    assert threads.resolve() == 8  # every core (the pool)
    monkeypatch.setenv("NUMBA_NUM_THREADS", "6")
    threads._from_environment.cache_clear()
    assert threads.resolve() == 6
    monkeypatch.setenv("OMP_NUM_THREADS", "3,2")  # OpenMP's nested form: the first level
    threads._from_environment.cache_clear()
    assert threads.resolve() == 3
    assert threads.resolve(framework=2) == 2  # torch.get_num_threads() in the adapter
    fastrms.set_num_threads(5)
    assert threads.resolve(framework=2) == 5 == fastrms.get_num_threads()
    assert threads.resolve(4, framework=2) == 4  # the step's own threads= wins
    assert threads.resolve(64) == 8  # capped at Numba's pool
    fastrms.set_num_threads(None)
    assert threads.resolve() == 3


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_thread_counts_are_refused_by_name(bad):
    with pytest.raises(ValueError, match="threads must be a whole number"):
        fastrms.rmsprop_update(np.ones(4, np.float32), np.ones(4, np.float32),
                               np.zeros(4, np.float32), threads=bad)
    with pytest.raises(ValueError, match="n must be a whole number"):
        fastrms.set_num_threads(bad)


def test_results_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(1)
    n = 1 << 16  # a parallel step
    g = rng.standard_normal(n).astype(np.float32)
    runs = []
    for count in (1, 2):
        p = np.linspace(-1, 1, n, dtype=np.float32)
        s, b = np.ones(n, np.float32), np.zeros(n, np.float32)
        fastrms.rmsprop_update(p, g, s, momentum=0.9, momentum_buffer=b, threads=count)
        runs.append((p, s, b))
    for x, y in zip(*runs):
        np.testing.assert_array_equal(x, y)


def test_one_thread_runs_the_serial_loop(monkeypatch):
    calls = []
    real = backend.rmsprop_kernel
    monkeypatch.setattr(backend, "rmsprop_kernel",
                        lambda modes, parallel, *storage: calls.append(parallel) or real(modes, parallel, *storage))
    n = 1 << 16
    fastrms.rmsprop_update(np.ones(n, np.float32), np.ones(n, np.float32), np.zeros(n, np.float32),
                           threads=1)
    fastrms.set_num_threads(1)
    try:
        fastrms.rmsprop_update(np.ones(n, np.float32), np.ones(n, np.float32),
                               np.zeros(n, np.float32))
    finally:
        fastrms.set_num_threads(None)
    assert calls == [False, False]


def _run(code, **env):
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    environment.update(env)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


STEP = """
    import numpy as np, fastrms
    n = 1 << 16
    fastrms.rmsprop_update(np.ones(n, np.float32), np.ones(n, np.float32), np.zeros(n, np.float32),
                           threads=2)  # starts Numba's pool
"""


def test_torch_thread_count_is_never_changed():
    pytest.importorskip("torch")
    before_import = _run("import torch\ntorch.set_num_threads(1)\nx = torch.get_num_threads()\n"
                         + textwrap.dedent(STEP) + "\nprint(x, torch.get_num_threads())")
    assert before_import == ["1", "1"]
    after_import = _run(textwrap.dedent(STEP) + "\nimport torch\nprint(torch.get_num_threads())",
                        OMP_NUM_THREADS="1")
    assert after_import == ["1"]


def test_omp_num_threads_one_keeps_numbas_pool_off():
    """What torchrun sets per rank: every step single-threaded, no pool started."""
    out = _run("""
        import numpy as np, fastrms
        from fastrms.cpu import backend
        n = 1 << 20
        fastrms.rmsprop_update(np.ones(n, np.float32), np.ones(n, np.float32),
                               np.zeros(n, np.float32))
        fastrms.rmsprop_update([np.ones(n, np.float32)], [np.ones(n, np.float32)],
                               [np.zeros(n, np.float32)])
        print(backend._pool_started, fastrms.get_num_threads())
    """, OMP_NUM_THREADS="1")
    assert out == ["False", "1"]


def test_torch_adapter_follows_torchs_thread_count_unless_told(monkeypatch):
    torch = pytest.importorskip("torch")
    from fastrms.torch import RMSprop

    calls = []
    real = backend.rmsprop_multi_kernel
    monkeypatch.setattr(backend, "rmsprop_multi_kernel",
                        lambda modes, parallel, *storage: calls.append(parallel) or real(modes, parallel, *storage))
    params = [torch.nn.Parameter(torch.ones(1 << 15)) for _ in range(2)]  # a parallel-sized step
    for p in params:
        p.grad = torch.full_like(p, 0.5)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        RMSprop(params).step()  # torch's one thread
        RMSprop(params, threads=2).step()  # the explicit argument wins
        fastrms.set_num_threads(2)
        RMSprop(params).step()  # fastrms's own setting wins over torch's
    finally:
        fastrms.set_num_threads(None)
        torch.set_num_threads(before)
    assert calls == [False, True, True]
    with pytest.raises(ValueError, match="threads must be"):
        RMSprop(params, threads=0)


def test_explicit_threads_win_over_numbas_count_set_elsewhere_on_the_thread():
    import numba

    n = 1 << 16
    p, g, s = np.ones(n, np.float32), np.ones(n, np.float32), np.ones(n, np.float32)
    fastrms.rmsprop_update(p, g, s, threads=2)
    numba.set_num_threads(1)  # the user's own Numba code on this thread
    fastrms.rmsprop_update(p, g, s, threads=2)
    assert numba.get_num_threads() == 2
