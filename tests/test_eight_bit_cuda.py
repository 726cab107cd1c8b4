"""rmsprop.cu's 8-bit kernel, run on the CPU (tests/native: one lane per block of codes), equals
the NumPy reference of fastrms.eight_bit bit for bit, launched as the cupy backend plans it
(fastrms.cuda.plan8) with a small grid so that the grid-stride loop goes round many times. The
GPU build (a warp per block, its largest magnitude reduced by shuffles) is compiled by
test_cuda_build; only a GPU runs it."""

import numpy as np
import pytest

import cases
from fastrms import eight_bit
from fastrms._buffers import Extras
from fastrms.cuda import plan, plan8
from fastrms.eight_bit import apply8
from fastrms.rounding import NEAREST, STOCHASTIC, step_key
from test_eight_bit import assert_same_state, copied, state8

DTYPES = [d for d in cases.PARAM_DTYPES if d in plan8.DTYPES]


def compare(host_kernels, rule, param, state, rng, master=None, extras=Extras(), steps=3):
    ref_p, emu_p = param.copy(), param.copy()
    ref_s, emu_s = copied(state), copied(state)
    ref_w, emu_w = (None, None) if master is None else (master.copy(), master.copy())
    for t in range(1, steps + 1):
        g = cases.grad(rng, param.dtype, param.size).reshape(param.shape)
        step_extras = extras._replace(key=int(step_key(3, t))) if extras.rounding else extras
        apply8(rule, ref_p, g, *ref_s, step=t, backend="numpy", master_param=ref_w,
               extras=step_extras)
        host_kernels.step8(rule, t, emu_p, g, *emu_s, master_param=emu_w, extras=step_extras)
    cases.assert_same(emu_p, ref_p, err_msg="param")
    assert_same_state(emu_s, ref_s, "state")
    if master is not None:
        cases.assert_same(emu_w, ref_w, err_msg="master")


def test_every_pair_of_mode_values_at_sizes_around_the_block(host_kernels):
    rng = np.random.default_rng(0)
    for desc, rule in cases.covering_modes(2):
        for n in (1, 255, 256, 257, 4097):
            param = rng.uniform(-2, 2, n).astype(np.float32)
            try:
                compare(host_kernels, rule, param, state8(rng, rule, n), rng)
            except AssertionError as exc:
                raise AssertionError(f"n={n} {desc}: {exc}") from None


# Masters and stochastic rounding are for half params.
SETTINGS = [(d, False, NEAREST) for d in DTYPES] + [
    (d, master, rounding) for d in DTYPES if d.itemsize == 2
    for master, rounding in ((True, NEAREST), (False, STOCHASTIC), (True, STOCHASTIC))]


@pytest.mark.parametrize("dtype, master, rounding", SETTINGS, ids=str)
def test_params_of_each_dtype_with_masters_and_rounding(host_kernels, dtype, master, rounding):
    rng = np.random.default_rng(1)
    n = 5 * 256 + 7
    for desc, rule in cases.some_modes():
        param = rng.uniform(-2, 2, n).astype(dtype)
        w = param.astype(np.float32) if master else None
        compare(host_kernels, rule, param, state8(rng, rule, n), rng, master=w,
                extras=Extras(rounding=rounding, offsets=11))


def test_non_finite_values_and_a_large_buffer(host_kernels):
    rng = np.random.default_rng(2)
    rule = cases.some_modes()[2][1]
    n = (1 << 16) + 3
    param = rng.uniform(-2, 2, n).astype(np.float32)
    state = state8(rng, rule, n)
    state[0].scales[7] = np.nan  # a poisoned block, and a block of tiny values
    state[0].scales[9] = 1e-39
    compare(host_kernels, rule, param, state, rng)


def test_amp_values_from_memory_skip_or_scale(host_kernels):
    """found_inf set: nothing written; else the grad scale and clip factor read there."""
    rng = np.random.default_rng(3)
    rule = cases.some_modes()[1][1]
    n = 1000
    param = rng.uniform(-2, 2, n).astype(np.float32)
    state = state8(rng, rule, n)
    g = cases.grad(rng, np.float32, n)
    amp = np.array([1.0, 4.0, 0.5], np.float32)
    p, s = param.copy(), copied(state)
    host_kernels.step8(rule, 1, p, g, *s, extras=Extras(device_amp=amp.ctypes.data))
    np.testing.assert_array_equal(p, param)
    assert_same_state(s, state, "skipped")
    amp[0] = 0.0
    host_kernels.step8(rule, 1, p, g, *s, extras=Extras(device_amp=amp.ctypes.data))
    ref_p, ref_s = param.copy(), copied(state)
    apply8(rule, ref_p, g, *ref_s, step=1, backend="numpy",
           extras=Extras(grad_scale=4.0, clip=0.5))
    cases.assert_same(p, ref_p, err_msg="param")
    assert_same_state(s, ref_s, "state")


def test_the_plan_names_the_warp_instance_and_strides_over_blocks():
    rule = cases.some_modes()[2][1]  # momentum and centered
    assert plan8.kernel_name(np.float32, True, True) == \
        "fastrms::rmsprop8_kernel<float, true, true, 32>"
    assert plan8.launch_config(1, 132) == (1, plan.BLOCK)
    assert plan8.launch_config(10 ** 9, 132) == (plan.BLOCKS_PER_SM * 132, plan.BLOCK)
    assert plan8.launch_config(8 * 256 * 5, 132) == (5, plan.BLOCK)  # 8 blocks of codes each
    launch = plan8.plan8(np.float32, [4096] * 8 + [0], 1000, rule, 1, 132, Extras())
    assert launch.name == plan8.kernel_name(np.float32, rule.momentum != 0, rule.centered)
    assert int(launch.args[9]) == 1000 and launch.args[11]["m"][0][-1] == 1  # the clamp
    with pytest.raises(ValueError, match="9 addresses"):
        plan8.plan8(np.float32, [0] * 6, 1, rule, 1, 1, Extras())


def test_codes_the_reference_makes_decode_as_the_kernel_decodes(host_kernels):
    """The kernel decodes by arithmetic, the reference through quant8.TABLES: every code of every
    buffer, at three scales, in one step (lr 0, alpha 1: the state values pass through the rule
    all but unchanged) gives the same bits."""
    from fastrms._spec import Rule
    rule = Rule(lr=0.0, alpha=1.0, eps=1.0, momentum=0.5, centered=True)
    n = 256 * 3
    codes = np.tile(np.arange(256, dtype=np.uint8), 3)
    state = [eight_bit.Codes(codes.copy(), np.array([1.0, 0.5, 2.0 ** -20], np.float32))
             for _ in range(3)]
    rng = np.random.default_rng(4)
    compare(host_kernels, rule, np.zeros(n, np.float32), state, rng, steps=1)
