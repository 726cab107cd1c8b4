"""Hyperparameters: one frozen, validated ``Rule``, and the library conventions that preset it.

A ``Rule`` is the whole update rule of docs/design.md §2 as data. It is validated once when built, and
turns itself into what kernels take: ``modes()`` (ints choosing the formula) and ``scalars(dtype,
step)`` (every scalar cast once, on the host, to the kernel's compute dtype).
"""

import functools
from dataclasses import dataclass, fields, replace

import numpy as np

from . import rule as R
from . import validate
from .dtypes import state_dtype


@dataclass(frozen=True, kw_only=True)
class Rule:
    """The RMSProp rule, built with keywords. Field meanings follow ``fastrms.rmsprop_update``'s
    arguments."""

    lr: float = 0.01
    alpha: float = 0.9
    eps: float = 1e-6
    eps_in_sqrt: bool = True
    momentum: float = 0.0
    lr_in_momentum: bool = False
    nesterov: bool = False
    centered: bool = False
    centered_lerp: bool = False  # torch's and TF1's a ← lerp(a, g, 1−α) instead of α·a + (1−α)·g
    weight_decay: float = 0.0
    decoupled_weight_decay: bool = False
    bias_correction: bool = False
    maximize: bool = False
    initial_scale: float = 0.0

    def __post_init__(self):
        validate.check_hyperparameters(self)
        object.__setattr__(self, "_modes", self._compute_modes())
        object.__setattr__(self, "_hash", hash(tuple(getattr(self, f) for f in RULE_FIELDS)))
        object.__setattr__(self, "_state_dtypes", {})

    def __hash__(self):  # cached: rules key the per-step caches of the backends
        return self._hash

    def modes(self):
        """The ints that choose the formula (positions and values in ``fastrms.rule``)."""
        return self._modes

    def _compute_modes(self):
        m = [0] * R.N_MODES
        m[R.MAXIMIZE] = int(self.maximize)
        if self.weight_decay != 0:
            m[R.WEIGHT_DECAY_MODE] = R.WD_DECOUPLED if self.decoupled_weight_decay else R.WD_COUPLED
        if self.centered:
            if not self.centered_lerp:
                m[R.CENTERED_MODE] = R.CENTERED_EMA
            elif 1.0 - self.alpha < 0.5:  # torch's lerp switches its formula at weight 0.5
                m[R.CENTERED_MODE] = R.CENTERED_LERP_FROM_AVG
            else:
                m[R.CENTERED_MODE] = R.CENTERED_LERP_FROM_GRAD
        m[R.EPS_IN_SQRT] = int(self.eps_in_sqrt)
        m[R.BIAS_CORRECTED] = int(self.bias_correction)
        if self.momentum != 0:
            if self.nesterov:
                m[R.MOMENTUM_MODE] = R.MOMENTUM_NESTEROV
            elif self.lr_in_momentum:
                m[R.MOMENTUM_MODE] = R.MOMENTUM_LR_INSIDE
            else:
                m[R.MOMENTUM_MODE] = R.MOMENTUM_LR_OUTSIDE
        return tuple(m)

    def scalars(self, dtype, step=None, grad_scale=None, clip=None):
        """The scalar tuple ``k`` of ``fastrms.rule``, each value rounded once to ``dtype``.

        Like torch, ``1 − α`` and ``1 − αᵗ`` are computed in float64 and rounded afterwards
        (a float32 ``1 − α`` on the device differs for every common α). ``grad_scale``: the loss
        scale σ the grads carry; the rule multiplies them by 1/σ computed in float64 and rounded
        to ``dtype`` (torch's ``scale.double().reciprocal().float()``). ``clip``: the clip factor
        (``clip_factor``), already of ``dtype``. Both default to 1, which changes nothing.
        """
        if self.bias_correction:
            if step is None or step < 1:
                raise ValueError(f"bias_correction needs step >= 1 (the 1-based step), got {step!r}")
            step = int(step)
        else:
            step = 0
        return _scalars(self, np.dtype(dtype), step,
                        1.0 if grad_scale is None else float(grad_scale),
                        1.0 if clip is None else float(clip))

    def state_dtype(self, param_dtype):
        """``state_dtype(param_dtype)``, memoized on the hot path."""
        try:
            return self._state_dtypes[param_dtype]
        except KeyError:
            state = self._state_dtypes[param_dtype] = state_dtype(param_dtype)
            return state


RULE_FIELDS = tuple(f.name for f in fields(Rule))


@functools.lru_cache(maxsize=256)
def _scalars(rule, dtype, step, grad_scale, clip):
    t = dtype.type
    k = [t(0)] * R.N_SCALARS
    k[R.LR] = t(rule.lr)
    k[R.ALPHA] = t(rule.alpha)
    k[R.ONE_MINUS_ALPHA] = t(1.0 - rule.alpha)
    k[R.EPS] = t(rule.eps)
    k[R.WEIGHT_DECAY] = t(rule.weight_decay)
    k[R.MOMENTUM] = t(rule.momentum)
    weight = t(1.0 - rule.alpha)
    # LERP_FROM_GRAD uses 1 − w, computed in the compute dtype from the rounded w, as torch does.
    k[R.LERP_WEIGHT] = weight if weight < 0.5 else t(1) - weight
    k[R.BIAS_CORRECTION] = t(1.0 - rule.alpha ** step) if step else t(1)
    k[R.GRAD_UNSCALE] = t(1.0 / grad_scale)
    k[R.CLIP] = t(clip)
    return tuple(k)


def clip_factor(max_norm, norm, dtype):
    """The factor that scales grads of global L2 norm ``norm`` to at most ``max_norm``, as torch's
    ``clip_grad_norm_`` computes it in the compute ``dtype``: ``min(max_norm / (norm + 1e-6), 1)``."""
    t = np.dtype(dtype).type
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        factor = t(max_norm) / (t(norm) + t(1e-6))
    return min(factor, t(1))


# ---------------------------------------------------------------------------------------------
# Conventions: each library's defaults (overridable) and formula flags (fixed).

@dataclass(frozen=True)
class Convention:
    name: str
    defaults: dict  # values used where the caller passes nothing; lr=None means "required"
    flags: dict  # formula choices of that library; an argument that contradicts one is an error


_NO_WD = {"weight_decay": 0.0}
_LR_INSIDE = {"lr_in_momentum": True, "nesterov": False, "bias_correction": False}

CONVENTIONS = {
    c.name: c
    for c in (
        Convention("book", dict(lr=0.01, alpha=0.9, eps=1e-6), {}),
        Convention(
            "torch",
            dict(lr=0.01, alpha=0.99, eps=1e-8),
            dict(eps_in_sqrt=False, lr_in_momentum=False, nesterov=False, centered_lerp=True,
                 decoupled_weight_decay=False, bias_correction=False, initial_scale=0.0),
        ),
        Convention(
            "keras",
            dict(lr=0.001, alpha=0.9, eps=1e-7),
            dict(eps_in_sqrt=True, centered_lerp=False, decoupled_weight_decay=True,
                 initial_scale=0.0, **_LR_INSIDE),
        ),
        Convention(
            "tf1",
            dict(lr=None, alpha=0.9, eps=1e-10),
            dict(eps_in_sqrt=True, centered_lerp=True, initial_scale=1.0, **_NO_WD, **_LR_INSIDE),
        ),
        Convention(
            "optax",
            dict(lr=None, alpha=0.9, eps=1e-8, eps_in_sqrt=True, initial_scale=0.0),
            dict(lr_in_momentum=True, centered_lerp=False, **_NO_WD),
        ),
        Convention(
            "paddle",
            dict(lr=None, alpha=0.95, eps=1e-6),
            dict(eps_in_sqrt=True, centered_lerp=False, decoupled_weight_decay=False,
                 initial_scale=0.0, **_LR_INSIDE),
        ),
        Convention(
            "mxnet",
            dict(lr=None, alpha=0.95, eps=1e-8),
            dict(eps_in_sqrt=True, centered_lerp=False, decoupled_weight_decay=False,
                 initial_scale=0.0, **_LR_INSIDE),
        ),
    )
}



def rule_for(convention="book", **given):
    """The ``Rule`` of ``convention`` with the arguments the caller gave (``None`` = not given)."""
    try:
        conv = CONVENTIONS[convention]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown convention {convention!r}; choose one of {', '.join(CONVENTIONS)}"
        ) from None
    unknown = set(given) - set(RULE_FIELDS)
    if unknown:
        raise TypeError(f"unknown argument(s): {', '.join(sorted(unknown))}")
    given = {k: v for k, v in given.items() if v is not None}
    for name, fixed in conv.flags.items():
        if name in given and given[name] != fixed:
            raise ValueError(
                f"{name}={given[name]!r} contradicts convention {convention!r}, "
                f"whose formula has {name}={fixed!r}"
            )
    values = {**conv.defaults, **conv.flags, **given}
    if values.get("lr") is None:
        raise ValueError(f"convention {convention!r} has no default learning rate: pass lr")
    return replace(Rule(), **values)
