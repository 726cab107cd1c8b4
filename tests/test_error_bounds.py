"""The float32 paths stay within stated bounds of a float64 evaluation of the same rule.

Per step, from the same float32 state: square_avg within SQUARE_AVG_ULPS ulps of the float64
value; params, momentum buffer and grad average within *_ULPS ulps of the magnitude of the terms
they are summed from (x − η·u can cancel, so the result's own magnitude is no yardstick). When
centered, v = s − a² cancels too, and the step u = g/√v inherits the condition (s + a²)/v.
"""

import numpy as np
import pytest

from fastrms import reference
from fastrms.functional import apply

from bounds import EPS32, centered_amplification, worst_ulps
from cases import FIRST_STEP, NAMED_CASES, grads, make_buffers, rule_of

SQUARE_AVG_ULPS = 4
TERMS_ULPS = 8


def within(name, got, want, scale, ulps):
    worst = worst_ulps(got, want, scale)
    assert worst <= ulps, f"{name}: {worst:.2f} ulps, bound {ulps}"


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("case", NAMED_CASES, ids=[c.desc for c in NAMED_CASES])
def test_float32_within_bounds_of_float64(case, backend):
    rule = rule_of(case)
    rng = np.random.default_rng(7)
    n = 4097
    x, s, b, a = make_buffers(rule, n, np.float32, rng)
    for t, g in enumerate(grads(n, np.float32, rng, 7), start=FIRST_STEP):
        old = [None if v is None else v.astype(np.float64) for v in (x, s, b, a)]
        x64, s64, b64, a64, _ = reference.evaluate(rule, x, g, s, b, a, step=t, dtype=np.float64)
        apply(rule, x, g, s, b, a, step=t, backend=backend)

        within("square_avg", s, s64, np.abs(s64), SQUARE_AVG_ULPS)
        lr, mu = rule.lr, rule.momentum
        step_terms = np.abs(x64 - old[0])
        if a is not None:
            c = 1 - rule.alpha**t if rule.bias_correction else 1.0
            step_terms *= centered_amplification(s64 / c, a64 / c)
        x_terms = np.abs(old[0]) + step_terms
        if b is not None:
            # b ← μ·b + (η·)u: both terms bound the buffer's error, and x moves by (η·)b.
            b_terms = mu * np.abs(old[2]) + np.abs(b64 - mu * old[2])
            within("momentum_buffer", b, b64, b_terms, TERMS_ULPS)
            x_terms += (1 if rule.lr_in_momentum else lr) * (1 + mu) * b_terms
        if a is not None:
            a_terms = np.abs(old[3]) + np.abs(g.astype(np.float64))
            within("grad_avg", a, a64, a_terms, TERMS_ULPS)
        within("param", x, x64, x_terms, TERMS_ULPS)


def test_bound_is_not_vacuous():
    """A float32 result with a one-off error of 100 ulps is caught by the same check."""
    s64 = np.linspace(1.0, 2.0, 11)
    bad = (s64 * (1 + 100 * EPS32)).astype(np.float32)
    with pytest.raises(AssertionError):
        within("square_avg", bad, s64, np.abs(s64), SQUARE_AVG_ULPS)
