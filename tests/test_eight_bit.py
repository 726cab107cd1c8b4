"""8-bit state (fastrms.eight_bit): the Numba step equals the NumPy reference bit for bit, the
centered clamp, non-finite values, accuracy against the float32-state step, and bad input."""

import numpy as np
import pytest

import cases
from fastrms import eight_bit, quant8
from fastrms._buffers import Extras
from fastrms.eight_bit import Codes, apply8, quantised
from fastrms.rounding import NEAREST, STOCHASTIC, step_key

STEPS = 4
HALF_DTYPES = [d for d in cases.PARAM_DTYPES if d.itemsize == 2]


def state8(rng, rule, n, shape=None):
    """8-bit state coded from float32 values in the ranges ``cases.state`` uses."""
    shape = shape or (n,)
    values = {"square_avg": rng.uniform(0, 2, n),
              "momentum_buffer": rng.uniform(-1, 1, n) if rule.momentum else None,
              "grad_avg": rng.uniform(-0.5, 0.5, n) if rule.centered else None}
    return [None if v is None else quantised(v.astype(np.float32).reshape(shape), name)
            for name, v in values.items()]


def copied(state):
    return [None if c is None else Codes(c.codes.copy(), c.scales.copy()) for c in state]


def assert_same_state(got, want, err_msg):
    for name, a, b in zip(eight_bit.KINDS, got, want):
        if a is not None:
            np.testing.assert_array_equal(a.codes, b.codes, err_msg=f"{err_msg} {name}.codes")
            cases.assert_same(a.scales, b.scales, err_msg=f"{err_msg} {name}.scales")


def run_both(rule, param, state, rng, steps=STEPS, master=None, rounding=NEAREST, threads=None):
    """``steps`` steps on the reference and on Numba from the same start; asserts equal bits."""
    ref_p, got_p = param.copy(), param.copy()
    ref_s, got_s = copied(state), copied(state)
    ref_w, got_w = (None, None) if master is None else (master.copy(), master.copy())
    for t in range(1, steps + 1):
        g = cases.grad(rng, param.dtype, param.size).reshape(param.shape)
        extras = Extras(rounding=rounding, key=int(step_key(7, t)), offsets=3)
        apply8(rule, ref_p, g, *ref_s, step=t, backend="numpy", master_param=ref_w, extras=extras)
        apply8(rule, got_p, g, *got_s, step=t, backend="numba", master_param=got_w,
               extras=extras, threads=threads)
    cases.assert_same(got_p, ref_p, err_msg="param")
    assert_same_state(got_s, ref_s, "state")
    if master is not None:
        cases.assert_same(got_w, ref_w, err_msg="master")
    return ref_p, ref_s


def test_numba_equals_the_reference_for_every_pair_of_mode_values():
    """A covering array of strength 2 (each pair of mode values in some rule), at sizes around
    the block (each mode tuple compiles a loop of its own: all 384 would take many minutes)."""
    rng = np.random.default_rng(1)
    for desc, rule in cases.covering_modes(2):
        for n in (1, 255, 256, 257, 4097):
            param = rng.uniform(-2, 2, n).astype(np.float32)
            try:
                run_both(rule, param, state8(rng, rule, n), rng)
            except AssertionError as exc:
                raise AssertionError(f"n={n} {desc}: {exc}") from None


@pytest.mark.parametrize("threads", [1, 2])
def test_numba_equals_the_reference_in_parallel_at_every_rule(threads):
    n = (1 << 16) + 3  # past the parallel threshold, a partial last block
    rng = np.random.default_rng(5)
    for desc, rule in cases.some_modes():
        param = rng.uniform(-2, 2, n).astype(np.float32)
        run_both(rule, param, state8(rng, rule, n), rng, threads=threads)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("master", [False, True])
@pytest.mark.parametrize("rounding", [NEAREST, STOCHASTIC])
def test_half_params_with_and_without_master_weights(dtype, master, rounding):
    rng = np.random.default_rng(3)
    n = 3000
    for desc, rule in cases.some_modes()[:3]:
        param = rng.uniform(-2, 2, n).astype(dtype)
        w = param.astype(np.float32) if master else None
        run_both(rule, param, state8(rng, rule, n), rng, master=w, rounding=rounding)


def test_params_of_any_shape_keep_codes_of_their_shape():
    rng = np.random.default_rng(4)
    rule = cases.some_modes()[2][1]
    param = rng.uniform(-2, 2, (33, 17)).astype(np.float32)
    run_both(rule, param, state8(rng, rule, param.size, param.shape), rng)


def test_a_non_finite_value_poisons_its_block_only():
    """A NaN grad makes its element's new state NaN, so its block's scale is NaN and the whole
    block decodes to NaN at the next step (every backend alike); other blocks are untouched."""
    rng = np.random.default_rng(6)
    rule = cases.rule_of(cases.NAMED_CASES[5])  # momentum
    n = 4 * quant8.BLOCK
    param = rng.uniform(-2, 2, n).astype(np.float32)
    state = state8(rng, rule, n)
    g = cases.grad(rng, np.float32, n)
    g[300], g[700] = np.nan, np.inf  # blocks 1 and 2
    for backend in ("numpy", "numba"):
        p, s = param.copy(), copied(state)
        apply8(rule, p, g, *s, step=1, backend=backend)
        assert np.isnan(s[0].scales[1]) and np.isinf(s[0].scales[2])
        assert np.all(np.isfinite(s[0].scales[[0, 3]]))
        apply8(rule, p, np.ones(n, np.float32), *s, step=2, backend=backend)
        bad = ~np.isfinite(p)
        assert bad[256:768].all() and not bad[:256].any() and not bad[768:].any()
        if backend == "numpy":
            want = p
        else:
            cases.assert_same(p, want, err_msg="params after a NaN")


def test_the_centered_clamp_keeps_rounding_from_making_nan():
    """Centered state decoded as v̂ = 0, grads within 10⁻⁵ of â: the new variance,
    α(1−α)(g − â)², is far below float32's rounding of s − a², which makes it negative for many
    elements; with ε outside the root (torch's) the rule without the clamp gives NaN there, the
    8-bit step does not."""
    from fastrms import reference
    rule = cases.rule_of(cases.Case("c", dict(centered=True, eps_in_sqrt=False, eps=1e-8)))
    rng = np.random.default_rng(8)
    n = 1 << 14
    a = rng.uniform(0.01, 1, n).astype(np.float32)
    state = [quantised(np.zeros(n, np.float32), "square_avg"), None, quantised(a, "grad_avg")]
    a = eight_bit.decoded(state[2], "grad_avg")
    g = (a * (1 + rng.uniform(-1e-5, 1e-5, n))).astype(np.float32)
    with np.errstate(invalid="ignore"):  # the NaN this test is about
        unclamped = reference.evaluate(rule, np.zeros(n, np.float32), g, a * a, None, a)[0]
    assert np.isnan(unclamped).mean() > 0.01  # s − a² < 0 by rounding, then √ of it
    for backend in ("numpy", "numba"):
        p = np.zeros(n, np.float32)
        apply8(rule, p, g, *copied(state), step=1, backend=backend)
        assert np.all(np.isfinite(p)), backend


VARIANTS = {"plain": {}, "momentum": dict(momentum=0.9), "centered": dict(centered=True),
            "momentum+centered": dict(momentum=0.9, centered=True)}


# Mean |Δp| per step when each step starts from the float32 run's state coded to 8 bits (the
# coding error itself; bench/eight_bit_maps.py's method), 2^16 values, 20 steps, measured:
# 7.6e-5, 1.5e-4, 7.9e-5, 1.7e-4 (docs/eight-bit.md); the bounds leave a quarter more.
STRICT = {"plain": 1e-4, "momentum": 2e-4, "centered": 1e-4, "momentum+centered": 2.2e-4}


def _bitsandbytes_setting(variant, bits):
    import fastrms
    return fastrms.RMSprop(lr=0.01, alpha=0.9, state_bits=bits, threshold=0, **VARIANTS[variant])


@pytest.mark.parametrize("variant", VARIANTS)
def test_from_state_re_synced_to_the_float32_run_the_step_is_the_float32_step(variant):
    """bitsandbytes' measurement (tests/test_optim.py there: lr 0.01, alpha 0.9, params
    0.1·randn, grads 0.01·randn): each step the float32 state is re-synced to the decoded 8-bit
    state and the params made equal. Its bound is mean |Δp| < 6e-5; here Δp is exactly 0, since
    the 8-bit step updates the param from the new state before coding it."""
    import fastrms
    rng = np.random.default_rng(0)
    n = 1 << 16
    opt32, opt8 = _bitsandbytes_setting(variant, 32), _bitsandbytes_setting(variant, 8)
    p8 = (0.1 * rng.standard_normal(n)).astype(np.float32)
    s8 = opt8.init(p8)
    for _ in range(20):
        s32 = fastrms.RMSpropState.from_state_dict(eight_bit.float32_state(s8.state_dict()))
        p32 = p8.copy()
        g = (0.01 * rng.standard_normal(n)).astype(np.float32)
        opt32.step(p32, g, s32)
        opt8.step(p8, g, s8)
        cases.assert_same(p8, p32, err_msg=variant)
        new = eight_bit.float32_state(s8.state_dict())["square_avg"]  # coding error of s
        # measured 2.7–2.9% (the dithered rounding; 2.0–2.2% to nearest)
        assert np.abs(new - s32.square_avg).mean() / np.abs(s32.square_avg).mean() < 0.03


@pytest.mark.parametrize("variant", VARIANTS)
def test_from_the_float32_state_coded_each_step_the_error_is_the_codings(variant):
    import fastrms
    rng = np.random.default_rng(0)
    n = 1 << 16
    opt32, opt8 = _bitsandbytes_setting(variant, 32), _bitsandbytes_setting(variant, 8)
    p32 = (0.1 * rng.standard_normal(n)).astype(np.float32)
    s32 = opt32.init(p32)
    errors = []
    for _ in range(20):
        s8 = fastrms.RMSpropState.from_state_dict(eight_bit.eight_bit_state(s32.state_dict()))
        p8 = p32.copy()
        g = (0.01 * rng.standard_normal(n)).astype(np.float32)
        opt32.step(p32, g, s32)
        opt8.step(p8, g, s8)
        errors.append(np.abs(p8.astype(np.float64) - p32).mean())
    assert 0 < np.mean(errors) < STRICT[variant]


def test_bad_input_names_the_argument_and_writes_nothing():
    from fastrms._spec import Rule
    rng = np.random.default_rng(9)
    rule = Rule(momentum=0.9)
    n = 600
    param = rng.uniform(-1, 1, n).astype(np.float32)
    grad = cases.grad(rng, np.float32, n)
    good = state8(rng, rule, n)
    bad = {
        "square_avg.codes has dtype": [Codes(good[0].codes.astype(np.int8), good[0].scales),
                                       good[1], None],
        "momentum_buffer.codes has shape": [good[0], Codes(good[1].codes[:-1],
                                                           good[1].scales), None],
        "square_avg.scales has shape": [Codes(good[0].codes, good[0].scales[:-1]), good[1],
                                        None],
        "must be a fastrms.eight_bit.Codes": [np.zeros(n, np.float32), good[1], None],
        "momentum_buffer": [good[0], None, None],
        "overlap": [good[0], Codes(good[1].codes, good[0].scales), None],
    }
    for message, state in bad.items():
        before = [param.copy()] + [None if c is None or not isinstance(c, Codes) else
                                   (c.codes.copy(), c.scales.copy()) for c in state]
        with pytest.raises((TypeError, ValueError), match=message):
            apply8(rule, param, grad, *state, backend="numba")
        np.testing.assert_array_equal(param, before[0])
        for c, saved in zip(state, before[1:]):
            if saved is not None:
                np.testing.assert_array_equal(c.codes, saved[0])
                np.testing.assert_array_equal(c.scales, saved[1])
    with pytest.raises(TypeError, match="param has dtype float64"):
        apply8(rule, param.astype(np.float64), grad.astype(np.float64), *good, backend="numba")
    read_only = Codes(good[0].codes.copy(), good[0].scales.copy())
    read_only.codes.flags.writeable = False
    with pytest.raises(ValueError, match="square_avg.codes is read-only"):
        apply8(rule, param, grad, read_only, good[1], backend="numba")


@pytest.mark.parametrize("bits, threshold, message", [
    (16, 4096, "state_bits must be 8 or 32"), (True, 4096, "state_bits must be 8 or 32"),
    (8, -1, "threshold must be an integer >= 0"), (8, 1.5, "threshold must be an integer")])
def test_bad_state_bits_and_thresholds_are_refused(bits, threshold, message):
    import fastrms
    with pytest.raises(ValueError, match=message):
        fastrms.RMSprop(state_bits=bits, threshold=threshold)


def test_state_dicts_convert_both_ways_and_keep_codes():
    import fastrms
    rng = np.random.default_rng(10)
    opt = fastrms.RMSprop(momentum=0.9, centered=True, state_bits=8, threshold=0)
    p = rng.uniform(-1, 1, 1000).astype(np.float32)
    st = opt.init(p)
    for _ in range(3):
        opt.step(p, cases.grad(rng, np.float32, 1000), st)
    d = st.state_dict()
    assert {"square_avg_codes", "grad_avg_scales"} <= set(d) and "square_avg" not in d
    back = fastrms.RMSpropState.from_state_dict(d)
    assert_same_state([back.square_avg, back.momentum_buffer, back.grad_avg],
                      [st.square_avg, st.momentum_buffer, st.grad_avg], "round trip")
    floats = eight_bit.float32_state(d)
    recoded = eight_bit.eight_bit_state(floats)  # decoded values code back to the same codes
    for key in eight_bit.CODE_KEYS:
        np.testing.assert_array_equal(recoded[key], d[key], err_msg=key)
    assert floats["square_avg"].dtype == np.float32 and "grad_avg_codes" not in floats


def test_eight_bit_state_is_at_least_3_7_times_smaller():
    import fastrms
    p = np.zeros(1 << 16, np.float32)
    for kw in ({}, dict(momentum=0.9, centered=True)):
        full = fastrms.RMSprop(**kw).init(p)
        small = fastrms.RMSprop(state_bits=8, **kw).init(p)
        size = sum(a.nbytes for a in (full.square_avg, full.momentum_buffer, full.grad_avg)
                   if a is not None)
        size8 = sum(c.codes.nbytes + c.scales.nbytes for c in
                    (small.square_avg, small.momentum_buffer, small.grad_avg) if c is not None)
        assert size / size8 >= 3.7
    assert isinstance(fastrms.RMSprop(state_bits=8).init(np.zeros(4095, np.float32)).square_avg,
                      np.ndarray)  # under the threshold: float32


@pytest.mark.parametrize("kind", [quant8.UNSIGNED, quant8.SIGNED])
def test_the_numba_element_operations_equal_quant8s(kind):
    """The kernel's decode, inverse and coding (LLVM IR, fastrms.cpu.eight_bit) against
    fastrms.quant8 on every code and on test_quant8's values (every midpoint and its float32
    neighbours among them), scaled by inverses of normal, tiny, zero, inf and NaN scales, and on
    NaN, inf and values past 1."""
    import numba
    from test_quant8 import values
    from fastrms.cpu import eight_bit as kernel

    code = kernel.code_unsigned if kind == quant8.UNSIGNED else kernel.code_signed
    decode = kernel.decode_unsigned if kind == quant8.UNSIGNED else kernel.decode_signed

    @numba.njit(error_model="numpy")
    def run(v, scales, codes, out, decoded, inverses):
        for j in range(scales.size):
            inverses[j] = kernel.inverse_of(scales[j])
            for i in range(v.size):
                out[j, i] = code(v[i], inverses[j])
        for c in range(codes.size):
            decoded[c] = decode(codes[c])

    v = np.concatenate([values(kind, n=1 << 16), np.float32([np.nan, np.inf, -np.inf, 1.5, -3])])
    scales = np.float32([1, 0.5, 3e-39, 0, np.inf, np.nan, 2.0 ** -126, 7.25])
    codes = np.arange(256, dtype=np.uint8)
    out = np.empty((scales.size, v.size), np.uint8)
    decoded, inverses = np.empty(256, np.float32), np.empty(scales.size, np.float32)
    run(v, scales, codes, out, decoded, inverses)
    want_inverses = quant8.inverse_of(scales)
    cases.assert_same(inverses, want_inverses, err_msg="inverse_of")
    with np.errstate(invalid="ignore", over="ignore"):
        want = [quant8.STEP_CODERS[kind](v, inverse).astype(np.uint8)
                for inverse in want_inverses]
    np.testing.assert_array_equal(out, np.stack(want))
    cases.assert_same(decoded, quant8.TABLES[kind], err_msg="decode")
