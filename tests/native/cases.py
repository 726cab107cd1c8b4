"""Rules covering every mode combination of fastrms.rule, and test data clear of denormals."""

import itertools

import numpy as np

from fastrms._spec import Rule

try:
    from ml_dtypes import bfloat16
except ImportError:
    bfloat16 = None

PARAM_DTYPES = [np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)]
if bfloat16 is not None:
    PARAM_DTYPES.append(np.dtype(bfloat16))

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


SOME = ("plain", "plain+momentum+wd+maximize+eps-outside",
        "centered-ema+momentum-lr-inside+wd-decoupled+bias-corrected",
        "centered-lerp-from-avg+nesterov+eps-outside+bias-corrected",
        "centered-lerp-from-grad+wd+maximize", "plain+nesterov+wd-decoupled+bias-corrected")


def some_modes():
    """Six rules that take every value of every mode and have every set of state buffers (for
    the largest size, where all 384 would take too long)."""
    rules = dict(every_mode())
    return [(desc, rules[desc]) for desc in SOME]


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
