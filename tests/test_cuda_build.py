"""nvcc builds rmsprop.cu for sm_75/80/90 with every instance of both kernels (single buffer and
multi-tensor), no spills, no warnings, at most 64 registers a thread (4 resident blocks of 256), and
the float32 kernels use 128-bit loads and stores (CMakeLists.txt; docs/design.md §5.1). It builds
the source CuPy compiles, whose RuleArgs layout check stops nvcc when the struct disagrees with
the NumPy dtype the launches pack."""

import re
import subprocess
from importlib import resources

import numpy as np
import pytest

from conftest import skip_or_fail
from fastrms.cuda import loader, rule_args
from native import toolchain


@pytest.fixture(scope="module")
def device_build():
    reason = toolchain.missing_tools()
    if reason:
        skip_or_fail(f"the nvcc build of rmsprop.cu {reason}")
    ok, log = toolchain.build("rmsprop_device", "rmsprop_ptx_check")
    assert ok, log
    return log


def test_every_instance_builds_for_every_arch_without_spills(device_build):
    # ptxas runs with -warn-spills -Werror, so a spill fails the build; its -v report is checked
    # here as well. A fresh build prints one report per instance and arch; an up-to-date one none.
    reports = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", device_build)
    assert all(stores == loads == "0" for stores, loads in reports)
    if reports:
        assert len(reports) == 44 * 3, \
            "(16 + 16 multi-tensor + 12 8-bit) instances x sm_75, sm_80, sm_90"
        entries = set(re.findall(r"Compiling entry function '(\w+)' for '(sm_\d+)'", device_build))
        assert {arch for _, arch in entries} == {"sm_75", "sm_80", "sm_90"}
        assert len(entries) == 132
        assert sum("rmsprop_multi_kernel" in name for name, _ in entries) == 48
        assert sum("rmsprop8_kernel" in name for name, _ in entries) == 36
        # plan.BLOCKS_PER_SM = 4 blocks of 256 threads share 64K registers; the 8-bit kernel
        # (rmsprop.cu says why) takes up to 72, 3 blocks.
        names = re.findall(r"Compiling entry function '(\w+)'", device_build)
        registers = [int(r) for r in re.findall(r"Used (\d+) registers", device_build)]
        assert len(registers) == len(names) == 132
        assert max(r for n, r in zip(names, registers) if "rmsprop8" not in n) <= 64
        assert max(r for n, r in zip(names, registers) if "rmsprop8" in n) <= 72


def test_float32_ptx_has_128_bit_loads_and_stores(device_build):
    for arch in (75, 80, 90):
        ptx = (toolchain.BUILD_DIR / f"rmsprop.compute_{arch}.ptx").read_text()
        assert ptx.count(".entry _ZN7fastrms14rmsprop_kernel") == 16
        assert ptx.count(".entry _ZN7fastrms20rmsprop_multi_kernel") == 16
        assert re.search(r"ld\.global(\.nc)?\.v4\.f32", ptx) and "st.global.v4.f32" in ptx


def test_ptx_has_no_fused_multiply_add_and_ieee_division_and_roots(device_build):
    # The reference rounds every product and sum (--fmad=false); no fast-math approximations.
    for arch in (75, 80, 90):
        ptx = (toolchain.BUILD_DIR / f"rmsprop.compute_{arch}.ptx").read_text()
        assert not re.search(r"\b(fma|mad)\.rn", ptx)
        assert ".approx" not in ptx
        assert "div.rn.f32" in ptx and "sqrt.rn.f32" in ptx and "sqrt.rn.f64" in ptx


PTX_WITHOUT_VECTORS = """
.visible .entry _ZN7fastrms14rmsprop_kernelIfLb0ELb0EEEvPT_(
{
\tld.global.f32 \t%f1, [%rd1];
\tst.global.f32 \t[%rd1], %f1;
}
"""


def test_ptx_check_rejects_scalar_only_kernels(tmp_path):
    """The CMake check can fail: a float32 entry with only 32-bit accesses is an error."""
    if toolchain.missing_tools():
        skip_or_fail(f"the PTX check {toolchain.missing_tools()}")
    ptx = tmp_path / "scalar.ptx"
    ptx.write_text(PTX_WITHOUT_VECTORS)
    result = subprocess.run(
        ["cmake", f"-DPTX={ptx}", "-P", str(toolchain.ROOT / "tests/native/check_ptx.cmake")],
        capture_output=True, text=True)
    assert result.returncode != 0
    assert "has no 128-bit global load" in result.stderr


def test_the_build_compiles_the_source_cupy_compiles(device_build):
    """rmsprop_source.cu, written by the build: rmsprop.cu and its RuleArgs layout check."""
    assert (toolchain.BUILD_DIR / "rmsprop_source.cu").read_text(encoding="utf-8") == \
        loader.source()


def test_a_rule_args_layout_that_disagrees_fails_the_nvcc_build(tmp_path):
    """The layout check generated from a NumPy dtype with the fields swapped stops nvcc (host and
    device passes: the host compiler checks the same layout)."""
    if toolchain.missing_tools():
        skip_or_fail(f"the nvcc layout check {toolchain.missing_tools()}")
    kernels = resources.files("fastrms.cuda").joinpath("rmsprop.cu").read_text(encoding="utf-8")
    swapped = rule_args.struct_dtype(np.float32, rule_args.FIELDS[::-1])
    source = tmp_path / "wrong_layout.cu"
    source.write_text(kernels + rule_args.layout_check({np.dtype(np.float32): swapped}))
    result = subprocess.run(["nvcc", *loader.OPTIONS, "-arch=sm_75", "-c", str(source), "-o",
                             str(tmp_path / "wrong_layout.o")],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "static assertion failed" in result.stdout + result.stderr
    assert "fastrms::RuleArgs<float>::k: offset" in result.stdout + result.stderr
