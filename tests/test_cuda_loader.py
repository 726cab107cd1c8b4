"""The CUDA launcher's pure functions (fastrms.cuda.plan: single-buffer and multi-tensor plans),
the kernels' RuleArgs struct (fastrms.cuda.rule_args) as CuPy passes it, the source the loader
compiles, and the backend's availability."""

import ctypes
import re
import subprocess
import sys

import numpy as np
import pytest

import fastrms
from fastrms import rounding
from fastrms import rule as R
from fastrms._buffers import Extras
from fastrms._spec import Rule
from fastrms.cuda import loader, plan, rule_args
import cases

F32, F64, F16 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)


def test_instance_names():
    names = plan.all_kernel_names()
    assert len(set(names)) == 16
    assert plan.kernel_name(F16, True, False) == "fastrms::rmsprop_kernel<__half, true, false>"
    assert plan.kernel_name(F32, False, True) == "fastrms::rmsprop_kernel<float, false, true>"
    if cases.bfloat16 is not None:
        assert "fastrms::rmsprop_kernel<__nv_bfloat16, true, true>" in names


def test_compute_dtype_and_vector_width():
    for dtype in cases.PARAM_DTYPES:
        assert plan.compute_dtype(dtype) == Rule().state_dtype(dtype)
        assert plan.vector_width(dtype) * dtype.itemsize == 16
    with pytest.raises(KeyError):
        plan.kernel_name(np.dtype(np.int32), False, False)


def test_vector_span_aligned_buffers_vectorize_whole_vectors():
    assert plan.vector_span([4096, 8192], [4, 4], 0, 10, 4) == (0, 8)
    assert plan.vector_span([4096, 8192], [4, 4], 0, 3, 4) == (0, 0)  # too short: tail only


def test_vector_span_common_misalignment_takes_a_scalar_head():
    # float16 params at +2 bytes, float32 state at +4 bytes: both aligned 7 elements later.
    assert plan.vector_span([4098, 8196], [2, 4], 0, 100, 8) == (7, 7 + 88)
    assert plan.vector_span([4096 - 4 * 5], [4], 5, 9, 4) == (5, 9)  # begin counts too


def test_vector_span_mismatched_misalignment_goes_all_scalar():
    assert plan.vector_span([4096, 4100], [4, 4], 0, 1000, 4) == (1000, 1000)
    assert plan.vector_span([4096, 4097], [1, 1], 0, 0, 16) == (0, 0)


def test_launch_config():
    assert plan.launch_config(1, 4, 132) == (1, 256)
    assert plan.launch_config(1024, 4, 132) == (1, 256)
    assert plan.launch_config(1025, 4, 132) == (2, 256)
    assert plan.launch_config(10**9, 4, 132) == (4 * 132, 256)  # capped: grid-stride does the rest
    assert plan.launch_config(2**34, 2, 1) == (4, 256)


def test_rule_args_is_one_c_struct_of_the_rules_scalars_and_modes():
    """RuleArgs<T> as NumPy lays it out with C's rules (align=True): T k[10], int m[7], then
    int rounding and unsigned long long key (8-byte aligned)."""
    f32, f64 = (rule_args.DTYPES[np.dtype(t)] for t in (np.float32, np.float64))
    assert f32.names == f64.names == tuple(name for name, _, _ in rule_args.FIELDS) == \
        ("k", "m", "rounding", "key")
    assert f32.fields["k"][0] == np.dtype((np.float32, (R.N_SCALARS,))) and f32.fields["k"][1] == 0
    assert f32.fields["m"][0] == np.dtype((np.int32, (R.N_MODES,))) and f32.fields["m"][1] == 40
    assert f32.fields["rounding"] == (np.dtype(np.int32), 68)
    assert f32.fields["key"] == (np.dtype(np.uint64), 72)
    assert (f32.itemsize, f32.alignment) == (80, 8)
    assert [f64.fields[n][1] for n in f64.names] == [0, 80, 108, 112]
    assert (f64.itemsize, f64.alignment) == (120, 8)
    assert f32.isalignedstruct and f64.isalignedstruct


def test_kernel_args_are_typed_as_the_kernel_parameters():
    """Six pointers, four long longs, the counter offset, RuleArgs<T> as one NumPy array of size
    one, then the lr's and the AMP values' device addresses (0: the rule's own)."""
    rule = Rule(momentum=0.9, centered=True, bias_correction=True)
    for dtype in cases.PARAM_DTYPES:
        compute = plan.compute_dtype(dtype)
        scalars = rule.scalars(compute, 3)
        packed = rule_args.pack(scalars, rule.modes(), compute)
        args = plan.kernel_args([1, 2, 3, 0, 5, 6], 0, 2, 10, 11, packed)
        assert [type(a) for a in args] == [np.uint64] * 6 + [np.int64] * 4 + [
            np.uint64, np.ndarray, np.uint64, np.uint64]
        assert [int(a) for a in args[:11]] == [1, 2, 3, 0, 5, 6, 0, 2, 10, 11, 0]
        assert args[12] == args[13] == 0
        assert args[11] is packed and packed.shape == (1,) and not packed.flags.writeable
        more = plan.kernel_args([1, 2, 3, 0, 5, 0], 0, 2, 10, 11, packed, lr_device=64,
                                offset=2**64 - 1, amp_device=128)
        assert (more[10], more[12], more[13]) == (2**64 - 1, 64, 128)
        assert packed.dtype == rule_args.DTYPES[compute]
        assert packed["k"].tobytes() == np.array(scalars, compute).tobytes()  # cast once, unchanged
        assert tuple(packed["m"][0]) == rule.modes() and packed["rounding"] == packed["key"] == 0
    with pytest.raises(ValueError):
        plan.kernel_args([1, 2, 3, 0, 5], 0, 0, 0, 1, packed)
    with pytest.raises(ValueError):
        rule_args.pack(scalars[:1], rule.modes(), F32)  # would broadcast, silently


def test_rule_args_reach_the_driver_as_cupy_passes_them():
    """CuPy points cuLaunchKernel at a NumPy array's own data (CNumpyArray) and at a copy of a
    NumPy scalar's value (CScalar); the host emulation points at the same bytes."""
    function = pytest.importorskip("cupy.cuda.function")
    scalar = pytest.importorskip("cupy._core._scalar")
    from native.emulation import argument_bytes

    launch = plan.plan(F64, (4096, 8192, 12288, None, None, None), 10, Rule(lr=0.5), None, 1,
                       lr_device=64)
    packed = launch.args[11]
    address, _ = argument_bytes(packed)
    assert function.CNumpyArray(packed).ptr == address == packed.ctypes.data
    assert ctypes.string_at(address, packed.nbytes) == packed.tobytes()
    for arg in launch.args[:11] + launch.args[12:]:
        address, alive = argument_bytes(arg)
        cupys = scalar.CScalar(arg)
        assert ctypes.string_at(cupys.ptr, 8) == ctypes.string_at(address, 8) == arg.tobytes()


def test_layout_check_states_the_numpy_layout_in_cxx():
    check = rule_args.layout_check()
    for cxx, size, m_offset, key_offset in (("float", 80, 40, 72), ("double", 120, 80, 112)):
        struct = f"fastrms::RuleArgs<{cxx}>"
        assert f"static_assert(sizeof({struct}) == {size}," in check
        assert f"static_assert(__builtin_offsetof({struct}, m) == {m_offset}," in check
        assert f"static_assert(__builtin_offsetof({struct}, key) == {key_offset}," in check
        assert f"same<decltype({struct}::k), {cxx}[{R.N_SCALARS}]>" in check
        assert f"same<decltype({struct}::m), int[{R.N_MODES}]>" in check
        assert f"same<decltype({struct}::rounding), int>" in check
        assert f"same<decltype({struct}::key), unsigned long long>" in check
    assert loader.source().endswith(check)  # what CuPy compiles checks the layout too


def test_plan_names_the_instance_from_the_buffers_present():
    rule = Rule(momentum=0.9)
    launch = plan.plan(F32, (4096, 8192, 12288, 16384, None, None), 1000, rule, None, 132)
    assert launch.name == plan.kernel_name(F32, True, False)
    assert (launch.grid, launch.block) == (1, 256)
    assert [int(a) for a in launch.args[:10]] == [4096, 8192, 12288, 16384, 0, 0, 0, 0, 1000,
                                                  1000]
    half = plan.plan(F16, (4098, 8194, 12292, None, None, None), 1000, Rule(), None, 132)
    assert [int(a) for a in half.args[6:10]] == [0, 7, 7 + 992, 1000]
    assert half.args[11]["k"].dtype == np.float32
    # A master (float32) that is aligned elsewhere holds the vector span back like any buffer.
    master = plan.plan(F16, (4098, 8194, 12292, None, None, 16388), 1000, Rule(), None, 132)
    assert int(master.args[5]) == 16388 and [int(a) for a in master.args[6:8]] == [0, 7]
    assert plan.plan(F16, (4098, 8194, 12292, None, None, 16384), 1000, Rule(), None,
                     132).args[7] == 1000


def test_bias_correction_scalar_follows_the_step():
    rule = Rule(bias_correction=True, alpha=0.9)
    k1 = plan.plan(F32, (0, 0, 0, None, None, None), 4, rule, 1, 1).args[11]["k"][
        0, R.BIAS_CORRECTION]
    k2 = plan.plan(F32, (0, 0, 0, None, None, None), 4, rule, 2, 1).args[11]["k"][
        0, R.BIAS_CORRECTION]
    assert k1 == np.float32(1 - 0.9) and k2 == np.float32(1 - 0.9**2)


def test_source_is_self_contained_and_numbers_modes_as_rule_py():
    source = loader.source()
    includes = re.findall(r"#include\s*(\S+)", source)
    assert includes == ["<cuda_fp16.h>", "<cuda_bf16.h>"]  # toolkit headers only, no user headers

    def enum(first):
        body = re.search(r"enum[^{]*\{\s*(" + first + r"[^}]*)\}", source).group(1)
        return [w.strip() for w in body.split(",")]

    assert enum("LR") == ["LR", "ALPHA", "ONE_MINUS_ALPHA", "EPS", "WEIGHT_DECAY", "MOMENTUM",
                          "LERP_WEIGHT", "BIAS_CORRECTION", "GRAD_UNSCALE", "CLIP", "N_SCALARS"]
    for i, name in enumerate(enum("LR")[:-1]):
        assert getattr(R, name) == i
    for first in ("MAXIMIZE", "WD_NONE", "CENTERED_NONE", "MOMENTUM_NONE"):
        for i, name in enumerate(enum(first)):
            if not name.startswith("N_"):
                assert getattr(R, name) == i, name
    for first, names in (("FLOAT", ["FLOAT", "BFLOAT16", "FLOAT16"]),
                         ("NEAREST", ["NEAREST", "STOCHASTIC"])):  # rounding.py's numbers
        assert enum(first) == names
        assert [getattr(rounding, n) for n in names] == list(range(len(names)))
    for constant in ("0x9E3779B97F4A7C15", "0xBF58476D1CE4E5B9", "0x94D049BB133111EB"):
        assert constant in source  # rounding.py's generator
    assert "__launch_bounds__(BLOCK)" in source
    assert f"constexpr int BLOCK = {plan.BLOCK};" in source


def test_import_fastrms_does_not_import_cupy():
    code = "import sys, fastrms; print('cupy' in sys.modules, 'fastrms.cuda.loader' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_backends_reports_why_cupy_is_not_usable():
    info = fastrms.dispatch.backend_info("cupy")
    assert info.place in ("cuda", "?")
    if info.usable:
        pytest.skip("CuPy sees a CUDA device here")
    assert info.reason.startswith(("no CUDA device", "CuPy not installed", "cannot import"))


def test_plan_is_memoized_across_steps_unless_bias_corrected():
    addresses = (4096, 8192, 12288, None, None, None)
    assert plan.plan(F32, addresses, 100, Rule(), 1, 132) is plan.plan(F32, addresses, 100,
                                                                              Rule(), 2, 132)
    biased = Rule(bias_correction=True)
    assert plan.plan(F32, addresses, 100, biased, 1, 132) != plan.plan(F32, addresses, 100,
                                                                             biased, 2, 132)


# ---------------------------------------------------------------------------------------------
# The multi-tensor planner (plan.multi_plan and its parts).

def test_multi_instance_names():
    names = plan.all_multi_kernel_names()
    assert len(set(names)) == 16 and not set(names) & set(plan.all_kernel_names())
    assert plan.multi_kernel_name(F16, True, False) == \
        "fastrms::rmsprop_multi_kernel<__half, true, false>"


@pytest.mark.parametrize("dtype", cases.PARAM_DTYPES, ids=str)
def test_vector_spans_agree_with_vector_span(dtype):
    rng = np.random.default_rng(0)
    state = plan.compute_dtype(dtype)
    n = 400
    pages = 4096 * rng.integers(1, 100, (n, 6))
    misalign = np.concatenate([rng.integers(0, 8, (n, 2)) * dtype.itemsize,
                               rng.integers(0, 4, (n, 4)) * state.itemsize], axis=1)
    table = pages + misalign
    table[rng.random(n) < 0.5, 3] = 0  # absent buffers
    table[rng.random(n) < 0.5, 5] = 0
    sizes = rng.choice([0, 1, 3, 5, 9, 100], n)
    vec_begins, vec_ends = plan.vector_spans(table, sizes, dtype)
    for row, size, vb, ve in zip(table, sizes, vec_begins, vec_ends):
        present = [(a, dtype.itemsize if i < 2 else state.itemsize) for i, a in enumerate(row) if a]
        want = plan.vector_span([a for a, _ in present], [s for _, s in present], 0, size,
                                  plan.vector_width(dtype))
        assert (vb, ve) == want, (row, size)
    assert (vec_begins < sizes).any() and (vec_begins == sizes).any()  # both kinds occurred


def test_chunks_tile_each_tensor_with_aligned_whole_vector_spans():
    sizes = np.array([0, 1, 3, 4097, 5000, 2048, 7])
    vec_begins = np.array([0, 1, 0, 3, 5000, 0, 2])  # 5000: unaligned, all scalar
    vec_ends = np.array([0, 1, 0, 4095, 5000, 2048, 6])
    chunks = plan.chunk_table(sizes, vec_begins, vec_ends, chunk=1024, begins=None)
    assert chunks.dtype == np.int64 and chunks.shape[1] == plan.CHUNK_FIELDS
    for j, (n, vb, ve) in enumerate(zip(sizes, vec_begins, vec_ends)):
        mine = chunks[chunks[:, 0] == j]
        if n == 0:
            assert len(mine) == 0
            continue
        begin, vec_begin, vec_end, end = mine[:, 1], mine[:, 2], mine[:, 3], mine[:, 4]
        assert begin[0] == 0 and end[-1] == n and (begin[1:] == end[:-1]).all()  # a tiling
        assert (begin <= vec_begin).all() and (vec_begin <= vec_end).all() and (vec_end <= end).all()
        assert ((vec_end - vec_begin) % 4 == 0).all() and ((vec_begin - vb) % 4 == 0).all()
        assert (vec_end - vec_begin).sum() == ve - vb  # every vector element stays a vector
        assert (end - begin).max() <= 1024 + 4
    assert len(chunks[chunks[:, 0] == 4]) == 5  # an unaligned tensor is still cut up


def test_chunk_size_must_keep_vectors_whole():
    for bad in (0, 1000, 2**31):
        with pytest.raises(ValueError, match="multiple of 16"):
            plan.chunk_table([10], [0], [8], chunk=bad)


def test_multi_launch_config():
    assert plan.multi_launch_config(1, 132) == (1, 256)
    assert plan.multi_launch_config(100, 132) == (100, 256)
    assert plan.multi_launch_config(10**6, 132) == (4 * 132, 256)  # one wave; blocks loop


def test_multi_kernel_args_are_typed_as_the_kernel_parameters():
    """Two pointers, a long long, the plan's RuleArgs<T> (one NumPy array of size one), then the
    lr's and the AMP values' device addresses."""
    rule = Rule(momentum=0.9)
    table = np.array([[4096, 8192, 12288, 16384, 0, 0]], np.int64)
    for dtype, compute in ((F32, np.float32), (F64, np.float64), (F16, np.float32)):
        launch = plan.multi_plan(dtype, table, [100], rule, None, 132)
        args = plan.multi_kernel_args(4096, 3, 7, launch.rule_args, lr_device=64, amp_device=128)
        assert [type(a) for a in args] == [np.uint64, np.uint64, np.int64, np.ndarray, np.uint64,
                                           np.uint64]
        assert args[:3] == (4096, 4096 + 3 * 7 * 8, 7)  # the chunk table follows the tensor table
        assert args[4:] == (64, 128)
        assert plan.multi_kernel_args(4096, 3, 7, launch.rule_args)[4:] == (0, 0)
        assert args[3].dtype == rule_args.DTYPES[np.dtype(compute)] and args[3].shape == (1,)
        scalars = rule.scalars(np.dtype(compute), None)
        assert args[3]["k"].tobytes() == np.array(scalars, compute).tobytes()
        assert tuple(args[3]["m"][0]) == rule.modes()


def test_multi_plan_layout_and_memo():
    table = np.array([[4096, 8192, 12288, 0, 0, 0], [16384, 20480, 24576, 0, 0, 0]], np.int64)
    sizes = np.array([5000, 0], np.int64)
    launch = plan.multi_plan(F32, table, sizes, Rule(), 1, 132)
    assert launch.name == plan.multi_kernel_name(F32, False, False)
    tensors = launch.descriptors[:14].reshape(2, plan.TENSOR_FIELDS)
    assert (tensors[:, :6] == table).all() and (tensors[:, 6] == 0).all()  # counter offsets: 0
    assert launch.n_tensors == 2 and launch.n_chunks == 1 and launch.grid == 1
    assert list(launch.descriptors[14:]) == [0, 0, 0, 5000, 5000]
    assert plan.multi_plan(F32, table.copy(), sizes.copy(), Rule(), 2, 132) is launch  # no bias
    biased = Rule(bias_correction=True)
    first, second = (plan.multi_plan(F32, table, sizes, biased, t, 132) for t in (1, 2))
    assert first.rule_args.tobytes() != second.rule_args.tobytes()  # the step's scalars
    assert first.descriptors is second.descriptors
    assert plan.multi_plan(F32, table, np.zeros(2, np.int64), Rule(), 1, 132) is None


def test_multi_layout_is_the_plan_less_its_rule():
    """What backend.prepare_many uploads once: multi_plan's launch but the packed rule, for the
    instance named by the state buffers given, over the same (memoized) tables."""
    table = np.array([[4096, 8192, 12288, 16384, 0, 0], [16384, 20480, 24576, 28672, 0, 0]],
                     np.int64)
    sizes = np.array([70_000, 3], np.int64)
    rule = Rule(momentum=0.9, bias_correction=True)
    for dtype in cases.PARAM_DTYPES:
        layout = plan.multi_layout(dtype, table, sizes, True, False, 132)
        launch = plan.multi_plan(dtype, table, sizes, rule, 4, 132)
        assert tuple(launch) == (*layout, launch.rule_args)
        assert launch.descriptors is layout.descriptors and layout.n_chunks == 3
        assert launch.rule_args.tobytes() == rule_args.for_rule(rule, 4, dtype).tobytes()
    assert plan.multi_layout(F32, table, sizes, 0, 1, 132).name == \
        plan.multi_kernel_name(F32, False, True)
    assert plan.multi_layout(F32, table, [0, 0], True, False, 132) is None


def test_table_key_is_the_int64_bytes():
    table = [[4096, 8192, 12288, 0, 0]]
    assert plan.table_key(table, [7]) == (np.array(table, np.int64).tobytes(),
                                          np.int64(7).tobytes())
    assert plan.table_key(np.array(table, np.int32), None) == plan.table_key(table, None)


# ---------------------------------------------------------------------------------------------
# What the launches take of a step's Extras (mixed precision, issue 13).

SR = Extras(grad_scale=512.0, clip=0.5, rounding=rounding.STOCHASTIC, key=2**64 - 3, offsets=7)


def test_extras_reach_the_rule_args_and_the_arguments():
    """Loss scale and clip factor as Rule.scalars casts them, the rounding and key in RuleArgs,
    the counter offset and the AMP values' address as arguments."""
    addresses = (4096, 8192, 12288, None, None, 16384)
    for dtype in (F16, cases.bfloat16 and np.dtype(cases.bfloat16)):
        if dtype is None:
            continue
        args = plan.plan(dtype, addresses, 100, Rule(), None, 1,
                         extras=SR._replace(device_amp=64)).args
        packed = args[11]
        assert (int(packed["rounding"][0]), int(packed["key"][0])) == (rounding.STOCHASTIC,
                                                                      2**64 - 3)
        assert (args[10], args[13]) == (7, 64)
        # The kernel reads the grad scale and clip factor at device_amp: the host's are moot.
        assert packed["k"][0, R.GRAD_UNSCALE] == packed["k"][0, R.CLIP] == 1
        k = plan.plan(dtype, addresses, 100, Rule(), None, 1, extras=SR).args[11]["k"][0]
        assert (k[R.GRAD_UNSCALE], k[R.CLIP]) == (np.float32(1 / 512), np.float32(0.5))


def test_extras_a_launch_ignores_leave_the_plan_as_it_was():
    """Nearest rounding, and float or double params, ignore the key and offsets: one plan."""
    addresses = (4096, 8192, 12288, None, None, None)
    plain = plan.plan(F16, addresses, 100, Rule(), None, 1)
    nearest = SR._replace(rounding=rounding.NEAREST, grad_scale=1.0, clip=1.0)
    assert plan.plan(F16, addresses, 100, Rule(), None, 1, extras=nearest) is plain
    assert plan.plan(F32, addresses, 100, Rule(), None, 1, extras=SR) is plan.plan(
        F32, addresses, 100, Rule(), None, 1, extras=SR._replace(key=1, offsets=9))
    assert rule_args.effective(SR, F32).rounding == rounding.NEAREST
    assert rule_args.effective(SR, F16) == SR


def test_counter_offsets_one_per_tensor():
    assert rule_args.counter_offsets(0, 3).tolist() == [0, 0, 0]
    assert rule_args.counter_offsets((1, 2**64 - 1), 2).view(np.uint64).tolist() == [1, 2**64 - 1]
    assert rule_args.counter_offsets(5, 1).tolist() == [5]
    with pytest.raises(ValueError, match="one per tensor"):
        rule_args.counter_offsets(5, 2)
    with pytest.raises(ValueError, match="2 counter offsets for 3"):
        rule_args.counter_offsets((1, 2), 3)


def test_multi_plan_puts_each_tensors_counter_offset_in_its_row():
    table = np.array([[4096, 8192, 12288, 0, 0, 16384], [20480, 24576, 28672, 0, 0, 0]],
                     np.int64)
    offsets = (rounding.offset_of(0), rounding.offset_of(1, 5))
    launch = plan.multi_plan(F16, table, [100, 3], Rule(), None, 1,
                             extras=SR._replace(offsets=offsets))
    tensors = launch.descriptors[:2 * plan.TENSOR_FIELDS].reshape(2, plan.TENSOR_FIELDS)
    assert (tensors[:, :6] == table).all() and tuple(tensors[:, 6]) == offsets
    assert int(launch.rule_args["key"][0]) == SR.key
    layout = plan.multi_layout(F16, table, [100, 3], False, False, 1, offsets=offsets)
    assert layout.descriptors is launch.descriptors
