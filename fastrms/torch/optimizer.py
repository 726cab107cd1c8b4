"""``fastrms.torch.RMSprop``: the optimizer, its step routing and its state dicts.

Each step checks every group, then runs its step plan (``fastrms.torch.step_plan``: one backend
call per (device, dtype)), or with ``flatten=True`` one ``_Call`` (``fastrms.torch.views``) over
the whole buffers of each ``_FlatGroup`` (``fastrms.torch.flat_group``); under
``torch.compile``, the traced step (``fastrms.torch.traced_step``). What the adapter does and
refuses is said in the package's docstring (``fastrms.torch``).
"""

import torch

from ..eight_bit import check_state_bits
from ..threads import check_count
from ..validate import check_extras, check_real
from .amp import step_extras, verdict
from .groups import _check_defaults, _check_group, rule_of
from ..threads import resolve as resolve_threads
from . import ops  # noqa: F401 - registers torch.ops.fastrms.rmsprop_
from .flat_group import _FlatGroup
from .flat_group8 import _FlatGroup8
from .param_state import (FORMAT, MASTER, _copy_of, _has_master, _state_names, _step_counters,
                          _step_device, format_info, restore_dtypes)
from .list_plan import refuse_under_capture
from .eight_bit_state import check_loadable, step_eight_bit, takes_codes
from .step_plan import GroupPlan
from .traced_step import init_group, traced_step
from .tensors import _check_dtype

# Ours, beyond torch's arguments (pickled with the optimizer; older pickles lack the later ones).
_SETTINGS = {"flatten": False, "backend": "auto", "threads": None, "max_grad_norm": None,
             "master_weights": False, "rounding": "nearest", "seed": 0,
             "calls": 0, "_skipped": 0, "_skipped_device": None, "_device_steps": False,
             "state_bits": 32, "threshold": 4096}


class RMSprop(torch.optim.Optimizer):
    """``torch.optim.RMSprop`` with the same arguments, defaults and numbers, stepped by fastrms.

    ``flatten=True`` packs each group's params (per device and dtype) into one flat buffer and
    re-points them there (``p.data``), so that a step is one fused call per buffer. Gradients that
    autograd allocates afresh (after ``zero_grad(set_to_none=True)``, torch's default) are copied
    into the flat gradient buffer at the step, and ``p.grad`` is re-pointed to its view, so
    with ``zero_grad(set_to_none=False)`` the next backward accumulates in place.
    ``backend`` is passed to ``fastrms.functional.apply`` ("auto": Numba on the CPU, CuPy on CUDA).
    ``threads``: CPU threads per step; by default ``fastrms.set_num_threads``'s count, else
    ``torch.get_num_threads()`` (what ``torchrun`` and ``torch.set_num_threads`` set), read at
    every step (``fastrms.threads``).

    Mixed precision (docs/mixed-precision.md): float16 and bfloat16 params compute in float32
    with float32 state; ``master_weights=True`` keeps a float32 master of each in
    ``state[p]["master_param"]``; ``rounding`` ("nearest" or "stochastic", keyed by ``seed`` and
    the count of ``step()`` calls) rounds what is written to half params.
    ``max_grad_norm`` clips the grads of every group to that global L2 norm inside the update
    (as ``clip_grad_norm_``); a step whose grads are not finite then changes nothing and is
    counted in ``skipped_steps``. ``torch.amp.GradScaler`` hands its scale and inf verdict to the
    step (``_step_supports_amp_scaling``): the grads are unscaled inside the update.

    8-bit state (docs/eight-bit.md): ``state_bits=8`` keeps the state of each float32 or half
    param of at least ``threshold`` values as 8-bit codes with a float32 scale per block of 256,
    under state keys of their own (``fastrms.torch.eight_bit_state``; with ``flatten=True`` in
    one block-aligned buffer); ``float32_state_dict`` converts a state dict for torch."""

    _step_supports_amp_scaling = True  # GradScaler passes grad_scale and found_inf (fastrms.torch.amp)

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, maximize=False, foreach=None, capturable=False,
                 differentiable=False, flatten=False, backend="auto", threads=None,
                 master_weights=False, rounding="nearest", seed=0, max_grad_norm=None,
                 state_bits=32, threshold=4096):
        _check_defaults(lr, alpha, eps, weight_decay, momentum)
        self.state_bits, self.threshold = check_state_bits(state_bits, threshold)
        if self.state_bits == 8 and capturable:
            raise ValueError("state_bits=8 does not combine with capturable=True yet")
        if max_grad_norm is not None:
            check_real("max_grad_norm", max_grad_norm, positive=True)
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                        maximize=maximize, differentiable=differentiable)
        check_extras(None, None, rounding, seed, 0)
        self.master_weights, self.rounding, self.seed = bool(master_weights), rounding, seed
        self.max_grad_norm = max_grad_norm
        self.calls = 0  # step() calls (skipped ones too): the step that keys stochastic rounding
        self._skipped = 0  # steps skipped on the host for non-finite grads
        self._skipped_device = None  # ... and counted on the device (CUDA GradScaler)
        self._device_steps = False  # step counts on the CUDA device (a device GradScaler verdict)
        self.flatten = bool(flatten)
        self.backend = backend
        self.threads = None if threads is None else check_count(threads)
        self._plans = {}  # param group index -> its GroupPlan (flatten=False)
        self._flat = []  # per param group: its _FlatGroups (flatten=True)
        self._step_blocks = {}  # param group index -> (steps tensor, its 0-d views)
        super().__init__(params, defaults)

    def __getstate__(self):
        """torch's pickled state (defaults, state, param groups) and our settings; not the caches,
        which hold views of this optimizer's memory."""
        return {**super().__getstate__(), **{name: getattr(self, name) for name in _SETTINGS}}

    def __setstate__(self, state):
        """torch.optim.RMSprop's (the group flags older state lacks); a copy (pickled or deep-copied)
        starts new caches and, with ``flatten=True``, packs its own params into new flat buffers."""
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in (("momentum", 0), ("centered", False), ("foreach", None),
                               ("maximize", False), ("differentiable", False),
                               ("capturable", False)):
                group.setdefault(key, value)
        if "_flat" in self.__dict__:  # load_state_dict's call: it updates the caches itself
            return
        for name, default in _SETTINGS.items():  # absent from pickles of older versions
            self.__dict__.setdefault(name, default)
        self._plans, self._step_blocks = {}, {}
        self._flat = [[] for _ in self.param_groups]
        if self.flatten:
            for index in range(len(self.param_groups)):
                self._flatten_group(index)

    def add_param_group(self, param_group):
        """Add a param group as torch does, validated (and flattened with ``flatten=True``)."""
        super().add_param_group(param_group)
        try:
            if self.param_groups[-1].get("capturable") and self.state_bits == 8:
                raise ValueError("capturable=True does not combine with state_bits=8 yet")
            if self.param_groups[-1].get("capturable") and self.flatten:
                raise ValueError("capturable=True is not supported with flatten=True yet: use "
                                 "flatten=False (one launch per step either way)")
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
        if torch.compiler.is_compiling():  # traced: torch's structure, the torch operator
            if self.state_bits == 8:
                raise RuntimeError("state_bits=8 steps do not run under torch.compile yet: "
                                   "compile the model, not the optimizer step")
            traced_step(self)
            return loss
        self.calls += 1
        judged = verdict(self)
        if judged.skip:  # non-finite grads: nothing written, no step counted
            self._skipped += 1
            return loss
        if judged.step_increment is not None:  # counted on the device from now on
            self._device_steps = True
            skipped = 1 - judged.step_increment
            self._skipped_device = skipped if self._skipped_device is None else \
                self._skipped_device + skipped
        calls, planned = [], []
        for index, group in enumerate(self.param_groups):
            # Only the unflattened capturable step reads a tensor lr on the device.
            rule = _check_group(group, bool(group.get("capturable")) and not self.flatten)
            if self.flatten:
                calls += self._flat_calls(index, group, rule)
            else:
                planned.append((self._plan(index, group, rule), group, rule))
        threads = resolve_threads(self.threads, framework=torch.get_num_threads())
        extras = step_extras(self, judged)
        for (plan, gathered), group, rule in planned:
            plan.run(group, rule, gathered, threads, extras, judged.step_increment)
            if self.state_bits == 8:  # the params with 8-bit state, a call each
                step_eight_bit(self, group, rule, threads, extras, judged.step_increment)
        for call in calls:
            call.run(self.backend, threads, extras, judged.step_increment)
        return loss

    @property
    def skipped_steps(self):
        """How many steps were skipped for non-finite grads (reading the device count, if any,
        waits for the device)."""
        device = 0 if self._skipped_device is None else int(self._skipped_device.item())
        return self._skipped + device

    def _plan(self, index, group, rule):
        """Group ``index``'s step plan (``fastrms.torch.step_plan``), rebuilt if stale, and this
        step's grads as it gathered them."""
        names = _state_names(rule)
        plan = self._plans.get(index)
        gathered = None
        if plan is not None and plan.backend == self.backend \
                and plan.step_block is self._step_block(index, group)[0]:
            gathered = plan.gather(group, self.state, names)
        if gathered is None:
            refuse_under_capture("the step must first check its params and allocate its state")
            floats = None if self.state_bits == 32 else (  # 8-bit state steps apart
                lambda p: not takes_codes(p, self.threshold))
            plan = self._plans[index] = GroupPlan(self, index, group, rule, self.backend, floats)
            gathered = plan.gather(group, self.state, names)
        return plan, gathered

    def _init_group(self, group, params, grads, square_avgs, momentum_buffers, grad_avgs, steps):
        """torch's hook, under torch's name: Dynamo runs it eagerly when it compiles a step
        (``fastrms.torch.traced_step``)."""
        return init_group(self, group, params, grads, square_avgs, momentum_buffers, grad_avgs,
                          steps)

    def _step_block(self, index, group):
        """The group's step counters: one tensor; ``state[p]["step"]`` are 0-d views of it.

        One ``index_add_`` then counts a step for every param (``_foreach_add_`` on a hundred
        0-d tensors took 100 µs here).
        """
        device = _step_device(group, getattr(self, "_device_steps", False))
        block = self._step_blocks.get(index)
        if block is None or block[0].numel() != len(group["params"]) or block[0].device != device:
            block = self._step_blocks[index] = _step_counters(len(group["params"]), device)
        return block

    # -- flatten=True -----------------------------------------------------------------------

    def _flatten_group(self, index):
        """Pack group ``index``'s params into one ``FlatBuffer`` per (device, dtype, 8-bit)."""
        group = self.param_groups[index]
        buckets = {}
        for p in group["params"]:
            _check_dtype(p)
            coded = self.state_bits == 8 and takes_codes(p, self.threshold, flat=True)
            buckets.setdefault((p.device, p.dtype, coded), []).append(p)
        self._flat[index] = [(_FlatGroup8 if coded else _FlatGroup)(params, self.state)
                             for (_, _, coded), params in buckets.items()]
        self._plans.clear()

    def _flat_calls(self, index, group, rule):
        if group.get("capturable"):  # set by torch.compile on CUDA groups: steps run, uncaptured
            refuse_under_capture("flatten=True steps are not capturable")
        flats = self._flat[index]
        if any(not fg.current() for fg in flats) or sum(len(fg.params) for fg in flats) \
                != len(group["params"]):
            self._flatten_group(index)  # params moved (model.to(...)) or the group changed
            flats = self._flat[index]
        calls = []
        for fg in flats:
            names = _state_names(rule) + ((MASTER,) if _has_master(self.master_weights, fg.params[0]) else ())
            with_grad = fg.gather_grads()
            if not with_grad:
                continue
            if fg.bound_names != names:  # the group's momentum or centered changed
                fg.bound.clear()
                fg.bound_names = names
            for j in with_grad:
                if j not in fg.bound:
                    fg.bind(j, fg.state_of(self.state[fg.params[j]], fg.params[j], group,
                                           self.master_weights))
                    fg.bound.add(j)
            calls.append(fg.call(rule, group, with_grad, names,
                                 lists=self.rounding == "stochastic"))
        return calls

    # -- state dicts ------------------------------------------------------------------------

    def state_dict(self):
        """torch's state dict, plus ``"fastrms": {"format", "flatten"}`` (torch ignores it).

        Its tensors are copies: the live ones are views (of the flat buffers, of the step
        blocks), which torch's loader would otherwise adopt and update as its own.
        """
        saved = super().state_dict()
        saved["state"] = {key: _copy_of(s) for key, s in saved["state"].items()}
        saved["fastrms"] = {"format": FORMAT, "flatten": self.flatten}
        if self.state_bits == 8:
            saved["fastrms"]["state_bits"] = 8
        return saved

    def load_state_dict(self, state_dict):
        """Load ours (any format up to ``FORMAT``, flat or not) or torch.optim.RMSprop's."""
        if "sharded" in format_info(state_dict):
            raise ValueError("this is one rank's shard of a ShardedRMSprop state dict: load a "
                             "consolidated one (ShardedRMSprop.consolidate_state_dict)")
        saved = check_loadable(self, state_dict)
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "fastrms"})
        restore_dtypes(self, saved)
        for group in self.param_groups:
            _check_group(group)
        self._plans.clear()
        self._step_blocks.clear()
        if self.flatten:
            for index in range(len(self.param_groups)):
                if all(fg.current() for fg in self._flat[index]):
                    for fg in self._flat[index]:
                        fg.rebind(self.state)
                else:
                    self._flatten_group(index)
