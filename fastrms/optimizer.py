"""``RMSprop``: the update rule as an object that owns its hyperparameters and builds state."""

from dataclasses import replace

import numpy as np

from ._spec import CONVENTIONS, clip_factor, rule_for
from .dtypes import numpy_dtype, state_dtype
from .eight_bit import Codes, apply8, check_state_bits, filled, takes_codes
from .functional import apply, extras_of
from .grad_stats import inspect_grads
from .state import RMSpropState, copy_like, full_like, widened_copy
from .threads import check_count
from .validate import check_extras, check_real


class RMSprop:
    """RMSProp with one library's conventions (``convention=``, the book's by default).

    ``convention`` is one of "book", "torch", "keras", "tf1", "optax", "paddle", "mxnet". It sets
    that library's defaults (lr, alpha, eps) and its formula (where ε goes, whether lr lives in
    the momentum buffer, the form of weight decay and of the centered average, the initial square
    average). Arguments you pass override the defaults; an argument that contradicts the formula
    of the convention is a ValueError. The update rule is documented in ``fastrms.rmsprop_update``.
    ``threads``: CPU threads per step (default: ``fastrms.set_num_threads``, the environment, every
    core; see ``fastrms.threads``).

    Mixed precision (docs/mixed-precision.md): ``master_weights=True`` keeps a float32 master of
    each half-precision param in its state; ``rounding`` ("nearest" or "stochastic", keyed by
    ``seed`` and the step) rounds what is written to a half param. ``max_grad_norm`` clips the
    grads to that global L2 norm inside the update; ``step(..., grad_scale=)`` unscales them.
    Clipping or loss scaling reads the grads once more first (``fastrms.inspect_grads``), and a
    step whose grads are not finite changes nothing and is counted in ``skipped_steps``.

    8-bit state (docs/eight-bit.md): ``state_bits=8`` keeps the state of each float32 or half
    param of at least ``threshold`` values as 8-bit codes with a float32 scale per block of 256
    (``fastrms.eight_bit``); smaller ones keep float32 state.

    >>> opt = RMSprop(lr=0.01, alpha=0.9)
    >>> state = opt.init(param)        # buffers like param: same kind, device, dtype
    >>> opt.step(param, grad, state)   # in place; state.step counts completed steps
    """

    def __init__(self, lr=None, alpha=None, eps=None, *, convention="book", eps_in_sqrt=None,
                 momentum=None, lr_in_momentum=None, nesterov=None, centered=None,
                 weight_decay=None, decoupled_weight_decay=None, bias_correction=None,
                 maximize=None, initial_scale=None, master_weights=False, rounding="nearest",
                 seed=0, max_grad_norm=None, backend="auto", threads=None, state_bits=32,
                 threshold=4096):
        self.rule = rule_for(
            convention, lr=lr, alpha=alpha, eps=eps, eps_in_sqrt=eps_in_sqrt, momentum=momentum,
            lr_in_momentum=lr_in_momentum, nesterov=nesterov, centered=centered,
            weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
            bias_correction=bias_correction, maximize=maximize, initial_scale=initial_scale,
        )
        self.convention = CONVENTIONS[convention].name
        self.backend = backend
        self.threads = None if threads is None else check_count(threads)
        check_extras(None, None, rounding, seed, 0)
        if max_grad_norm is not None:
            check_real("max_grad_norm", max_grad_norm, positive=True)
        self.master_weights, self.rounding, self.seed = bool(master_weights), rounding, seed
        self.max_grad_norm = max_grad_norm
        self.state_bits, self.threshold = check_state_bits(state_bits, threshold)
        self.skipped_steps = 0  # steps skipped for non-finite grads

    @property
    def lr(self):
        """The learning rate; assign to it between steps (a schedule), validated like the rest."""
        return self.rule.lr

    @lr.setter
    def lr(self, value):
        """Change the learning rate between steps (a schedule); validated like the rest."""
        self.rule = replace(self.rule, lr=value)

    def init(self, param):
        """Fresh state for ``param``: buffers of its kind, device and shape, step 0."""
        rule = self.rule
        dtype = state_dtype(param.dtype)  # torch's for torch params, else NumPy's
        half = np.dtype(numpy_dtype(param.dtype)).itemsize <= 2
        if self.state_bits == 8 and takes_codes(param, self.threshold):
            return RMSpropState(**eight_bit_buffers(param, rule),
                                master_param=widened_copy(param) if self.master_weights and half
                                else None)
        return RMSpropState(
            square_avg=full_like(param, rule.initial_scale, dtype),
            momentum_buffer=full_like(param, 0.0, dtype) if rule.momentum != 0 else None,
            grad_avg=full_like(param, 0.0, dtype) if rule.centered else None,
            master_param=widened_copy(param) if self.master_weights and half else None,
        )

    def step(self, param, grad, state, grad_scale=None, found_inf=None):
        """One in-place step; ``state.step`` is incremented first and counts from 1, like torch's.

        ``grad_scale``: the loss scale the grads carry. ``found_inf``: the step is skipped when
        true (a GradScaler's verdict). With ``max_grad_norm`` or ``grad_scale`` the grads are
        inspected first (one read), and non-finite grads skip the step too. Returns whether the
        step was taken."""
        t = state.step + 1
        clip = None
        if self.max_grad_norm is not None or grad_scale is not None:
            found, norm = inspect_grads(grad, 1.0 if grad_scale is None else grad_scale,
                                        backend=self.backend, threads=self.threads)
            found_inf = found or bool(found_inf)
            if self.max_grad_norm is not None:
                clip = clip_factor(self.max_grad_norm, norm, state_dtype(numpy_dtype(grad.dtype)))
        skip = bool(found_inf) if found_inf is not None else False
        extras = extras_of(grad_scale, clip, self.rounding, self.seed, t)
        step_with = apply8 if isinstance(state.square_avg, Codes) else apply
        step_with(self.rule, param, grad, state.square_avg, state.momentum_buffer, state.grad_avg,
                  step=t, backend=self.backend, threads=self.threads,
                  master_param=state.master_param, extras=extras, skip=skip)
        if skip:
            self.skipped_steps += 1
            return False
        state.step = t
        return True

    def __repr__(self):
        bits = "" if self.state_bits == 32 else f", state_bits=8, threshold={self.threshold}"
        return f"RMSprop(convention={self.convention!r}, {self.rule}{bits})"


def eight_bit_buffers(param, rule):
    """Fresh 8-bit state buffers for ``param`` (``Codes`` of its kind and device): the square
    average at ``rule.initial_scale``, the others at zero."""
    values = {"square_avg": rule.initial_scale, "momentum_buffer": 0.0 if rule.momentum else None,
              "grad_avg": 0.0 if rule.centered else None}
    return {name: None if fill is None else Codes(*(
        copy_like(a, param) for a in filled(tuple(param.shape), fill, name)))
            for name, fill in values.items()}
