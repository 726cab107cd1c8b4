"""NVRTC, the compiler CuPy uses at run time, compiles every kernel instance with CuPy's flags.

nvcc and NVRTC differ (no host headers, their own defaults), so the CMake build alone does not
show that ``cupy.RawModule`` will accept rmsprop.cu. NVRTC needs no device: it runs here through
``cuda.bindings.nvrtc`` (PyPI ``cuda-bindings`` with ``nvidia-cuda-nvrtc``).
"""

import pytest

from conftest import skip_or_fail
from fastrms.cuda import loader
from native import toolchain

ARCHS = (75, 80, 90)


@pytest.fixture(scope="module")
def nvrtc():
    try:
        from native import nvrtc
        nvrtc.nvrtc.nvrtcVersion()
    except (ImportError, RuntimeError) as exc:
        skip_or_fail(f"NVRTC unavailable (pip install cuda-bindings nvidia-cuda-nvrtc): {exc}")
    if toolchain.cuda_include_dir() is None:
        skip_or_fail("CUDA headers (cuda_fp16.h) not found; set CUDA_PATH")
    return nvrtc


@pytest.mark.parametrize("arch", ARCHS)
def test_every_instance_compiles_with_cupys_flags(nvrtc, arch):
    names = loader.all_kernel_names() + loader.all_multi_kernel_names()
    lowered, cubin, log = nvrtc.compile_instances(loader.source(), loader.OPTIONS, names, arch,
                                                  toolchain.cuda_include_dir())
    assert "warning" not in log.lower(), log
    assert sorted(lowered) == sorted(names)
    assert len(set(lowered.values())) == 32  # 16 + 16 distinct kernels, each in the cubin
    for name, mangled in lowered.items():
        prefix = ("_ZN7fastrms20rmsprop_multi_kernel" if "multi" in name
                  else "_ZN7fastrms14rmsprop_kernel")
        assert mangled.startswith(prefix) and mangled.encode() in cubin


def test_the_benchmarks_roofline_build_drops_only_the_math(nvrtc):
    """-DFASTRMS_SAME_TRAFFIC (fastrms.bench.gpu_roofline) builds the same instances, each
    without the rule's division and square root: a smaller kernel of the same name."""
    names = loader.all_kernel_names()
    built = {same: nvrtc.compile_instances(loader.source(), loader.options(same), names, 90,
                                           toolchain.cuda_include_dir())
             for same in (False, True)}
    assert "warning" not in built[True][2].lower(), built[True][2]
    assert built[True][0] == built[False][0]  # the same kernels, as launches name them
    assert len(built[True][1]) < len(built[False][1])


def test_a_name_that_is_not_an_instance_is_refused(nvrtc):
    with pytest.raises(nvrtc.NvrtcError):
        nvrtc.compile_instances(loader.source(), loader.OPTIONS,
                                ["fastrms::rmsprop_kernel<int, false, false>"], 75,
                                toolchain.cuda_include_dir())
