"""``fastrms.torch.RMSprop``: a drop-in for ``torch.optim.RMSprop`` whose step is one fused call.

Import it explicitly (``from fastrms.torch import RMSprop``); ``import fastrms`` never imports
torch. It is a real ``torch.optim.Optimizer``: param groups, ``zero_grad``, step and state-dict
hooks, ``torch.optim.lr_scheduler`` all work as with torch's. The formula is torch's (convention
"torch" of ``fastrms._spec``: ε outside the root, lerp-form grad average, lr outside the momentum
buffer), and ``state_dict()`` uses torch's layout, so either optimizer loads the other's state.

How each step runs: every group's tensors go, per (device, dtype), to ``fastrms.functional.apply``
as lists, i.e. one compiled Numba call for all CPU tensors (through NumPy views of their own
memory) and one CuPy launch sequence for the CUDA tensors (zero copy, through
``fastrms.cuda.arrays``). With ``flatten=True`` the params are re-pointed at the beginning into one
``FlatBuffer`` per (group, device, dtype), so that a step is one single-buffer call each.

What it does with torch's other arguments and inputs:

- ``foreach``: accepted and ignored (there is one fused path); kept in the param groups.
- ``capturable=True``, ``differentiable=True``: ValueError (no CUDA-graph capture, no autograd
  through the step).
- params whose ``.grad`` is None are skipped, as torch skips them (no state, no step count).
- sparse gradients: RuntimeError, as torch's.
- complex params: handled as torch handles them, as real views (re and im updated as two reals;
  the state stays complex, as torch's).
- non-contiguous params (e.g. channels_last): ValueError naming the param, unless
  ``flatten=True``, which copies them into the flat buffer (they become contiguous views).
- on the CPU: float32, float64, complex64, complex128 (TypeError otherwise). Half-precision CUDA
  params keep float32 state (torch keeps it in the param dtype; the numbers differ slightly).
- alpha must lie in [0, 1] (torch does not check); other values are validated like torch's.
- every update bumps the autograd version counter of the tensors it wrote
  (``torch.autograd.graph.increment_version``), as torch's in-place ops do.

``state_dict()`` adds ``"fastrms": {"format": FORMAT, "flatten": ...}`` at the top level, which
torch ignores; loading accepts torch's own state dicts (no such key), a change of device or dtype
(torch's casting rules) and a change of ``flatten``.
"""

import functools

import torch

from .native import cuda_arrays
from ._spec import rule_for
from .flat import FlatBuffer
from .functional import apply

FORMAT = 1  # version of the state-dict layout written under the key "fastrms"
STATE_BUFFERS = ("square_avg", "momentum_buffer", "grad_avg")
_HOST_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)
_HALF = (torch.float16, torch.bfloat16)

try:  # torch's step-counter dtype (float32, or float64 under a float64 default dtype)
    from torch.optim.optimizer import _get_scalar_dtype
except ImportError:  # pragma: no cover - older/newer torch
    def _get_scalar_dtype():
        return torch.float32


@functools.lru_cache(maxsize=256)
def _torch_rule(lr, alpha, eps, weight_decay, momentum, centered, maximize):
    return rule_for("torch", lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                    momentum=momentum, centered=centered, maximize=maximize)


def rule_of(group):
    """The ``fastrms`` rule of a param group (cached: one ``Rule`` per set of values)."""
    lr = group["lr"]
    if isinstance(lr, torch.Tensor):
        lr = lr.item()
    return _torch_rule(float(lr), float(group["alpha"]), float(group["eps"]),
                       float(group["weight_decay"]), float(group["momentum"]),
                       bool(group["centered"]), bool(group["maximize"]))


class RMSprop(torch.optim.Optimizer):
    """``torch.optim.RMSprop`` with the same arguments, defaults and numbers, stepped by fastrms.

    ``flatten=True`` packs each group's params (per device and dtype) into one flat buffer and
    re-points them there (``p.data``), so that a step is one fused call per buffer. Gradients that
    autograd allocates afresh (after ``zero_grad(set_to_none=True)``, torch's default) are copied
    into the flat gradient buffer at the step, and ``p.grad`` is re-pointed to its view, so
    with ``zero_grad(set_to_none=False)`` the next backward accumulates in place.
    ``backend`` is passed to ``fastrms.functional.apply`` ("auto": Numba on the CPU, CuPy on CUDA).
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, maximize=False, foreach=None, capturable=False,
                 differentiable=False, flatten=False, backend="auto"):
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                        maximize=maximize, differentiable=differentiable)
        self.flatten = bool(flatten)
        self.backend = backend
        self._views = {}  # param -> _TensorViews: what apply takes for it and its state
        self._flat = []  # per param group: its _FlatGroups (flatten=True)
        self._step_blocks = {}  # param group index -> (steps tensor, its 0-d views)
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in (("momentum", 0), ("centered", False), ("foreach", None),
                               ("maximize", False), ("differentiable", False),
                               ("capturable", False)):
                group.setdefault(key, value)

    def add_param_group(self, param_group):
        """Add a param group as torch does, validated (and flattened with ``flatten=True``)."""
        super().add_param_group(param_group)
        try:
            _check_group(self.param_groups[-1])
        except (ValueError, TypeError):
            self.param_groups.pop()
            raise
        self._flat.append([])
        if self.flatten:
            self._flatten_group(len(self.param_groups) - 1)

    # -- the step ---------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure=None):
        """One step for every param with a gradient; returns ``closure()``'s loss if given.

        Every group's arguments are checked and its state allocated before any param is
        written. The buffers themselves are checked per (group, device, dtype) call, each before
        it writes: if a later call fails (say, CUDA params where CuPy is not usable), the earlier
        calls' params have already stepped.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        calls = []
        for index, group in enumerate(self.param_groups):
            _check_group(group)
            rule = rule_of(group)
            if self.flatten:
                calls += self._flat_calls(index, group, rule)
            else:
                calls += self._tensor_calls(index, group, rule)
        for call in calls:
            call.run(self.backend)
        return loss

    def _tensor_calls(self, index, group, rule):
        """One ``_Call`` per (device, dtype) of the group's params with a gradient."""
        names = _state_names(rule)
        steps, step_views = self._step_block(index, group)
        buckets = {}
        for position, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            grad = _checked_grad(p)
            if not p.is_contiguous():
                raise ValueError(
                    f"param of shape {tuple(p.shape)} is not contiguous (strides {p.stride()}): "
                    "fastrms updates params in place and needs contiguous ones; call "
                    ".contiguous() on it (or on the module: no channels_last), or pass flatten=True"
                )
            state = self.state[p]
            views = self._views.get(p)
            if views is None or not views.current(p, state, names) \
                    or state["step"] is not step_views[position]:
                _check_dtype(p)
                state = self._state_of(p, group)
                _adopt_step(state, step_views[position])
                views = self._views[p] = _TensorViews(p, state, names)
            call = buckets.get(views.bucket)
            if call is None:
                call = buckets[views.bucket] = _Call(rule, group)
                call.step_block, call.step_positions = steps, []
            call.add(views.arrays, views.grad_of(grad))
            call.written += views.tensors
            call.step_positions.append(position)
        return list(buckets.values())

    def _step_block(self, index, group):
        """The group's step counters: one tensor; ``state[p]["step"]`` are 0-d views of it.

        One ``index_add_`` then counts a step for every param (``_foreach_add_`` on a hundred
        0-d tensors took 100 µs here).
        """
        block = self._step_blocks.get(index)
        if block is None or block[0].numel() != len(group["params"]):
            steps = torch.zeros(len(group["params"]), dtype=_get_scalar_dtype())
            block = self._step_blocks[index] = (steps, [steps[j] for j in range(len(steps))])
        return block

    def _state_of(self, p, group):
        """``self.state[p]``, created as torch creates it (and completed if the group changed)."""
        state = self.state[p]
        if len(state) == 0:
            state["step"] = torch.zeros((), dtype=_get_scalar_dtype())
        if not torch.is_tensor(state["step"]):
            state["step"] = torch.tensor(float(state["step"]), dtype=_get_scalar_dtype())
        dtype = torch.float32 if p.dtype in _HALF else p.dtype
        for key, wanted in zip(STATE_BUFFERS, (True, group["momentum"] > 0, group["centered"])):
            if not wanted:
                continue
            buffer = state.get(key)
            if buffer is None:
                state[key] = torch.zeros_like(p, dtype=dtype, memory_format=torch.contiguous_format)
            elif buffer.dtype != dtype or buffer.device != p.device or not buffer.is_contiguous() \
                    or buffer.shape != p.shape:
                state[key] = buffer.to(device=p.device, dtype=dtype).contiguous().reshape(p.shape)
        return state

    # -- flatten=True -----------------------------------------------------------------------

    def _flatten_group(self, index):
        """Pack group ``index``'s params into one ``FlatBuffer`` per (device, dtype)."""
        group = self.param_groups[index]
        buckets = {}
        for p in group["params"]:
            _check_dtype(p)
            buckets.setdefault((p.device, p.dtype), []).append(p)
        self._flat[index] = [_FlatGroup(params, self.state) for params in buckets.values()]
        self._views.clear()

    def _flat_calls(self, index, group, rule):
        flats = self._flat[index]
        if any(not fg.current() for fg in flats) or sum(len(fg.params) for fg in flats) \
                != len(group["params"]):
            self._flatten_group(index)  # params moved (model.to(...)) or the group changed
            flats = self._flat[index]
        names = _state_names(rule)
        calls = []
        for fg in flats:
            with_grad = fg.gather_grads()
            if not with_grad:
                continue
            if fg.bound_names != names:  # the group's momentum or centered changed
                fg.bound.clear()
                fg.bound_names = names
            for j in with_grad:
                if j not in fg.bound:
                    fg.bind(j, self._state_of(fg.params[j], group))
                    fg.bound.add(j)
            calls.append(fg.call(rule, group, with_grad, names))
        return calls

    # -- state dicts ------------------------------------------------------------------------

    def state_dict(self):
        """torch's state dict, plus ``"fastrms": {"format", "flatten"}`` (torch ignores it).

        Its tensors are copies: the live ones are views (of the flat buffers, of the step
        blocks), which torch's loader would otherwise adopt and update as its own.
        """
        saved = super().state_dict()
        saved["state"] = {
            key: {name: v.clone() if torch.is_tensor(v) else v for name, v in s.items()}
            for key, s in saved["state"].items()
        }
        saved["fastrms"] = {"format": FORMAT, "flatten": self.flatten}
        return saved

    def load_state_dict(self, state_dict):
        """Load ours (any format up to ``FORMAT``, flat or not) or torch.optim.RMSprop's."""
        info = state_dict.get("fastrms", {"format": 0})
        if info.get("format", 0) > FORMAT:
            raise ValueError(
                f"state dict format {info['format']} was written by a newer fastrms "
                f"(this one reads up to {FORMAT})"
            )
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "fastrms"})
        for group in self.param_groups:
            _check_group(group)
        self._views.clear()
        self._step_blocks.clear()
        if self.flatten:
            for index in range(len(self.param_groups)):
                if all(fg.current() for fg in self._flat[index]):
                    for fg in self._flat[index]:
                        fg.rebind(self.state)
                else:
                    self._flatten_group(index)


class _Call:
    """One ``apply`` over lists (or whole flat buffers), then the step counts and versions."""

    def __init__(self, rule, group):
        self.rule, self.group = rule, group
        self.columns = ([], [], [], [], [])  # param, grad, square_avg, momentum_buffer, grad_avg
        self.written = []  # tensors whose version counters to bump
        self.step_block = None  # the step counters of the params' group (one tensor)
        self.step_positions = None  # which of them this call counts (None: all)

    def add(self, arrays, grad):
        """Append one param's buffers (param, square_avg, momentum_buffer, grad_avg) and grad."""
        params, grads, square_avgs, momentum_buffers, grad_avgs = self.columns
        params.append(arrays[0])
        grads.append(grad)
        square_avgs.append(arrays[1])
        momentum_buffers.append(arrays[2])
        grad_avgs.append(arrays[3])

    def run(self, backend):
        """The update (lists: one multi-tensor call; whole flat buffers: one plain call)."""
        params, grads, square_avgs, momentum_buffers, grad_avgs = self.columns
        rule = self.rule
        apply(rule, params, grads, square_avgs,
              momentum_buffers if rule.momentum != 0 else None,
              grad_avgs if rule.centered else None, backend=backend)
        steps, positions = self.step_block, self.step_positions
        if positions is None or len(positions) == steps.numel():
            steps.add_(1)
        else:
            steps.index_add_(0, torch.tensor(positions, dtype=torch.long),
                             torch.ones(len(positions), dtype=steps.dtype))
        torch.autograd.graph.increment_version(self.written)


class _TensorViews:
    """What ``apply`` takes for one param and its state, made once and reused every step.

    NumPy views (CPU) or CuPy arrays (CUDA) over the tensors' own memory, made once: converting
    a tensor costs microseconds, per tensor and step. Valid while the param's memory and the state
    tensors stay the same objects (``current``). Gradients are wrapped afresh every step (kept,
    they would keep torch's ``set_to_none`` from freeing them).
    """

    def __init__(self, p, state, names):
        self.address, self.dtype, self.shape, self.names = p.data_ptr(), p.dtype, p.shape, names
        self.state_tensors = tuple(state[n] for n in names)
        self.tensors = (p,) + self.state_tensors  # what a step writes: their versions are bumped
        self.bucket = (p.device, p.dtype)
        self.host = p.device.type == "cpu"
        by_name = dict(zip(names, self.state_tensors))
        self.arrays = (_array_of(p),) + tuple(
            None if by_name.get(n) is None else _array_of(by_name[n]) for n in STATE_BUFFERS)

    def current(self, p, state, names):
        return (p.data_ptr() == self.address and p.dtype is self.dtype and p.shape == self.shape
                and names == self.names
                and all(state.get(n) is t for n, t in zip(names, self.state_tensors)))

    def grad_of(self, grad):
        """The gradient as ``apply`` takes it (a contiguous copy only if it is not contiguous)."""
        if self.host and grad.is_contiguous() and not grad.requires_grad and not grad.is_complex():
            return grad.numpy()
        return _array_of(grad.contiguous())


class _FlatGroup:
    """The params of one (group, device, dtype), re-pointed into one ``FlatBuffer``.

    Their state lives in flat buffers of the same layout (``self.state[p]`` holds views of them),
    and their step counts in one tensor (``self.state[p]["step"]`` is a 0-d view of it).
    """

    def __init__(self, params, optimizer_state):
        self.params = params
        self.flat = FlatBuffer([p.detach() for p in params])
        for p, view in zip(params, self.flat.views):
            p.data = view
        for p, grad_view in zip(params, self.flat.grad_views):
            if p.grad is not None and p.grad.layout == torch.strided:
                grad_view.copy_(p.grad)
                p.grad = grad_view
        self.addresses = [p.data_ptr() for p in params]
        self.state_buffers = {}  # name -> (flat buffer, views)
        self.steps = torch.zeros(len(params), dtype=_get_scalar_dtype())
        self.step_views = [self.steps[j] for j in range(len(params))]
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
            p = self.params[0]
            dtype = torch.float32 if p.dtype in _HALF else p.dtype
            data = self.flat.new_buffer(dtype=dtype)
            self.state_buffers[name] = (data, self.flat.views_of(data))
        return self.state_buffers[name]

    def bind(self, j, state):
        """Make ``state``'s buffers and step views of this group's flat tensors (copying values)."""
        _adopt_step(state, self.step_views[j])
        for name in STATE_BUFFERS:
            if state.get(name) is None:
                continue
            view = self.buffer(name)[1][j]
            if state[name] is not view:
                view.copy_(state[name].reshape(view.shape))
                state[name] = view

    def gather_grads(self):
        """The indices of the params with a gradient, each gradient checked and moved into the
        flat gradient buffer if autograd allocated it elsewhere. One pass: it runs every step.
        """
        with_grad = []
        for j, (p, view) in enumerate(zip(self.params, self.flat.grad_views)):
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

    def call(self, rule, group, with_grad, names):
        """The ``_Call`` that steps the params ``with_grad`` (all: one whole-buffer call)."""
        call = _Call(rule, group)
        state_flats = [self.buffer(n) for n in names]
        if len(with_grad) == len(self.params):
            columns = [self._native(t) for t in [self.flat.data, self.flat.grad]
                       + [flat for flat, _ in state_flats]]
            call.step_block, call.step_positions = self.steps, None
            call.written = list(self.params) + [flat for flat, _ in state_flats]
        else:
            columns = [[self._native(views[j]) for j in with_grad] for views in
                       [self.flat.views, self.flat.grad_views]
                       + [views for _, views in state_flats]]
            call.step_block, call.step_positions = self.steps, with_grad
            call.written = [self.params[j] for j in with_grad] + [flat for flat, _ in state_flats]
        by_name = dict(zip(names, columns[2:]))
        call.columns = (columns[0], columns[1], by_name["square_avg"],
                        by_name.get("momentum_buffer"), by_name.get("grad_avg"))
        return call

    def _native(self, t):
        """What ``apply`` takes for ``t`` (cached for the whole flat tensors)."""
        key = (t.data_ptr(), t.shape, t.dtype)  # a param's view can start where the flat does
        array = self.natives.get(key)
        if array is None:
            array = _array_of(t)
            if t.numel() == self.flat.size:
                self.natives[key] = array
        return array


def _state_names(rule):
    """The state buffers ``rule`` reads and writes."""
    return tuple(n for n, on in zip(STATE_BUFFERS, (True, rule.momentum != 0, rule.centered)) if on)


def _adopt_step(state, view):
    """Make ``state["step"]`` the 0-d view ``view`` of a step block, keeping its count."""
    if state.get("step") is not view:
        view.fill_(float(state.get("step", 0)))
        state["step"] = view


def _check_group(group):
    if group.get("capturable"):
        raise ValueError("capturable=True is not supported: fastrms steps are not CUDA-graph "
                         "capturable (their scalars are cast on the host)")
    if group.get("differentiable"):
        raise ValueError("differentiable=True is not supported: the fused step updates in place, "
                         "outside autograd")
    rule_of(group)  # validates the hyperparameters (ValueError)


def _checked_grad(p):
    grad = p.grad
    if grad.layout is not torch.strided:  # sparse (COO, CSR, ...) layouts
        raise RuntimeError("RMSprop does not support sparse gradients")
    return grad


def _check_dtype(p):
    if p.device.type == "cpu" and p.dtype not in _HOST_DTYPES:
        raise TypeError(f"fastrms.torch.RMSprop updates float32, float64, complex64 and complex128 "
                        f"CPU params; got a {p.dtype} param of shape {tuple(p.shape)}")


def _real(t):
    """``t`` detached, complex tensors as their real view (torch's own treatment)."""
    t = t.detach()
    return torch.view_as_real(t) if t.is_complex() else t


def _array_of(t):
    """What ``apply`` takes for tensor ``t``: a NumPy (CPU) or CuPy (CUDA) array over its memory."""
    return _host_array(t) if t.device.type == "cpu" else _device_array(t)


def _host_array(t):
    """A NumPy array over a CPU tensor's own memory (complex as real pairs)."""
    return _real(t).numpy()


def _device_array(t):
    """A CuPy array over a CUDA tensor's own memory (complex as real pairs), on which fastrms
    launches on torch's current stream; the tensor itself where CuPy cannot load (the step's
    dispatch then says why it cannot run)."""
    if t.device.type != "cuda":  # meta, xpu, mps...: refused, by name, by fastrms.native
        return _real(t)
    try:
        arrays = cuda_arrays()
    except Exception:  # noqa: BLE001 - CuPy missing or broken: reported by dispatch
        return _real(t)
    return arrays.from_torch(_real(t))
