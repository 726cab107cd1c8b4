"""The one table of test cases, the test data, and the one equality assertion of the backend tests
(NumPy reference, Numba, host-emulated CUDA, GPU), as torch's ``OptimizerInfo`` is one database.

``NAMED_CASES``: a dozen readable option sets, run at awkward sizes and offsets. ``every_mode()``:
every combination of the rule's six modes (384), for the exhaustive suites; ``some_modes()``: six
of them that together take every value of every mode.
"""

import itertools
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from fastrms import rounding
from fastrms._buffers import Extras
from fastrms._spec import Rule
from fastrms.dtypes import bfloat16_dtype

bfloat16 = None if bfloat16_dtype() is None else bfloat16_dtype().type

PARAM_DTYPES = [np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)]
if bfloat16 is not None:
    PARAM_DTYPES.append(np.dtype(bfloat16))


class Case(NamedTuple):
    desc: str
    kwargs: dict


NAMED_CASES = [
    Case("plain", {}),
    Case("eps_outside", dict(eps_in_sqrt=False, eps=1e-8)),
    Case("maximize", dict(maximize=True)),
    Case("weight_decay", dict(weight_decay=0.1)),
    Case("decoupled_wd", dict(weight_decay=0.1, decoupled_weight_decay=True)),
    Case("momentum", dict(momentum=0.9)),
    Case("momentum_lr_inside", dict(momentum=0.9, lr_in_momentum=True)),
    Case("nesterov", dict(momentum=0.9, lr_in_momentum=True, nesterov=True)),
    Case("centered", dict(centered=True)),
    Case("centered_lerp", dict(centered=True, centered_lerp=True, alpha=0.99)),
    Case("centered_lerp_small_alpha", dict(centered=True, centered_lerp=True, alpha=0.3)),
    Case("bias_correction", dict(bias_correction=True, centered=True)),
    Case("everything", dict(momentum=0.5, centered=True, weight_decay=0.01, maximize=True,
                            eps_in_sqrt=False)),
]


def rule_of(case):
    return replace(Rule(), **case.kwargs)


# (description, Rule fields): torch's lerp is two modes, chosen by alpha (weight 1 - alpha < 0.5).
_CENTERED = [("plain", {}), ("centered-ema", dict(centered=True)),
             ("centered-lerp-from-avg", dict(centered=True, centered_lerp=True, alpha=0.9)),
             ("centered-lerp-from-grad", dict(centered=True, centered_lerp=True, alpha=0.3))]
_MOMENTUM = [("", {}), ("momentum", dict(momentum=0.8)),
             ("momentum-lr-inside", dict(momentum=0.8, lr_in_momentum=True)),
             ("nesterov", dict(momentum=0.8, lr_in_momentum=True, nesterov=True))]
_WEIGHT_DECAY = [("", {}), ("wd", dict(weight_decay=0.05)),
                 ("wd-decoupled", dict(weight_decay=0.05, decoupled_weight_decay=True))]


def every_mode():
    """``[(description, Rule)]``: all 384 combinations of the six modes."""
    rules = []
    for (c, centered), (m, momentum), (w, wd), maximize, eps_in_sqrt, bias in itertools.product(
            _CENTERED, _MOMENTUM, _WEIGHT_DECAY, (False, True), (True, False), (False, True)):
        fields = dict(dict(lr=0.01, alpha=0.9, eps=1e-6), **centered, **momentum, **wd,
                      maximize=maximize, eps_in_sqrt=eps_in_sqrt, bias_correction=bias)
        words = [c, m, w, "maximize" if maximize else "", "" if eps_in_sqrt else "eps-outside",
                 "bias-corrected" if bias else ""]
        rules.append(("+".join(x for x in words if x), Rule(**fields)))
    return rules


def covering_modes(strength=3):
    """``[(description, Rule)]``: a subset of ``every_mode()`` in which every combination of the
    values of any ``strength`` of the six modes occurs (a covering array, built greedily and
    deterministically). Each stage of the rule reads at most three modes (v: centered and bias
    correction; x: momentum and the weight-decay form), so an error that shows in some
    combination shows in one of these. For suites where each mode combination is compiled
    separately (Numba), where all 384 cost minutes of compilation and prove no more.
    """
    rules = every_mode()
    keys = [r.modes() for _, r in rules]
    needed = {(cols, tuple(k[c] for c in cols))
              for k in keys for cols in itertools.combinations(range(len(keys[0])), strength)}
    chosen = []
    while needed:
        gains = [len({(cols, tuple(k[c] for c in cols))
                      for cols in itertools.combinations(range(len(k)), strength)} & needed)
                 for k in keys]
        best = max(range(len(keys)), key=gains.__getitem__)  # the first of the best: stable
        chosen.append(best)
        needed -= {(cols, tuple(keys[best][c] for c in cols))
                   for cols in itertools.combinations(range(len(keys[best])), strength)}
    return [rules[i] for i in sorted(chosen)]


SOME = ("plain", "plain+momentum+wd+maximize+eps-outside",
        "centered-ema+momentum-lr-inside+wd-decoupled+bias-corrected",
        "centered-lerp-from-avg+nesterov+eps-outside+bias-corrected",
        "centered-lerp-from-grad+wd+maximize", "plain+nesterov+wd-decoupled+bias-corrected")


def some_modes():
    """Six rules that take every value of every mode and have every set of state buffers (for
    the largest size, where all 384 would take too long)."""
    rules = dict(every_mode())
    return [(desc, rules[desc]) for desc in SOME]


FIRST_STEP = 11  # the warm state's step count + 1: bias corrections of 1 − α¹¹ ≈ 0.69 for α 0.9


def make_buffers(rule, n, dtype, rng, offset=0):
    """param, square_avg, momentum_buffer, grad_avg; views starting ``offset`` elements in.

    The state is warm (as after some steps) and well-conditioned: square_avg ≥ 1 > grad_avg²,
    so that even the bias-corrected centered variance stays positive and results stay finite.
    """
    def buf(values):
        base = np.empty(n + offset, dtype=dtype)
        view = base[offset:]
        view[...] = values
        return view

    param = buf(rng.standard_normal(n))
    square_avg = buf(1 + rng.random(n))
    momentum_buffer = buf(0.1 * rng.standard_normal(n)) if rule.momentum else None
    grad_avg = buf(0.1 * rng.standard_normal(n)) if rule.centered else None
    return param, square_avg, momentum_buffer, grad_avg


def grads(n, dtype, rng, steps, offset=0):
    """Random gradients, independent of the params, as views at ``offset``."""
    out = []
    for _ in range(steps):
        base = np.empty(n + offset, dtype=dtype)
        base[offset:] = rng.standard_normal(n)
        out.append(base[offset:])
    return out


def offset_view(a, offset):
    """A copy of ``a`` placed ``offset`` elements after a 64-byte boundary (64-byte aligned at 0)."""
    raw = np.empty(a.nbytes + (offset + 1) * a.itemsize + 64, np.uint8)
    start = -raw.ctypes.data % 64 + offset * a.itemsize
    view = raw[start:start + a.nbytes].view(a.dtype)
    view[...] = a
    return view


def state(rng, rule, param_dtype, n):
    """Param, square_avg, momentum_buffer, grad_avg: normal-range values (no denormals), with
    square_avg large next to grad_avg² so that centered variances stay positive (no NaN)."""
    state_dtype = rule.state_dtype(param_dtype)
    param = rng.uniform(-2, 2, n).astype(param_dtype)
    square_avg = rng.uniform(1, 2, n).astype(state_dtype)
    momentum_buffer = rng.uniform(-1, 1, n).astype(state_dtype) if rule.momentum else None
    grad_avg = rng.uniform(-0.01, 0.01, n).astype(state_dtype) if rule.centered else None
    return param, square_avg, momentum_buffer, grad_avg


def grad(rng, param_dtype, n):
    g = rng.standard_normal(n)
    return np.where(np.abs(g) < 1e-3, 1e-3, g).astype(param_dtype)


def assert_same(got, want, err_msg=""):
    """Equal bit patterns (signed zeros included), except that NaN matches any NaN: CUDA's
    float -> half conversions give the canonical NaN, NumPy's keep the payload."""
    got_nan, want_nan = np.isnan(got.astype(np.float64)), np.isnan(want.astype(np.float64))
    np.testing.assert_array_equal(got_nan, want_nan, err_msg=f"{err_msg}: NaN positions")
    unsigned = f"u{got.itemsize}"
    np.testing.assert_array_equal(np.where(got_nan, 0, got.view(unsigned)),
                                  np.where(want_nan, 0, want.view(unsigned)), err_msg=err_msg)


STATE_NAMES = ("param", "square_avg", "momentum_buffer", "grad_avg")


def assert_same_buffers(got, want, names=STATE_NAMES, err_msg=""):
    """``assert_same`` for each pair of two parallel sequences of buffers (None where absent)."""
    for name, a, b in zip(names, got, want):
        assert (a is None) == (b is None), f"{err_msg} {name}: present in one only"
        if a is not None:
            assert a.dtype == b.dtype and a.shape == b.shape, f"{err_msg} {name}"
            assert_same(a, b, err_msg=f"{err_msg} {name}".strip())


# ---------------------------------------------------------------------------------------------
# Mixed precision (issue 13): master weights, stochastic rounding, loss scale and clip factor.

HALF_DTYPES = [d for d in PARAM_DTYPES if d.itemsize == 2]
# Rules with a momentum buffer, with both state buffers, with a grad average; the grads carry a
# loss scale of 2^10, the master weights (where there are some) are near the params.
MIXED_RULES = [rule for desc, rule in some_modes() if desc in (
    "plain+momentum+wd+maximize+eps-outside", "centered-lerp-from-grad+wd+maximize",
    "centered-ema+momentum-lr-inside+wd-decoupled+bias-corrected")]
GRAD_SCALE, CLIP, SEED, OFFSET = 1024.0, 0.75, 1234, 3 * 2**40 + 17


def extras_at(t, stochastic, **more):
    """The step's Extras: SEED's key for step t, with the loss scale and clip factor."""
    return Extras(GRAD_SCALE, CLIP, rounding.STOCHASTIC if stochastic else rounding.NEAREST,
                  int(rounding.step_key(SEED, t)), OFFSET)._replace(**more)


def mixed_state(rng, rule, dtype, n, master):
    """param, grad (scaled by GRAD_SCALE), square_avg, momentum_buffer, grad_avg, master_param
    (float32 weights near the param, or None)."""
    param, square_avg, momentum_buffer, grad_avg = state(rng, rule, dtype, n)
    scaled = (grad(rng, dtype, n).astype(np.float32) * GRAD_SCALE).astype(dtype)
    wide = param.astype(rule.state_dtype(dtype))
    master_param = wide + rng.uniform(-1e-3, 1e-3, n).astype(wide.dtype) if master else None
    return [param, scaled, square_avg, momentum_buffer, grad_avg, master_param]


# The AMP values at amp_device: found_inf, grad scale (its reciprocal inexact), clip factor.
AMP = np.array([0.0, 3.0, 0.7], np.float32)
