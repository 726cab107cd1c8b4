"""``RMSprop``: the update rule as an object that owns its hyperparameters and builds state."""

from dataclasses import replace

from ._spec import CONVENTIONS, rule_for
from .dtypes import state_dtype
from .functional import apply
from .state import RMSpropState, full_like
from .threads import check_count


class RMSprop:
    """RMSProp with one library's conventions (``convention=``, the book's by default).

    ``convention`` is one of "book", "torch", "keras", "tf1", "optax", "paddle", "mxnet". It sets
    that library's defaults (lr, alpha, eps) and its formula (where ε goes, whether lr lives in
    the momentum buffer, the form of weight decay and of the centered average, the initial square
    average). Arguments you pass override the defaults; an argument that contradicts the formula
    of the convention is a ValueError. The update rule is documented in ``fastrms.rmsprop_update``.
    ``threads``: CPU threads per step (default: ``fastrms.set_num_threads``, the environment, every
    core; see ``fastrms.threads``).

    >>> opt = RMSprop(lr=0.01, alpha=0.9)
    >>> state = opt.init(param)        # buffers like param: same kind, device, dtype
    >>> opt.step(param, grad, state)   # in place; state.step counts completed steps
    """

    def __init__(self, lr=None, alpha=None, eps=None, *, convention="book", eps_in_sqrt=None,
                 momentum=None, lr_in_momentum=None, nesterov=None, centered=None,
                 weight_decay=None, decoupled_weight_decay=None, bias_correction=None,
                 maximize=None, initial_scale=None, backend="auto", threads=None):
        self.rule = rule_for(
            convention, lr=lr, alpha=alpha, eps=eps, eps_in_sqrt=eps_in_sqrt, momentum=momentum,
            lr_in_momentum=lr_in_momentum, nesterov=nesterov, centered=centered,
            weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
            bias_correction=bias_correction, maximize=maximize, initial_scale=initial_scale,
        )
        self.convention = CONVENTIONS[convention].name
        self.backend = backend
        self.threads = None if threads is None else check_count(threads)

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
        return RMSpropState(
            square_avg=full_like(param, rule.initial_scale, dtype),
            momentum_buffer=full_like(param, 0.0, dtype) if rule.momentum != 0 else None,
            grad_avg=full_like(param, 0.0, dtype) if rule.centered else None,
        )

    def step(self, param, grad, state):
        """One in-place step; ``state.step`` is incremented first and counts from 1, like torch's."""
        t = state.step + 1
        apply(self.rule, param, grad, state.square_avg, state.momentum_buffer, state.grad_avg,
              step=t, backend=self.backend, threads=self.threads)
        state.step = t

    def __repr__(self):
        return f"RMSprop(convention={self.convention!r}, {self.rule})"
