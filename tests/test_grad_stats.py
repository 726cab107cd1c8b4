"""``inspect_grads``: the Numba loops and the host-emulated CUDA kernels equal the NumPy reference
bit for bit (every dtype, awkward sizes, grad scales, lists mixing dtypes and empty buffers, any
thread count or grid), the flag and the norm mean what they say, and bad input is refused by name.
"""

import re
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest

from conftest import skip_or_fail
from fastrms import grad_stats
from fastrms.cpu import backend as cpu_backend
from fastrms.dtypes import bfloat16_dtype
from fastrms.grad_stats import inspect_grads
from native import toolchain

bfloat16 = bfloat16_dtype()
DTYPES = [np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)] + (
    [bfloat16] if bfloat16 is not None else [])
SIZES = [0, 1, 31, 4095, 4097, 3 * 4096 + 5]
SCALES = [1, 1024, 0.5, 3.0]
CHUNK = grad_stats.CHUNK


def grads(rng, dtype, n, spread=True):
    """Normal grads with magnitudes from 1e-3 to 1e3 (and, for half dtypes, some subnormals)."""
    g = rng.standard_normal(n) * (10.0 ** rng.uniform(-3, 3, n) if spread else 1.0)
    if n > 8 and np.dtype(dtype) == np.float16:
        g[::7] *= 1e-6  # float16 subnormals: exact in float32
    return g.astype(dtype)


def bits(result):
    """A host result as comparable values: the flag and the norm's bit pattern."""
    found_inf, norm = result
    return bool(found_inf), int(np.float64(norm).view(np.int64))


def same(got, want, msg=""):
    assert bits(got) == bits(want), f"{msg}: {got} != {want}"


@pytest.fixture(scope="module")
def emulated():
    """grad_stats.cu compiled for the host (tests/native): the CUDA kernels, run on the CPU."""
    from native.grad_stats_emulation import HOST_LIBRARY, TARGET, HostGradStats

    reason = toolchain.missing_tools()
    if reason:
        skip_or_fail(f"host emulation of grad_stats.cu {reason}")
    ok, log = toolchain.build(TARGET)
    assert ok, log
    return HostGradStats(toolchain.BUILD_DIR / HOST_LIBRARY)


def _emulate(emulated, arrays, grad_scale, max_grid=2):
    found_inf, norm, _ = emulated.inspect(arrays, *grad_stats.unscale_factors(grad_scale),
                                          max_grid)
    assert found_inf in (0.0, 1.0)
    return found_inf == 1.0, float(norm)


# ---------------------------------------------------------------------------------------------
# The backends against the reference.

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_numba_and_emulated_cuda_equal_the_reference(dtype, emulated):
    rng = np.random.default_rng(1)
    for n in SIZES:
        g = grads(rng, dtype, n)
        for scale in SCALES:
            want = inspect_grads(g, scale, backend="numpy")
            msg = f"{dtype} n={n} grad_scale={scale}"
            same(inspect_grads(g, scale, backend="numba"), want, msg)
            same(inspect_grads(g, scale), want, msg)  # auto: Numba
            same(_emulate(emulated, [g], scale), want, msg + " (emulated CUDA)")


def mixed_list(rng):
    parts = [(5, np.float32), (0, np.float64), (4097, np.float64), (3 * 4096 + 5, np.float16),
             (33, bfloat16 or np.float16), (0, np.float16), (70001, np.float32), (1, np.float64)]
    return [grads(rng, d, n).reshape((-1, 1) if n % 2 else -1) for n, d in parts]


def test_a_list_mixing_dtypes_and_empties(emulated):
    rng = np.random.default_rng(2)
    arrays = mixed_list(rng)
    for scale in SCALES:
        want = inspect_grads(arrays, scale, backend="numpy")
        same(inspect_grads(arrays, scale), want, f"grad_scale={scale}")
        same(inspect_grads(tuple(arrays), scale), want, "a tuple")
        same(_emulate(emulated, arrays, scale), want, f"emulated, grad_scale={scale}")
    # The order is the list's: the same buffers in another order may differ in the last bits,
    # but all orders are within rounding of each other.
    other = inspect_grads(arrays[::-1], 3.0)[1]
    assert other == pytest.approx(inspect_grads(arrays, 3.0)[1], rel=1e-14)


def test_many_buffers_and_tree_levels(emulated):
    """1100 one-chunk buffers: the emulated launches take the table in batches of MAX_BUFFERS,
    and the pairwise tree two levels of groups before the last."""
    rng = np.random.default_rng(3)
    arrays = [grads(rng, DTYPES[j % len(DTYPES)], 1 + j % 50) for j in range(1100)]
    want = inspect_grads(arrays, 3.0, backend="numpy")
    same(inspect_grads(arrays, 3.0), want)
    same(_emulate(emulated, arrays, 3.0, max_grid=3), want, "emulated")
    _, _, launches = emulated.inspect(arrays, *grad_stats.unscale_factors(3.0), max_grid=3)
    names = [launch.name.split("::")[1].split("<")[0] for launch in launches]
    per_dtype = [sum(1 for a in arrays if a.dtype == d) for d in DTYPES]
    assert names.count("grad_lane_sums") == sum(-(-n // 64) for n in per_dtype)
    assert names[-3:] == ["grad_tree_sums", "grad_tree_sums", "grad_finish"]


def test_the_grid_changes_no_bit(emulated):
    rng = np.random.default_rng(4)
    arrays = mixed_list(rng)
    want = inspect_grads(arrays, 1.0, backend="numpy")
    for max_grid in (1, 2, 7, 1000):
        same(_emulate(emulated, arrays, 1.0, max_grid), want, f"max_grid={max_grid}")


def test_thread_counts_give_the_same_bits():
    rng = np.random.default_rng(5)
    n = 2 * cpu_backend.PARALLEL_FROM + 5  # the parallel loop
    for dtype in DTYPES:
        g = grads(rng, dtype, n)
        want = inspect_grads(g, 3.0, backend="numpy")
        for threads in (1, 2):
            same(inspect_grads(g, 3.0, threads=threads), want, f"{dtype} threads={threads}")


def test_the_norm_is_the_norm():
    """Within 1e-12 relative of np.linalg.norm of the unscaled values in float64."""
    rng = np.random.default_rng(6)
    for dtype in DTYPES:
        for scale in SCALES:
            arrays = [grads(rng, dtype, n) for n in (3 * 4096 + 5, 0, 999)]
            inv32, inv64 = grad_stats.unscale_factors(scale)
            unscaled = np.concatenate([
                a.reshape(-1) * inv64 if a.dtype == np.float64
                else (a.reshape(-1).astype(np.float32) * inv32).astype(np.float64)
                for a in arrays])
            found_inf, norm = inspect_grads(arrays, scale)
            assert found_inf is False and isinstance(norm, float)
            assert norm == pytest.approx(np.linalg.norm(unscaled), rel=1e-12, abs=0)
    assert inspect_grads([]) == (False, 0.0)
    assert inspect_grads([np.zeros(0), np.zeros((3, 0), np.float32)]) == (False, 0.0)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_non_finite_grad_in_any_buffer_is_found(bad, emulated):
    rng = np.random.default_rng(7)
    for j in (0, 3, 6):
        arrays = mixed_list(rng)
        flat = arrays[j].reshape(-1)
        flat[len(flat) // 2] = bad
        want = inspect_grads(arrays, 2.0, backend="numpy")
        assert want[0] is True
        assert np.isnan(want[1]) if np.isnan(bad) else want[1] == np.inf
        same(inspect_grads(arrays, 2.0), want, f"{bad} in grads[{j}]")
        same(_emulate(emulated, arrays, 2.0), want, f"emulated, {bad} in grads[{j}]")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_finite_grad_that_overflows_when_unscaled_is_found(dtype, emulated):
    big = {np.float16: 6e4, np.float32: 3e38, np.float64: 1.7e308}.get(dtype.type, 3e38)
    g = np.array([1.0, big, -2.0], dtype=dtype)
    scale = 1e-35 if dtype.itemsize == 2 else 0.25
    assert inspect_grads(g, 1.0) == inspect_grads(g, 1.0, backend="numpy")
    for backend in ("numpy", "numba"):
        found_inf, norm = inspect_grads(g, scale, backend=backend)
        assert found_inf is True and norm == np.inf, backend
    assert _emulate(emulated, [g], scale) == (True, np.inf)


def test_torch_cpu_tensors():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    arrays = [grads(rng, np.float32, 5000), grads(rng, np.float64, 33)]
    tensors = [torch.from_numpy(a) for a in arrays]
    want = inspect_grads(arrays, 3.0, backend="numpy")
    same(inspect_grads(tensors, 3.0), want, "float32 and float64 tensors")
    tracked = torch.from_numpy(arrays[0].copy()).requires_grad_()  # only read: not refused
    same(inspect_grads([tracked, tensors[1]], 3.0), want, "a tensor that requires grad")
    for dtype in (torch.bfloat16, torch.float16):
        t = torch.randn(3 * 4096 + 5, dtype=dtype).reshape(-1, 1)
        as_numpy = t.view(torch.int16).numpy().view(bfloat16 if dtype == torch.bfloat16
                                                     else np.float16)
        same(inspect_grads([t], 1024), inspect_grads([as_numpy], 1024, backend="numpy"), str(dtype))
        same(inspect_grads(t, 1024, backend="numpy"), inspect_grads(as_numpy, 1024), str(dtype))
    with pytest.raises(ValueError, match=r"grads\[1\] must be C-contiguous"):
        inspect_grads([tensors[0], torch.randn(4, 6, dtype=torch.bfloat16).t()])


# ---------------------------------------------------------------------------------------------
# Bad input.

@pytest.mark.parametrize("scale,error", [(0, ValueError), (-1.0, ValueError),
                                         (np.inf, ValueError), (np.nan, ValueError),
                                         (True, TypeError), ("2", TypeError), (None, TypeError),
                                         (np.array([2.0]), TypeError)])
def test_a_bad_grad_scale_is_refused(scale, error):
    with pytest.raises(error, match="grad_scale"):
        inspect_grads(np.ones(3, np.float32), scale)


def test_bad_buffers_are_refused_by_name():
    ok = np.ones(8, np.float32)
    with pytest.raises(ValueError, match=r"grads\[1\] must be C-contiguous"):
        inspect_grads([ok, np.ones(8)[::2]])
    with pytest.raises(ValueError, match=r"^grads must be C-contiguous"):
        inspect_grads(np.ones((4, 4), np.float32).T)
    with pytest.raises(TypeError, match=r"grads\[2\] has dtype int32"):
        inspect_grads([ok, ok, np.ones(3, np.int32)])
    with pytest.raises(TypeError, match=r"grads\[0\] must be an array"):
        inspect_grads([[1.0, 2.0]])
    with pytest.raises(ValueError, match="threads"):
        inspect_grads(ok, threads=0)
    with pytest.raises(ValueError, match="unknown backend"):
        inspect_grads(ok, backend="nope")


def test_buffers_in_different_places_are_refused(monkeypatch):
    """A buffer on a GPU next to host buffers (the place as native() reports it)."""
    host, elsewhere = np.ones(4, np.float32), np.ones(4, np.float32)
    real = grad_stats.native
    monkeypatch.setattr(grad_stats, "native",
                        lambda x, name: (x, "cuda:0") if x is elsewhere else real(x, name))
    with pytest.raises(ValueError, match=r"grads\[1\] lives on cuda:0 but grads\[0\] on host"):
        inspect_grads([host, elsewhere])
    with pytest.raises(ValueError, match="runs on host arrays"):
        inspect_grads([elsewhere], backend="numba")


# ---------------------------------------------------------------------------------------------
# One order, spelled in three places.

def test_the_backends_share_the_orders_constants():
    from fastrms.cpu import grad_stats as cpu
    from fastrms.cuda import grad_stats as cuda

    text = resources.files("fastrms.cuda").joinpath("grad_stats.cu").read_text(encoding="utf-8")

    def constant(name):
        return int(re.search(rf"constexpr (?:int|long long) {name} = (\d+);", text).group(1))

    assert (cpu.CHUNK, cpu.LANES) == (cuda.CHUNK, cuda.LANES) == (grad_stats.CHUNK,
                                                                  grad_stats.LANES)
    assert (constant("GRAD_CHUNK"), constant("GRAD_LANES")) == (grad_stats.CHUNK, grad_stats.LANES)
    assert constant("MAX_BUFFERS") == cuda.MAX_BUFFERS
    assert constant("MAX_LOG_GROUP") == cuda.LOG_GROUP


def test_importing_it_imports_no_backend():
    code = ("import sys, fastrms.grad_stats; "
            "print(sorted(m for m in ('numba', 'cupy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
