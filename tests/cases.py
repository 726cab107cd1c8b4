"""Named option cases and helpers shared by the backend tests."""

import itertools
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from fastrms._spec import Rule


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


def all_rules():
    """One rule per mode combination (every branch of ``fastrms.rule``): 384 of them."""
    for maximize, wd, centered, eps_in_sqrt, bias, momentum in itertools.product(
        (False, True),
        ("none", "coupled", "decoupled"),
        ("none", "ema", "lerp", "lerp_small_alpha"),
        (True, False),
        (False, True),
        ("none", "outside", "inside", "nesterov"),
    ):
        yield Rule(
            lr=0.01,
            alpha=0.3 if centered == "lerp_small_alpha" else 0.9,
            eps=1e-6,
            maximize=maximize,
            weight_decay=0.0 if wd == "none" else 0.05,
            decoupled_weight_decay=wd == "decoupled",
            centered=centered != "none",
            centered_lerp=centered.startswith("lerp"),
            eps_in_sqrt=eps_in_sqrt,
            bias_correction=bias,
            momentum=0.0 if momentum == "none" else 0.9,
            lr_in_momentum=momentum in ("inside", "nesterov"),
            nesterov=momentum == "nesterov",
        )


def rule_of(case):
    return replace(Rule(), **case.kwargs)


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


FIRST_STEP = 11  # the warm state's step count + 1: bias corrections of 1 − α¹¹ ≈ 0.69 for α 0.9


def grads(n, dtype, rng, steps, offset=0):
    """Random gradients, independent of the params, as views at ``offset``."""
    out = []
    for _ in range(steps):
        base = np.empty(n + offset, dtype=dtype)
        base[offset:] = rng.standard_normal(n)
        out.append(base[offset:])
    return out
