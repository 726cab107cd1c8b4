"""``inspect_grads`` on the CUDA path: NVRTC compiles grad_stats.cu with CuPy's flags, a GradTable
layout that disagrees fails the compile, and (marked ``gpu``, skipped without a device) the CuPy
path equals the NumPy reference bit for bit, on CuPy's and torch's current streams.

The host emulation of the same kernels is tested in tests/test_grad_stats.py.
"""

import numpy as np
import pytest

from conftest import require_cupy_device, require_torch_cuda
from fastrms.cuda import grad_stats, loader
from fastrms.grad_stats import inspect_grads
from native import toolchain
from test_grad_stats import DTYPES, SCALES, SIZES, bits, grads, mixed_list

from test_cuda_nvrtc import ARCHS, nvrtc  # noqa: E402,F401 (the NVRTC fixture, shared)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_kernel_compiles_with_cupys_flags(nvrtc, arch):
    names = grad_stats.all_names()
    lowered, cubin, log = nvrtc.compile_instances(grad_stats.source(), loader.OPTIONS, names,
                                                  arch, toolchain.cuda_include_dir())
    assert "warning" not in log.lower(), log
    assert sorted(lowered) == sorted(names) and len(set(lowered.values())) == len(names)
    for mangled in lowered.values():
        assert mangled.startswith("_ZN7fastrms") and mangled.encode() in cubin


def test_a_table_layout_that_disagrees_fails_the_compile(nvrtc):
    from fastrms.cuda import rule_args

    text = grad_stats.source().split("// GradTable laid out as")[0]
    short = np.dtype([(name, grad_stats.TABLE.fields[name][0]) for name in grad_stats.TABLE.names
                      if name != "first"], align=True)
    wrong = text + "\n".join([rule_args._SAME, *rule_args.static_asserts(grad_stats.CXX_TABLE,
                                                                         short)])
    with pytest.raises(nvrtc.NvrtcError, match="static assertion failed"):
        nvrtc.compile_instances(wrong, loader.OPTIONS, [], 75, toolchain.cuda_include_dir())


def test_the_plan_scratch_fits_its_launches():
    """Every address a plan hands a kernel lies inside the scratch it asked for (pure)."""
    for chunks_each in ([1], [33 * 32 + 1], [5, 0, 7000]):
        sizes = [c * grad_stats.CHUNK - 3 if c else 0 for c in chunks_each]
        chunks = grad_stats.chunk_counts(sizes)[1][-1]
        scratch, doubles = 1 << 20, grad_stats.scratch_doubles(chunks)
        launches = grad_stats.plan([np.float32] * len(sizes), [4096] * len(sizes), sizes, 1.0,
                                   1.0, scratch, 8, 16, 4)
        for launch in launches:
            for arg in launch.args:
                if isinstance(arg, np.uint64) and int(arg) >= scratch:
                    assert int(arg) < scratch + 8 * doubles, launch
        assert launches[-1].name == grad_stats.FINISH and launches[-1].grid == 1


# ---------------------------------------------------------------------------------------------
# On a GPU.

@pytest.fixture(scope="module")
def cp():
    require_cupy_device()
    import cupy

    return cupy


def _on_device(cp, result):
    found_inf, norm = result
    assert isinstance(found_inf, cp.ndarray) and isinstance(norm, cp.ndarray)
    assert (found_inf.shape, found_inf.dtype, norm.shape, norm.dtype) == ((), np.float32, (),
                                                                           np.float64)
    value = float(found_inf.get())
    assert value in (0.0, 1.0)
    return value == 1.0, float(norm.get())


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cupy_equals_the_reference(cp, dtype):
    rng = np.random.default_rng(11)
    for n in SIZES + [1 << 20]:
        g = grads(rng, dtype, n)
        for scale in SCALES:
            want = inspect_grads(g, scale, backend="numpy")
            got = _on_device(cp, inspect_grads(cp.asarray(g), scale))
            assert bits(got) == bits(want), f"{dtype} n={n} grad_scale={scale}"


@pytest.mark.gpu
def test_cupy_lists_non_finite_values_and_streams(cp):
    rng = np.random.default_rng(12)
    arrays = mixed_list(rng) + [grads(rng, np.float32, 5) for _ in range(70)]
    want = inspect_grads(arrays, 3.0, backend="numpy")
    with cp.cuda.Stream(non_blocking=True):
        got = inspect_grads([cp.asarray(a) for a in arrays], 3.0)
    assert bits(_on_device(cp, got)) == bits(want)
    arrays[3].reshape(-1)[100] = np.nan
    want = inspect_grads(arrays, 3.0, backend="numpy")
    assert want[0] is True
    assert bits(_on_device(cp, inspect_grads([cp.asarray(a) for a in arrays], 3.0))) == bits(want)
    empty = inspect_grads([cp.zeros(0, np.float32)], 3.0)
    assert _on_device(cp, empty) == (False, 0.0)


@pytest.mark.gpu
def test_torch_cuda_tensors(cp):
    torch = require_torch_cuda()
    rng = np.random.default_rng(13)
    host = [torch.randn(70001, dtype=torch.bfloat16),
            torch.from_numpy(grads(rng, np.float32, 4097))]
    want = inspect_grads(host, 1024, backend="numpy")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        device = [t.cuda() for t in host]
        got = inspect_grads(device, 1024)
    stream.synchronize()
    assert bits(_on_device(cp, got)) == bits(want)
