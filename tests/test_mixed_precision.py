"""Mixed precision on fastrms's own path (docs/mixed-precision.md): half params through their bit
patterns, master weights, stochastic rounding, loss scale and clip factor, inf skipping; the
Numba loops against the NumPy reference bit for bit, and the errors."""

import numpy as np
import pytest

import fastrms
from fastrms import reference, rounding
from fastrms._spec import Rule, clip_factor
from fastrms.rounding import offset_of

from cases import assert_same, bfloat16, grad, some_modes, state

HALVES = [np.dtype(np.float16)] + ([np.dtype(bfloat16)] if bfloat16 is not None else [])
RULES = [some_modes()[0], some_modes()[2]]  # plain; centered, momentum, wd, bias-corrected
SIZES = (1, 7, 4097, 1 << 15)  # 2¹⁵: the parallel loop, two blocks


def _run(backend, rule, buffers, grads, master=None, **extras):
    x, s, b, a = (None if v is None else v.copy() for v in buffers)
    w = None if master is None else master.copy()
    for t, g in enumerate(grads, start=1):
        fastrms.rmsprop_update(x, g, s, **_kwargs(rule), momentum_buffer=b, grad_avg=a,
                               step=t, master_param=w, backend=backend, **extras)
    return x, s, b, a, w


def _kwargs(rule):
    return dict(lr=rule.lr, alpha=rule.alpha, eps=rule.eps, eps_in_sqrt=rule.eps_in_sqrt,
                momentum=rule.momentum, lr_in_momentum=rule.lr_in_momentum,
                nesterov=rule.nesterov, centered=rule.centered, weight_decay=rule.weight_decay,
                decoupled_weight_decay=rule.decoupled_weight_decay,
                bias_correction=rule.bias_correction, maximize=rule.maximize)


@pytest.mark.parametrize("dtype", HALVES, ids=str)
@pytest.mark.parametrize("master", [False, True], ids=["no-master", "master"])
@pytest.mark.parametrize("how", ["nearest", "stochastic"])
def test_numba_equals_reference(dtype, master, how):
    rng = np.random.default_rng(0)
    rules = RULES if how == "nearest" else RULES[1:]  # (its loops compile slowly: one rule)
    for (desc, rule), n in ((r, n) for r in rules for n in SIZES):
        buffers = state(rng, rule, dtype, n)
        grads = [grad(rng, dtype, n) * 64 for _ in range(3)]
        w = buffers[0].astype(np.float32) if master else None
        extras = dict(rounding=how, seed=11, offset=offset_of(2, 5), grad_scale=64.0, clip=0.75)
        want = _run("numpy", rule, buffers, grads, w, **extras)
        got = _run("numba", rule, buffers, grads, w, **extras)
        for name, a, b in zip(("param", "square_avg", "momentum", "grad_avg", "master"), got, want):
            if a is not None:
                assert_same(a, b, err_msg=f"{desc} n={n} {name}")


def test_master_equals_a_float32_run_on_the_widened_grads():
    rng = np.random.default_rng(0)
    rule = Rule(momentum=0.9, centered=True)
    x, s, b, a = state(rng, rule, bfloat16 or np.float16, 5000)
    master = x.astype(np.float32)
    grads = [grad(rng, x.dtype, 5000) for _ in range(3)]
    half = _run("numba", rule, (x, s, b, a), grads, master)
    wide = _run("numba", rule, (master, s, b, a), [g.astype(np.float32) for g in grads])
    assert_same(half[4], wide[0])  # the master is the float32 run
    assert_same(half[0], wide[0].astype(x.dtype))  # the param its nearest-even copy
    for got, want in zip(half[1:4], wide[1:4]):
        assert_same(got, want)


@pytest.mark.parametrize("fmt", [rounding.BFLOAT16, rounding.FLOAT16])
def test_stochastic_rounding_is_exactly_unbiased(fmt):
    """Over every value of the random bits that matter, the mean of the rounded values is x
    exactly (computed in float64): rounding up with probability = the fraction of the gap."""
    dropped = 16 if fmt == rounding.BFLOAT16 else 13
    r = (np.arange(1 << dropped, dtype=np.uint32) << np.uint32(32 - dropped))
    back = rounding.bf16_to_f32 if fmt == rounding.BFLOAT16 else rounding.f16_to_f32
    narrow = rounding.f32_to_bf16 if fmt == rounding.BFLOAT16 else rounding.f32_to_f16
    for value in (1.0 + 2.0 ** -12, -3.3, 1e-3, 0.1, 6e-5):
        bits = np.full(r.size, np.float32(value)).view(np.uint32)
        rounded = back(narrow(rounding.stochastic_f32(bits, r, fmt))).view(np.float32)
        assert np.unique(rounded).size <= 2
        assert rounded.astype(np.float64).mean() == np.float64(np.float32(value))


def test_stochastic_rounding_below_the_smallest_float16():
    """Below 2⁻²⁴ (float16's smallest subnormal) a value rounds to 0 or 2⁻²⁴ with the
    probability of its fraction, within the generator's 2⁻³² resolution."""
    counters = np.arange(1 << 18, dtype=np.uint64)
    r = rounding.random32(rounding.step_key(3, 1), counters)
    for value in (2.0 ** -26, 3e-8):
        bits = np.full(r.size, np.float32(value)).view(np.uint32)
        out = rounding.f16_to_f32(rounding.f32_to_f16(rounding.stochastic_f32(
            bits, r, rounding.FLOAT16))).view(np.float32)
        assert set(np.unique(out)) <= {0.0, np.float32(2.0 ** -24)}
        assert abs(out.astype(np.float64).mean() / value - 1) < 0.02


def test_bit_conversions_match_numpy_and_ml_dtypes():
    rng = np.random.default_rng(0)
    bits = np.concatenate([rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(np.uint32),
                           np.array([0, 0x80000000, 0x7F800000, 0x477FF000, 0x33000001],
                                    np.uint32)])
    values = bits.view(np.float32)
    finite = ~np.isnan(values)
    with np.errstate(over="ignore", invalid="ignore"):
        f16 = values.astype(np.float16).view(np.uint16)
    assert np.array_equal(rounding.f32_to_f16(bits)[finite], f16[finite])
    halves = np.arange(1 << 16, dtype=np.uint32)
    wide = halves.astype(np.uint16).view(np.float16).astype(np.float32)
    ours = rounding.f16_to_f32(halves).view(np.float32)
    assert np.array_equal(ours[~np.isnan(wide)].view(np.uint32), wide[~np.isnan(wide)].view(np.uint32))
    assert np.isnan(ours[np.isnan(wide)]).all()
    if bfloat16 is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            bf = values.astype(bfloat16).view(np.uint16)
        assert np.array_equal(rounding.f32_to_bf16(bits)[finite], bf[finite])


def test_found_inf_and_errors_write_nothing():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(100).astype(np.float16)
    g, s, w = x.copy(), np.ones(100, np.float32), x.astype(np.float32)
    before = [v.copy() for v in (x, s, w)]

    def unchanged():
        return all(np.array_equal(a.view(np.uint8), b.view(np.uint8))
                   for a, b in zip((x, s, w), before))

    fastrms.rmsprop_update(x, g, s, master_param=w, found_inf=True)
    fastrms.rmsprop_update(x, g, s, master_param=w, found_inf=np.float32(1.0))
    assert unchanged()
    bad = [
        (TypeError, "master_param has dtype float64", dict(master_param=w.astype(np.float64))),
        (ValueError, "master_param has shape", dict(master_param=w[:50])),
        (ValueError, "grad_scale must be finite and > 0", dict(grad_scale=-1.0)),
        (ValueError, "grad_scale must be finite and > 0", dict(grad_scale=float("inf"))),
        (ValueError, "rounding must be", dict(rounding="up")),
        (ValueError, "needs step", dict(rounding="stochastic")),
        (ValueError, "seed", dict(rounding="stochastic", step=1, seed=-2)),
    ]
    for error, message, kwargs in bad:
        with pytest.raises(error, match=message):
            fastrms.rmsprop_update(x, g, s, **kwargs)
        assert unchanged(), message
    with pytest.raises(TypeError, match="square_avg has dtype float16, expected float32"):
        fastrms.rmsprop_update(x, g, s.astype(np.float16))
    f32 = x.astype(np.float32)
    with pytest.raises(TypeError, match="master weights are for half-precision"):
        fastrms.rmsprop_update(f32, f32.copy(), s, master_param=w)
    with pytest.raises(TypeError, match=r"master_param\[0\]: master weights"):
        fastrms.rmsprop_update([f32], [f32.copy()], [s], master_param=[w])
    assert unchanged()


def test_lists_mix_dtypes_and_masters():
    """One list call: bfloat16/float16 params with masters, float32 ones without (None), each
    tensor's stochastic counters from its position, as separate calls with those offsets."""
    rng = np.random.default_rng(2)
    dtypes = [HALVES[-1], np.dtype(np.float32), HALVES[0]]
    xs = [rng.standard_normal(n).astype(d) for n, d in zip((300, 50, 4097), dtypes)]
    gs = [rng.standard_normal(x.size).astype(x.dtype) for x in xs]
    ws = [x.astype(np.float32) if x.itemsize == 2 else None for x in xs]

    def fresh():
        return [x.copy() for x in xs], [np.ones(x.size, np.float32) if x.itemsize == 2 else
                                         np.ones(x.size, x.dtype) for x in xs], \
            [None if w is None else w.copy() for w in ws]

    X, S, W = fresh()
    fastrms.rmsprop_update(X, gs, S, master_param=W, rounding="stochastic", seed=4, step=3)
    Y, T, V = fresh()
    for j in range(3):
        fastrms.rmsprop_update(Y[j], gs[j], T[j], master_param=V[j], rounding="stochastic",
                               seed=4, step=3, offset=offset_of(j))
    for a, b in zip(X + S, Y + T):
        assert_same(a, b)


def test_clip_factor_is_torchs():
    """min(max_norm / (norm + 1e-6), 1) in float32, as clip_grad_norm_ computes it."""
    assert clip_factor(1.0, 4.0, np.float32) == np.float32(1.0) / (np.float32(4.0) + np.float32(1e-6))
    assert clip_factor(10.0, 1.0, np.float32) == 1
    k = Rule().scalars(np.float32, None, grad_scale=3.0, clip=0.5)
    assert k[-2] == np.float32(1 / 3.0) and k[-1] == np.float32(0.5)
    x, s = np.ones(4, np.float32), np.ones(4, np.float32)
    got = reference.evaluate(Rule(), x, np.full(4, 6.0, np.float32), s,
                             extras=fastrms._buffers.Extras(grad_scale=3.0, clip=0.5))[0]
    want = reference.evaluate(Rule(), x, np.full(4, np.float32(6.0) * np.float32(1 / 3.0)
                                                 * np.float32(0.5)), s)[0]
    assert np.array_equal(got, want)
