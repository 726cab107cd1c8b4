"""NVRTC, the compiler CuPy uses at run time, compiles every kernel instance with CuPy's flags.

nvcc and NVRTC differ (no host headers, their own defaults), so the CMake build alone does not
show that ``cupy.RawModule`` will accept rmsprop.cu. NVRTC needs no device: it runs here through
``cuda.bindings.nvrtc`` (PyPI ``cuda-bindings`` with ``nvidia-cuda-nvrtc``).
"""

from importlib import resources

import numpy as np
import pytest

from conftest import skip_or_fail
from fastrms.bench import gpu_roofline
from fastrms.cuda import loader, plan, plan8, rule_args
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
    names = plan.all_kernel_names() + plan.all_multi_kernel_names() + plan8.all_kernel_names()
    lowered, cubin, log = nvrtc.compile_instances(loader.source(), loader.OPTIONS, names, arch,
                                                  toolchain.cuda_include_dir())
    assert "warning" not in log.lower(), log
    assert b"  "[:1][0] == 0x20  # NVRTC wrote into no bytes object the interpreter shares
    assert sorted(lowered) == sorted(names)
    assert len(set(lowered.values())) == 44  # 16 + 16 + 12 distinct kernels, each in the cubin
    for name, mangled in lowered.items():
        prefix = ("_ZN7fastrms20rmsprop_multi_kernel" if "multi" in name
                  else "_ZN7fastrms15rmsprop8_kernel" if "rmsprop8" in name
                  else "_ZN7fastrms14rmsprop_kernel")
        assert mangled.startswith(prefix) and mangled.encode() in cubin


def test_the_benchmarks_roofline_build_drops_only_the_math(nvrtc):
    """-DFASTRMS_SAME_TRAFFIC (fastrms.bench.gpu_roofline) builds the same instances, each
    without the rule's division and square root: a smaller kernel of the same name."""
    names = plan.all_kernel_names()
    built = {same: nvrtc.compile_instances(loader.source(),
                                           gpu_roofline.OPTIONS if same else loader.OPTIONS,
                                           names, 90, toolchain.cuda_include_dir())
             for same in (False, True)}
    assert "warning" not in built[True][2].lower(), built[True][2]
    assert built[True][0] == built[False][0]  # the same kernels, as launches name them
    assert len(built[True][1]) < len(built[False][1])


def test_a_name_that_is_not_an_instance_is_refused(nvrtc):
    with pytest.raises(nvrtc.NvrtcError):
        nvrtc.compile_instances(loader.source(), loader.OPTIONS,
                                ["fastrms::rmsprop_kernel<int, false, false>"], 75,
                                toolchain.cuda_include_dir())


# RuleArgs layouts the kernels do not have: the scalars and modes swapped, one scalar short, the
# scalars in the other compute type, ints for the scalars, C's alignment rules not applied (no
# align=True: alignment 1, and no tail padding once the modes are odd in number).
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
WRONG_LAYOUTS = {
    "fields swapped": (F32, rule_args.struct_dtype(F32, rule_args.FIELDS[::-1])),
    "a scalar short": (F32, rule_args.struct_dtype(F32, (("k", F32, 7), rule_args.FIELDS[1]))),
    "float scalars for double": (F64, rule_args.DTYPES[F32]),
    "int scalars": (F32, rule_args.struct_dtype(np.int32)),
    "not C-aligned": (F64, np.dtype([("k", F64, (8,)), ("m", np.int32, (6,))])),
}


@pytest.mark.parametrize("wrong", WRONG_LAYOUTS)
def test_a_rule_args_layout_that_disagrees_fails_the_compile(nvrtc, wrong):
    """The static_asserts that loader.source() appends, generated from another NumPy layout, stop
    NVRTC (tests/test_cuda_build.py shows nvcc stopping too)."""
    compute, dtype = WRONG_LAYOUTS[wrong]
    kernels = resources.files("fastrms.cuda").joinpath("rmsprop.cu").read_text(encoding="utf-8")
    wrong_source = kernels + rule_args.layout_check({compute: dtype})
    with pytest.raises(nvrtc.NvrtcError, match="static assertion failed"):
        nvrtc.compile_instances(wrong_source, loader.OPTIONS, [], 75, toolchain.cuda_include_dir())
    right_source = kernels + rule_args.layout_check({compute: rule_args.DTYPES[compute]})
    nvrtc.compile_instances(right_source, loader.OPTIONS, [], 75, toolchain.cuda_include_dir())
