"""The RMSProp update rule, once, for one element or for whole arrays.

This function *is* the spec (docs/design.md §2). It uses only ``+ - * /`` and ``sqrt`` on values of one
dtype, each rounded once, so the NumPy reference (whole arrays) and the Numba kernel (one element
at a time, inlined into a loop) evaluate exactly the same operations in the same order and agree
bit for bit. The CUDA kernel (``fastrms/cuda/rmsprop.cu``) spells the same lines in C++.

Per element, with the scalars ``k`` and the mode switches ``m`` below::

    g ← (g·σ⁻¹)·κ                            loss scale σ (its float32 reciprocal), clip factor κ
    g ← −g                                   if maximize
    g ← g + λ·x                              weight decay, coupled (L2: torch, Paddle, MXNet)
    x ← x − x·λ·η                            weight decay, decoupled (Keras 3)
    s ← α·s + (1−α)·g·g
    a ← α·a + (1−α)·g                        centered, EMA form (Keras, optax, Paddle, MXNet)
    a ← a + w·(g − a)                        centered, torch's lerp with weight w = 1−α < 0.5
    a ← g − (g − a)·w'                       centered, torch's lerp with w ≥ 0.5, w' = 1 − w
    v ← s − a·a                              centered, else v ← s
    v ← s/c − (a/c)·(a/c), c = 1 − αᵗ        bias correction (optax), each average on its own
    v ← max(v, 0)                            8-bit state, centered (NaN stays NaN): s and a decoded
                                             from their own codes make s − a² slightly negative
    d ← √(v + ε)  if eps_in_sqrt  else  √v + ε
    u ← g / d
    b ← μ·b + u;    x ← x − η·b              momentum, lr outside the buffer (torch)
    b ← μ·b + η·u;  x ← x − b                momentum, lr inside the buffer (TF, Keras, Paddle)
    b ← μ·b + η·u;  x ← x − (η·u + μ·b)      nesterov (optax), lr inside the buffer
    x ← x − η·u                              no momentum

The caller casts every scalar to the compute dtype once (``_spec.Rule.scalars``); nothing here
may introduce a literal, which would silently promote float32 math to float64 in Numba.
"""

import numpy as np

# Positions in the scalar tuple ``k`` (all of the compute dtype).
# As rmsprop.cu's enum Scalar: a new scalar is one name here and one there (before N_SCALARS),
# plus its value in _spec._scalars and its use in the rule.
(LR, ALPHA, ONE_MINUS_ALPHA, EPS, WEIGHT_DECAY, MOMENTUM, LERP_WEIGHT, BIAS_CORRECTION,
 GRAD_UNSCALE, CLIP, N_SCALARS) = range(11)

# Positions in the mode tuple ``m`` (ints), and the values each mode takes.
(MAXIMIZE, WEIGHT_DECAY_MODE, CENTERED_MODE, EPS_IN_SQRT, BIAS_CORRECTED, MOMENTUM_MODE,
 CLAMP_VARIANCE, N_MODES) = range(8)

WD_NONE, WD_COUPLED, WD_DECOUPLED = 0, 1, 2
CENTERED_NONE, CENTERED_EMA, CENTERED_LERP_FROM_AVG, CENTERED_LERP_FROM_GRAD = 0, 1, 2, 3
MOMENTUM_NONE, MOMENTUM_LR_OUTSIDE, MOMENTUM_LR_INSIDE, MOMENTUM_NESTEROV = 0, 1, 2, 3


def at_least_zero(v, zero):
    """``v``, or ``zero`` where ``v < zero``: NaN stays NaN (on arrays here; the Numba loops
    compile their own, ``fastrms.cpu.kernels``, and rmsprop.cu spells it with ``?:``)."""
    return np.where(v < zero, zero, v)


def rmsprop_element(x, g, s, b, a, k, m):
    """One RMSProp step; returns the new ``(x, s, b, a)``.

    ``x, g, s, b, a`` are param, grad, square average, momentum buffer and grad average: scalars
    (Numba) or arrays (NumPy). ``b`` and ``a`` are ignored (and returned as given) when their mode
    is off. ``k`` holds the scalars at the positions above, ``m`` the modes.
    """
    lr = k[LR]
    # Loss scaling and clipping: both factors are 1 (exact, a no-op) unless the step sets them.
    # Two roundings, as torch's unscale_ and clip_grad_norm_ multiply one after the other.
    g = g * k[GRAD_UNSCALE]
    g = g * k[CLIP]
    if m[MAXIMIZE]:
        g = -g
    if m[WEIGHT_DECAY_MODE] == WD_COUPLED:
        g = g + k[WEIGHT_DECAY] * x
    elif m[WEIGHT_DECAY_MODE] == WD_DECOUPLED:
        x = x - x * k[WEIGHT_DECAY] * lr

    s = k[ALPHA] * s + k[ONE_MINUS_ALPHA] * g * g

    centered = m[CENTERED_MODE]
    if centered == CENTERED_EMA:
        a = k[ALPHA] * a + k[ONE_MINUS_ALPHA] * g
    elif centered == CENTERED_LERP_FROM_AVG:
        a = a + k[LERP_WEIGHT] * (g - a)
    elif centered == CENTERED_LERP_FROM_GRAD:
        a = g - (g - a) * k[LERP_WEIGHT]

    if m[BIAS_CORRECTED]:
        c = k[BIAS_CORRECTION]
        v = s / c
        if centered != CENTERED_NONE:
            v = v - (a / c) * (a / c)
    elif centered != CENTERED_NONE:
        v = s - a * a
    else:
        v = s
    if m[CLAMP_VARIANCE]:  # set by the 8-bit step only (fastrms.eight_bit), never by a Rule
        v = at_least_zero(v, k[ALPHA] - k[ALPHA])  # a zero of the compute dtype (α is finite)

    if m[EPS_IN_SQRT]:
        d = np.sqrt(v + k[EPS])
    else:
        d = np.sqrt(v) + k[EPS]
    u = g / d

    momentum = m[MOMENTUM_MODE]
    if momentum == MOMENTUM_LR_OUTSIDE:
        b = k[MOMENTUM] * b + u
        x = x - lr * b
    elif momentum == MOMENTUM_LR_INSIDE:
        b = k[MOMENTUM] * b + lr * u
        x = x - b
    elif momentum == MOMENTUM_NESTEROV:
        b = k[MOMENTUM] * b + lr * u
        x = x - (lr * u + k[MOMENTUM] * b)
    else:
        x = x - lr * u
    return x, s, b, a

