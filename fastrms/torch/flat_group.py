"""``flatten=True``: a ``_FlatGroup`` holds the params of one (group, device, dtype), re-pointed
into one ``FlatBuffer``, their state in flat buffers of the same layout and their step counts in
one tensor, so that a step over all of them is one whole-buffer call.
"""

import torch

from ..dtypes import state_dtype
from ..flat import FlatBuffer
from ..rounding import offset_of
from .param_state import MASTER, STATE_BUFFERS, _adopt_step, _state_of, _step_counters
from .tensors import _array_of, _checked_grad
from .views import _Call


class _FlatGroup:
    """The params of one (group, device, dtype), re-pointed into one ``FlatBuffer``.

    Their state lives in flat buffers of the same layout (``self.state[p]`` holds views of them),
    and their step counts in one tensor (``self.state[p]["step"]`` is a 0-d view of it).
    """

    make_call = _Call
    state_of = staticmethod(_state_of)  # a param's state, created as torch creates it

    def __init__(self, params, optimizer_state, align=64):
        self.params = params
        self.flat = FlatBuffer([p.detach() for p in params], align=align)
        for p, view in zip(params, self.flat.views):
            p.data = view
        for p, grad_view in zip(params, self.flat.grad_views):
            if p.grad is not None and p.grad.layout == torch.strided:
                grad_view.copy_(p.grad)
                p.grad = grad_view
        self.addresses = [p.data_ptr() for p in params]
        self.state_buffers = {}  # name -> (flat buffer, views)
        self.steps, self.step_views = _step_counters(len(params))
        self.natives = {}  # (address, shape, dtype) of a whole flat tensor -> its native array
        self.bound = set()  # indices whose optimizer state holds views of these buffers
        self.bound_names = ()
        self.rebind(optimizer_state)

    def current(self):
        """Whether every param still lives in this flat buffer (``model.to(...)`` moves them)."""
        return all(p.data_ptr() == a for p, a in zip(self.params, self.addresses))

    def rebind(self, optimizer_state):
        """Move existing state (loaded, or from before flattening) into the flat buffers."""
        self.bound.clear()
        for j, p in enumerate(self.params):
            state = optimizer_state.get(p)
            if state:
                self.bind(j, state)

    def buffer(self, name):
        if name not in self.state_buffers:
            data = self.flat.new_buffer(dtype=state_dtype(self.params[0].dtype))
            self.state_buffers[name] = (data, self.flat.views_of(data))
        return self.state_buffers[name]

    def bind(self, j, state):
        """Make ``state``'s buffers and step views of this group's flat tensors (copying values)."""
        _adopt_step(state, self.step_views[j])
        for key, view in self.views_for(j, state):
            if state[key] is not view:
                view.copy_(state[key].reshape(view.shape))
                state[key] = view

    def views_for(self, j, state):
        """``(key, view)``: the flat views of param ``j`` for the buffers ``state`` holds."""
        return [(name, self.buffer(name)[1][j]) for name in (*STATE_BUFFERS, MASTER)
                if state.get(name) is not None]

    def gather_grads(self):
        """The indices of the params with a gradient, moved into the flat gradient buffer."""
        return gather_grads(self.params, self.flat.grad_views)

    def call(self, rule, group, with_grad, names, lists=False):
        """The ``_Call`` that steps the params ``with_grad`` (all: one whole-buffer call, unless
        ``lists``: per-param views, as stochastic rounding counts elements per param)."""
        call = self.make_call(rule, group)
        call.offsets = tuple(offset_of(j) for j in self.positions(group, with_grad))
        state_flats = [self.buffer(n) for n in names]
        if len(with_grad) == len(self.params) and not lists:
            columns = [self._native(t, whole=True) for t in [self.flat.data, self.flat.grad]
                       + [flat for flat, _ in state_flats]]
            call.step_block, call.step_positions = self.steps, None
            call.written = list(self.params) + [t for flat, _ in state_flats
                                                for t in self._tensors(flat)]
        else:
            columns = [[self._native(views[j]) for j in with_grad] for views in
                       [self.flat.views, self.flat.grad_views]
                       + [views for _, views in state_flats]]
            call.step_block, call.step_positions = self.steps, with_grad
            call.written = [self.params[j] for j in with_grad] + [t for flat, _ in state_flats
                                                                  for t in self._tensors(flat)]
        by_name = dict(zip(names, columns[2:]))
        call.columns = (columns[0], columns[1], by_name["square_avg"],
                        by_name.get("momentum_buffer"), by_name.get("grad_avg"),
                        by_name.get(MASTER))
        return call

    def positions(self, group, picked):
        """The positions in ``group`` of this flat group's params ``picked`` (indices)."""
        where = {id(p): k for k, p in enumerate(group["params"])}
        return [where[id(self.params[j])] for j in picked]

    @staticmethod
    def _tensors(flat):
        """The tensors of a flat state buffer (one; two for 8-bit state)."""
        return (flat,)

    def _native(self, t, whole=False):
        """What ``apply`` takes for ``t`` (cached for the ``whole`` flat tensors)."""
        key = (t.data_ptr(), t.shape, t.dtype)  # a param's view can start where the flat does
        array = self.natives.get(key)
        if array is None:
            array = _array_of(t)
            if whole:
                self.natives[key] = array
        return array


def gather_grads(params, grad_views):
    """The indices of ``params`` with a gradient, each gradient checked and moved into its view
    in ``grad_views`` (re-pointing ``p.grad`` there) if autograd allocated it elsewhere. One pass:
    it runs every step."""
    with_grad = []
    for j, (p, view) in enumerate(zip(params, grad_views)):
        grad = p.grad
        if grad is None:
            continue
        if grad is not view:
            _checked_grad(p)
            if grad.data_ptr() != view.data_ptr() or grad.shape != view.shape:
                view.copy_(grad)
                p.grad = view
        with_grad.append(j)
    return with_grad
