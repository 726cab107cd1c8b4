"""The CUDA launcher's pure functions (fastrms.cuda.loader), and the backend's availability."""

import re
import subprocess
import sys

import numpy as np
import pytest

import fastrms
from fastrms import rule as R
from fastrms._spec import Rule
from fastrms.cuda import loader
from native import cases

F32, F64, F16 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)


def test_instance_names():
    names = loader.all_kernel_names()
    assert len(set(names)) == 16
    assert loader.kernel_name(F16, True, False) == "fastrms::rmsprop_kernel<__half, true, false>"
    assert loader.kernel_name(F32, False, True) == "fastrms::rmsprop_kernel<float, false, true>"
    if cases.bfloat16 is not None:
        assert "fastrms::rmsprop_kernel<__nv_bfloat16, true, true>" in names


def test_compute_dtype_and_vector_width():
    for dtype in cases.PARAM_DTYPES:
        assert loader.compute_dtype(dtype) == Rule().state_dtype(dtype)
        assert loader.vector_width(dtype) * dtype.itemsize == 16
    with pytest.raises(KeyError):
        loader.kernel_name(np.dtype(np.int32), False, False)


def test_vector_span_aligned_buffers_vectorize_whole_vectors():
    assert loader.vector_span([4096, 8192], [4, 4], 0, 10, 4) == (0, 8)
    assert loader.vector_span([4096, 8192], [4, 4], 0, 3, 4) == (0, 0)  # too short: tail only


def test_vector_span_common_misalignment_takes_a_scalar_head():
    # float16 params at +2 bytes, float32 state at +4 bytes: both aligned 7 elements later.
    assert loader.vector_span([4098, 8196], [2, 4], 0, 100, 8) == (7, 7 + 88)
    assert loader.vector_span([4096 - 4 * 5], [4], 5, 9, 4) == (5, 9)  # begin counts too


def test_vector_span_mismatched_misalignment_goes_all_scalar():
    assert loader.vector_span([4096, 4100], [4, 4], 0, 1000, 4) == (1000, 1000)
    assert loader.vector_span([4096, 4097], [1, 1], 0, 0, 16) == (0, 0)


def test_launch_config():
    assert loader.launch_config(1, 4, 132) == (1, 256)
    assert loader.launch_config(1024, 4, 132) == (1, 256)
    assert loader.launch_config(1025, 4, 132) == (2, 256)
    assert loader.launch_config(10**9, 4, 132) == (4 * 132, 256)  # capped: grid-stride does the rest
    assert loader.launch_config(2**34, 2, 1) == (4, 256)


def test_kernel_args_are_typed_as_the_kernel_parameters():
    rule = Rule(momentum=0.9, centered=True, bias_correction=True)
    for dtype in cases.PARAM_DTYPES:
        compute = loader.compute_dtype(dtype)
        scalars = rule.scalars(compute, 3)
        args = loader.kernel_args([1, 2, 3, 0, 5], 0, 2, 10, 11, scalars, rule.modes(), dtype)
        assert [type(a) for a in args] == (
            [np.uint64] * 5 + [np.int64] * 4 + [compute.type] * 8 + [np.int32] * 6)
        assert [int(a) for a in args[:9]] == [1, 2, 3, 0, 5, 0, 2, 10, 11]
        assert list(args[9:17]) == list(scalars)  # cast once on the host, unchanged here
        assert tuple(int(m) for m in args[17:]) == rule.modes()
    with pytest.raises(ValueError):
        loader.kernel_args([1, 2, 3], 0, 0, 0, 1, scalars, rule.modes(), F32)


def test_plan_names_the_instance_from_the_buffers_present():
    rule = Rule(momentum=0.9)
    launch = loader.plan(F32, (4096, 8192, 12288, 16384, None), 1000, rule, None, 132)
    assert launch.name == loader.kernel_name(F32, True, False)
    assert (launch.grid, launch.block) == (1, 256)
    assert [int(a) for a in launch.args[:9]] == [4096, 8192, 12288, 16384, 0, 0, 0, 1000, 1000]
    half = loader.plan(F16, (4098, 8194, 12292, None, None), 1000, Rule(), None, 132)
    assert [int(a) for a in half.args[5:9]] == [0, 7, 7 + 992, 1000]
    assert half.args[9].dtype == np.float32


def test_bias_correction_scalar_follows_the_step():
    rule = Rule(bias_correction=True, alpha=0.9)
    k1 = loader.plan(F32, (0, 0, 0, None, None), 4, rule, 1, 1).args[9 + R.BIAS_CORRECTION]
    k2 = loader.plan(F32, (0, 0, 0, None, None), 4, rule, 2, 1).args[9 + R.BIAS_CORRECTION]
    assert k1 == np.float32(1 - 0.9) and k2 == np.float32(1 - 0.9**2)


def test_source_is_self_contained_and_numbers_modes_as_rule_py():
    source = loader.source()
    includes = re.findall(r"#include\s*(\S+)", source)
    assert includes == ["<cuda_fp16.h>", "<cuda_bf16.h>"]  # toolkit headers only, no user headers

    def enum(first):
        body = re.search(r"enum[^{]*\{\s*(" + first + r"[^}]*)\}", source).group(1)
        return [w.strip() for w in body.split(",")]

    assert enum("LR") == ["LR", "ALPHA", "ONE_MINUS_ALPHA", "EPS", "WEIGHT_DECAY", "MOMENTUM",
                          "LERP_WEIGHT", "BIAS_CORRECTION", "N_SCALARS"]
    for i, name in enumerate(enum("LR")[:-1]):
        assert getattr(R, name) == i
    for first in ("MAXIMIZE", "WD_NONE", "CENTERED_NONE", "MOMENTUM_NONE"):
        for i, name in enumerate(enum(first)):
            if not name.startswith("N_"):
                assert getattr(R, name) == i, name
    assert "__launch_bounds__(BLOCK)" in source
    assert f"constexpr int BLOCK = {loader.BLOCK};" in source


def test_import_fastrms_does_not_import_cupy():
    code = "import sys, fastrms; print('cupy' in sys.modules, 'fastrms.cuda.loader' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_backends_reports_why_cupy_is_not_usable():
    info = {b.name: b for b in fastrms.backends()}["cupy"]
    assert info.place in ("cuda", "?")
    if info.usable:
        pytest.skip("CuPy sees a CUDA device here")
    assert info.reason.startswith(("no CUDA device", "CuPy not installed", "cannot import"))


def test_plan_is_memoized_across_steps_unless_bias_corrected():
    addresses = (4096, 8192, 12288, None, None)
    assert loader.plan(F32, addresses, 100, Rule(), 1, 132) is loader.plan(F32, addresses, 100,
                                                                              Rule(), 2, 132)
    biased = Rule(bias_correction=True)
    assert loader.plan(F32, addresses, 100, biased, 1, 132) != loader.plan(F32, addresses, 100,
                                                                             biased, 2, 132)
