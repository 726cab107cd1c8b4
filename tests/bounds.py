"""The error bounds of one step, derived once.

A float32 result is judged against a multiple of float32 ulps of the magnitude of the terms it is
summed from, not of its own value: x − η·u can cancel, and a sum that cancels is judged by what it
adds up. A centered variance v = s − a² cancels too, and the step u = g/√v inherits its condition
(s + a²)/v. ``step_terms`` derives these magnitudes for one step of torch's formula (what
``convention="torch"`` and ``fastrms.torch.RMSprop`` compute); ``worst_ulps`` measures an error
against them. test_error_bounds (float32 against a float64 evaluation of every convention's rule)
uses the same measure and amplification.
"""

import numpy as np

EPS32 = 2.0**-23  # float32 machine epsilon: one ulp of a value in [1, 2)


def worst_ulps(got, want, terms):
    """The largest error of ``got`` against ``want`` in float32 ulps of ``terms`` (float64)."""
    err = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
    return float(np.max(err / np.maximum(EPS32 * terms, np.finfo(np.float64).tiny), initial=0.0))


def centered_amplification(s, a):
    """How much a centered v = s − a² amplifies the relative error of the step: (s + a²)/v."""
    return (s + a * a) / (s - a * a)


def step_terms(options, x, g, state):
    """{buffer: magnitude of its terms} for one step of torch's RMSprop formula.

    ``options``: lr, alpha, eps, weight_decay, momentum, centered, maximize (torch's arguments);
    ``x``, ``g`` and ``state`` (square_avg, momentum_buffer, grad_avg) are the values before the
    step, as float64 NumPy arrays.
    """
    lr, alpha, eps = options["lr"], options["alpha"], options["eps"]
    wd, mu = options["weight_decay"], options["momentum"]
    g = -g if options["maximize"] else g
    big_g = np.abs(g) + wd * np.abs(x)  # the terms of g + λx
    g = g + wd * x
    s0 = state["square_avg"]
    s = alpha * s0 + (1 - alpha) * g * g
    terms = {"square_avg": alpha * s0 + (1 - alpha) * big_g**2}
    v, amplification = s, 1.0
    if options["centered"]:
        a0 = state["grad_avg"]
        a = a0 + (1 - alpha) * (g - a0)
        v = s - a * a
        amplification = centered_amplification(s, a)
        terms["grad_avg"] = np.abs(a0) + (1 - alpha) * (big_g + np.abs(a0))
    # u = g/d: its own terms, plus the error of d where s − a² cancels
    big_u = big_g / (np.sqrt(v) + eps) * (1 + amplification)
    if mu:
        terms["momentum_buffer"] = mu * np.abs(state["momentum_buffer"]) + big_u
        terms["param"] = np.abs(x) + lr * terms["momentum_buffer"]
    else:
        terms["param"] = np.abs(x) + lr * big_u
    return terms
