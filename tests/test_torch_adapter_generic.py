"""fastrms.torch.RMSprop through the generic checks that torch's own optimizer tests
(test/test_optim.py, ``TestOptimRenewed``) run on every optimizer, with the inputs torch ships for
RMSprop: its ``OptimizerInfo`` (every config, the error inputs, the schedulers).

Where torch expects two runs of one optimizer to agree (foreach on and off, a state dict loaded
mid-run, tensor and float lr, complex params and their real views, a copy), two fastrms optimizers
agree bit for bit; fastrms and torch.optim.RMSprop agree within the tolerances of torch's
``assertEqual`` (``assert_close``'s defaults).

Refused by design, and checked to raise in ``test_every_config_matches_torch``: the
``differentiable=True`` configs, and the CUDA-only ``capturable=True`` ones on CPU params
(tests/test_torch_adapter_cuda.py captures capturable steps on a GPU). Strided params step as torch's,
flat or not (``test_goes_the_right_way_as_torch``). Not applicable: sparse gradients (RMSprop takes
none; the refusal is in ``test_torch_adapter_errors.py``), fused (RMSprop has none), the multi-GPU
and CUDA-only tests, ``test_defaults_changed_to_foreach`` (it mocks torch's own foreach kernel,
which fastrms never calls) and ``test_complex_2d`` (``test_complex_params_step_as_real_views``
holds each element to its real view bit for bit).
"""

import copy
import io
import itertools
import pickle

import pytest

torch = pytest.importorskip("torch")

from adapter_cases import (  # noqa: E402
    flatten_both, loss_of, make_mlp, torch_optim_info, train_step, twin)
from fastrms.torch import RMSprop  # noqa: E402
from torch.optim.lr_scheduler import ReduceLROnPlateau  # noqa: E402
from torch.optim.optimizer import (  # noqa: E402
    register_optimizer_step_post_hook, register_optimizer_step_pre_hook)

INFO, with_global_flags = torch_optim_info()


def _configs():
    """torch's configs as its tests build them: on the CPU each with differentiable False and
    True, then the CUDA-only capturable ones (all of them on the CPU here)."""
    cpu = with_global_flags("cpu", torch.float32, INFO)
    cuda_only = [i for i in INFO.optim_inputs_func(device="cuda") if i.kwargs.get("capturable")]
    every = [pytest.param(i.kwargs, id=i.desc) for i in cpu + cuda_only]
    return every, [p for p in every if _refusal(p.values[0]) is None]


def _refusal(config, flatten=False):
    """The error fastrms raises, by design, for ``config`` on CPU params (None: it runs)."""
    if config.get("differentiable"):  # the fused step is outside autograd
        return "differentiable=True is not supported"
    if config.get("capturable") and flatten:
        return "capturable=True is not supported with flatten=True"
    if config.get("capturable"):  # a CUDA graph replays device work only
        return "capturable=True needs the group's params on one CUDA device"
    return None


CONFIGS, SUPPORTED = _configs()


@pytest.fixture(params=SUPPORTED)
def kwargs(request):
    """One of torch's configs that fastrms runs, a fresh copy (a scheduler may change its lr)."""
    return copy.deepcopy(request.param)


def assert_same(a, b):
    """Nested state dicts (or states) equal, tensors bit for bit and of one dtype."""
    if torch.is_tensor(a):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def problem(seed=0, shape=(10, 5), contiguous=True):
    """torch's tests' problem: weight, bias and input of the loss (weight·x + bias)²."""
    torch.manual_seed(seed)
    if contiguous:
        weight, bias = torch.randn(shape), torch.randn(shape[0])
    else:
        weight, bias = torch.randn(*shape, 2)[..., 0], torch.randn(shape[0], 2)[..., 0]
    return torch.nn.Parameter(weight), torch.nn.Parameter(bias), torch.randn(shape[1])


def closure_of(opt, weight, bias, x):
    """The closure of torch's tests: zero_grad, the loss, backward; returns the loss."""
    def closure():
        opt.zero_grad()
        loss = (weight.mv(x) + bias).pow(2).sum()
        loss.backward()
        return loss
    return closure


def fit(opt, closure, steps=20, schedulers=()):
    """torch's loop: ``steps`` steps, each followed by the schedulers' (ReduceLROnPlateau's with the
    loss); returns the loss before and after."""
    active = [make(opt) for make in schedulers]
    initial = closure().item()
    for _ in range(steps):
        loss = closure()
        opt.step()
        for scheduler in active:
            plateau = isinstance(scheduler, ReduceLROnPlateau)
            scheduler.step(loss.item()) if plateau else scheduler.step()
    return initial, closure().item()


def assert_right_way(config, initial, final):
    """The loss fell, or rose with maximize."""
    assert (final > initial) if config.get("maximize") else (final < initial), (initial, final)


# -- numbers ----------------------------------------------------------------------------------

def run_compare_between(opt_class, config, dtype, **extra):
    """torch's ``_compare_between``: 7 steps, one without gradients, the last layer frozen for two
    (grads None), a 0-d and an empty param beside the model."""
    model = make_mlp(dtype=dtype)
    scalar, empty = (torch.nn.Parameter(torch.full(s, 0.5, dtype=dtype)) for s in ((), (0,)))
    params = [*model.parameters(), scalar, empty]
    opt = opt_class(params, **copy.deepcopy(config), **extra)
    for i in range(7):
        opt.zero_grad()
        model[2].requires_grad_(not 3 <= i < 5)
        if i != 2:
            (loss_of(model) + scalar * scalar + empty.sum()).backward()
        opt.step()
    return params, opt


# float64 only retypes the same loops, and each (option set, loop, dtype) compiles once: float64
# runs the list loops; its flat buffers are test_torch_adapter_state_dict.py's.
@pytest.mark.parametrize("dtype,flatten", [(torch.float32, False), (torch.float32, True),
                                           (torch.float64, False)],
                         ids=["float32-tensors", "float32-flat", "float64-tensors"])
@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_matches_torch(config, dtype, flatten):
    """Params and every state entry (step dtype included) within torch's tolerances of
    torch.optim.RMSprop's; foreach=True steps bit for bit as foreach=False (it has no effect).
    The configs refused by design raise their error, at construction or at the first step."""
    refusal = _refusal(config, flatten)
    if refusal is not None:
        with pytest.raises(ValueError, match=refusal):
            run_compare_between(RMSprop, config, dtype, flatten=flatten)
        return
    theirs, ref = run_compare_between(torch.optim.RMSprop, config, dtype)
    ours, opt = run_compare_between(RMSprop, config, dtype, flatten=flatten)
    foreach, opt_foreach = run_compare_between(RMSprop, {**config, "foreach": True}, dtype,
                                               flatten=flatten)
    for p, q, r in zip(ours, theirs, foreach):
        torch.testing.assert_close(p, q)
        assert torch.equal(p, r)
        assert opt.state[p].keys() == ref.state[q].keys()
        for key, value in ref.state[q].items():
            torch.testing.assert_close(opt.state[p][key], value)
        assert_same(opt.state[p], opt_foreach.state[r])


def test_step_counts_follow_torchs_dtype():
    """Under a float64 default dtype the step counters are float64, as torch's."""
    default = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        for flatten in (False, True):
            p = torch.nn.Parameter(torch.ones(3, dtype=torch.float32))
            p.grad = torch.ones_like(p)
            opt = RMSprop([p], flatten=flatten)
            opt.step()
            assert opt.state[p]["step"].dtype == torch.float64
    finally:
        torch.set_default_dtype(default)


@pytest.mark.parametrize("with_lrsched", [False, True], ids=["", "lrsched"])
@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "strided"])
@flatten_both
def test_goes_the_right_way_as_torch(kwargs, contiguous, with_lrsched, flatten):
    """20 steps, with torch's schedulers or none: the loss falls (rises with maximize), params
    within torch's tolerances of torch's; strided params too (updated where they live)."""
    schedulers = INFO.scheduler_inputs[0] if with_lrsched else ()
    runs = []
    for make, extra in ((torch.optim.RMSprop, {}), (RMSprop, {"flatten": flatten})):
        weight, bias, x = problem(contiguous=contiguous)
        opt = make([weight, bias], **copy.deepcopy(kwargs), **extra)
        losses = fit(opt, closure_of(opt, weight, bias, x), schedulers=schedulers)
        runs.append((losses, weight, bias))
    (_, *theirs), (losses, *ours) = runs
    assert_right_way(kwargs, *losses)
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q)


def test_param_groups_as_torch(kwargs):
    """torch's test_param_groups_weight_decay and test_param_groups_lr: per-group options step as
    torch's; a group at lr 1e-28 stays where it is."""
    no_decay = {**kwargs, "weight_decay": 0.0}
    with_lr = {**kwargs, "lr": kwargs.get("lr") or 1e-3}
    for layout in ("weight_decay", "lr"):
        runs = []
        for make in (torch.optim.RMSprop, RMSprop):
            weight, bias, x = problem()
            irrelevant = torch.nn.Parameter(torch.randn(2))
            if layout == "weight_decay":
                opt = make([dict(params=[weight], **kwargs), dict(params=[bias], **no_decay)])
            else:
                opt = make([dict(params=[weight, bias], **with_lr), dict(params=[irrelevant])],
                           lr=1e-28)
            closure = closure_of(opt, weight, bias, x)
            start, initial = irrelevant.detach().clone(), closure().item()
            for _ in range(20):
                loss = closure()
                irrelevant.grad = torch.rand_like(irrelevant)
                opt.step()
            runs.append(((initial, loss.item()), weight, bias, irrelevant, start))
        (_, *theirs, _), (losses, weight, bias, irrelevant, start) = runs
        assert_right_way(kwargs, *losses)
        torch.testing.assert_close(irrelevant, start)
        for p, q in zip((weight, bias, irrelevant), theirs):
            torch.testing.assert_close(p, q)


def test_tensor_lr_steps_as_float_lr(kwargs):
    """lr as a 0-d tensor steps bit for bit as the same float."""
    runs = []
    for lr in (1e-3, torch.tensor(1e-3)):
        weight, bias, x = problem()
        opt = RMSprop([weight, bias], **{**kwargs, "lr": lr})
        fit(opt, closure_of(opt, weight, bias, x), steps=5)
        runs.append((weight, bias))
    assert_same(*runs)


@flatten_both
def test_complex_params_step_as_real_views(kwargs, flatten):
    """torch's test_complex: complex params (beside a real one) step bit for bit as their real
    views, at every step."""
    torch.manual_seed(0)
    complex_params = [torch.randn(10, 5, dtype=torch.complex64, requires_grad=True),
                      torch.randn(10, dtype=torch.complex64, requires_grad=True),
                      torch.randn(10, 5, requires_grad=True)]
    real_params = [torch.view_as_real(p.detach()).clone().requires_grad_()
                   if p.is_complex() else p.detach().clone().requires_grad_()
                   for p in complex_params]
    complex_opt = RMSprop(complex_params, flatten=flatten, **kwargs)
    real_opt = RMSprop(real_params, flatten=flatten, **copy.deepcopy(kwargs))
    for _ in range(3):
        for p, q in zip(complex_params, real_params):
            q.grad = torch.randn_like(q)
            p.grad = torch.view_as_complex(q.grad.clone()) if p.is_complex() else q.grad.clone()
        complex_opt.step()
        real_opt.step()
        assert_same([torch.view_as_real(p) if p.is_complex() else p for p in complex_params],
                    real_params)


@flatten_both
def test_no_grads_and_zero_grads_change_nothing(kwargs, flatten):
    """torch's test_step_is_noop_when_params_have_no_grad and test_step_is_noop_for_zero_grads
    (the latter without weight decay, which moves params without gradients)."""
    params = [torch.randn(2, 3) for _ in range(2)]
    before = [p.clone() for p in params]
    opt = RMSprop(params, flatten=flatten, **kwargs)
    assert opt.step(lambda: torch.tensor([1.0])).item() == 1.0
    assert_same(params, before)
    assert not opt.state
    if kwargs.get("weight_decay", 0) == 0:
        param = torch.randn(5, 1, requires_grad=True)
        start = param.detach().clone()
        opt = RMSprop([param], flatten=flatten, **kwargs)
        param.grad = torch.zeros_like(param)
        opt.step()
        assert torch.equal(param, start)


def test_state_is_filled_and_the_optimizer_prints(kwargs):
    """torch's test_non_empty_state and test_optimizer_can_be_printed."""
    model = torch.nn.Linear(5, 5)
    opt = RMSprop(model.parameters(), **kwargs)
    model(torch.rand(2, 5)).sum().backward()
    opt.step()
    assert len(opt.state) == 2 and all(len(s) > 0 for s in opt.state.values())
    assert "Parameter Group 0" in repr(opt) and "maximize" in repr(opt)


@flatten_both
def test_closure_and_zero_grad_as_torch(kwargs, flatten):
    """step(closure) returns the closure's loss, computed with gradients enabled; zero_grad sets
    grads to None (torch's default) or to zeros; the numbers stay torch's."""
    model = make_mlp()
    other = twin(model)
    ours = RMSprop(model.parameters(), flatten=flatten, **kwargs)
    ref = torch.optim.RMSprop(other.parameters(), **copy.deepcopy(kwargs))
    for set_to_none in (True, False, True):
        losses = []
        for m, opt in ((model, ours), (other, ref)):
            def closure(m=m, opt=opt):
                opt.zero_grad(set_to_none=set_to_none)
                loss = loss_of(m)
                loss.backward()
                return loss
            losses.append(opt.step(closure))
        torch.testing.assert_close(*losses)
    for p, q in zip(model.parameters(), other.parameters()):
        torch.testing.assert_close(p, q)
    ours.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    ours.zero_grad()
    assert all(p.grad is None for p in model.parameters())


# -- errors -----------------------------------------------------------------------------------

ERRORS = [pytest.param(e, id=e.optimizer_error_input.desc)
          for e in INFO.optim_error_inputs_func(device="cpu", dtype=torch.float32)]


@pytest.mark.parametrize("error", ERRORS)
def test_error_inputs_raise_torchs_errors(error):
    """torch's test_errors: each error input raises (or warns) the expected type and message."""
    given = error.optimizer_error_input
    assert error.error_on.name == "CONSTRUCTION_ERROR"  # all of RMSprop's are
    expect = pytest.warns if issubclass(error.error_type, Warning) else pytest.raises
    with expect(error.error_type, match=error.error_regex):
        RMSprop(given.params, **given.kwargs)


@pytest.mark.parametrize("bad", [
    dict(lr=-1), dict(lr=float("nan")), dict(lr=torch.tensor(-1.0)), dict(eps=-1e-8),
    dict(momentum=-1.0), dict(weight_decay=-0.1), dict(alpha=-0.5), dict(alpha=-1, lr=-1),
    dict(momentum=-1, eps=-1)], ids=lambda bad: ",".join(f"{k}={v}" for k, v in bad.items()))
def test_hyperparameters_are_checked_as_torch_checks_them(bad):
    """Before the params are read (None here): torch's error, message and order of checks."""
    with pytest.raises(ValueError) as theirs:
        torch.optim.RMSprop(None, **bad)
    with pytest.raises(ValueError) as ours:
        RMSprop(None, **bad)
    assert str(ours.value) == str(theirs.value)


# -- state dicts ------------------------------------------------------------------------------

def named(params, is_named):
    return [(f"name{i}", p) for i, p in enumerate(params)] if is_named else params


def without_param_names(state_dict):
    saved = copy.deepcopy(state_dict)
    for group in saved["param_groups"]:
        group.pop("param_names", None)
    return saved


@flatten_both
def test_state_dict_is_deterministic_and_loads_mid_run(kwargs, flatten):
    """torch's test_state_dict_deterministic and test_can_load_from_to_named_state_dict: loaded
    into a new optimizer (params named or not) after 10 steps, both step bit for bit alike for 10
    more and write equal state dicts; param names survive the load."""
    for named0, named1 in itertools.product((False, True), repeat=2):
        weight, bias, x = problem(shape=(2, 3))
        opt = RMSprop(named([weight, bias], named0), flatten=flatten, **copy.deepcopy(kwargs))
        fit(opt, closure_of(opt, weight, bias, x), steps=10)
        with torch.no_grad():
            weight_c, bias_c = torch.nn.Parameter(weight.clone()), torch.nn.Parameter(bias.clone())
        opt_c = RMSprop(named([weight_c, bias_c], named1), flatten=flatten,
                        **copy.deepcopy(kwargs))
        opt_c.load_state_dict(copy.deepcopy(opt.state_dict()))
        for _ in range(10):
            closure_of(opt, weight, bias, x)()
            closure_of(opt_c, weight_c, bias_c, x)()
            opt.step(), opt_c.step()
            assert_same([weight, bias], [weight_c, bias_c])
        assert_same(without_param_names(opt.state_dict()), without_param_names(opt_c.state_dict()))
        if named0 or named1:
            assert opt_c.state_dict()["param_groups"][0]["param_names"] == ["name0", "name1"]
        opt_c.param_groups.extend(opt_c.param_groups)  # a repeated group is written the same
        assert_same(without_param_names(opt.state_dict())["param_groups"][-1],
                    without_param_names(opt_c.state_dict())["param_groups"][-1])


@flatten_both
def test_state_dict_into_torch_and_back(kwargs, flatten):
    """torch's state dict loaded mid-run, then ours into torch: both continue within torch's
    tolerances, and our state dict is torch's (plus the "fastrms" entry)."""
    model = make_mlp()
    ref = torch.optim.RMSprop(model.parameters(), **copy.deepcopy(kwargs))
    for _ in range(3):
        train_step(model, ref)
    other = twin(model)
    ours = RMSprop(other.parameters(), flatten=flatten, **copy.deepcopy(kwargs))
    ours.load_state_dict(copy.deepcopy(ref.state_dict()))
    back = twin(other)
    ref_back = torch.optim.RMSprop(back.parameters(), **copy.deepcopy(kwargs))
    ref_back.load_state_dict(copy.deepcopy(ours.state_dict()))
    for _ in range(3):
        train_step(model, ref), train_step(other, ours), train_step(back, ref_back)
    saved, theirs = ours.state_dict(), ref.state_dict()
    assert saved.pop("fastrms")["flatten"] == flatten
    assert saved["param_groups"] == theirs["param_groups"]
    torch.testing.assert_close(saved["state"], theirs["state"])
    torch.testing.assert_close(ref_back.state_dict()["state"], theirs["state"])
    for p, q, r in zip(other.parameters(), model.parameters(), back.parameters()):
        torch.testing.assert_close(p, q)
        torch.testing.assert_close(r, q)


@flatten_both
def test_older_state_dicts_load(kwargs, flatten):
    """torch's test_can_load_older_state_dict and test_load_nontensor_step: without the flags
    added after RMSprop's first release, with Python-number steps, without our entry."""
    model = make_mlp()
    opt = RMSprop(model.parameters(), flatten=flatten, **kwargs)
    for _ in range(3):
        train_step(model, opt)
    old = copy.deepcopy(opt.state_dict())
    del old["fastrms"]
    for group in old["param_groups"]:
        for flag in INFO.not_og_supported_flags:
            group.pop(flag, None)
    for state in old["state"].values():
        state["step"] = state["step"].item()
    opt.load_state_dict(old)
    train_step(model, opt)
    assert [s["step"].item() for s in opt.state.values()] == [4.0] * 4
    assert {flag: opt.param_groups[0][flag] for flag in INFO.not_og_supported_flags} == dict(
        foreach=None, differentiable=False, maximize=False, capturable=False)


@flatten_both
def test_state_dict_saves_and_loads_weights_only(kwargs, flatten):
    """torch's test_save_load_equality_with_weights_only."""
    model = make_mlp()
    opt = RMSprop(model.named_parameters(), flatten=flatten, **kwargs)
    for _ in range(3):
        train_step(model, opt)
    saved = opt.state_dict()
    for weights_only in (False, True):
        buffer = io.BytesIO()
        torch.save(saved, buffer)
        buffer.seek(0)
        assert_same(torch.load(buffer, weights_only=weights_only), saved)


# -- copies -----------------------------------------------------------------------------------

COPIES = {"deepcopy": copy.deepcopy, "pickle": lambda opt: pickle.loads(pickle.dumps(opt))}


def storages(opt):
    """The addresses of the memory of an optimizer's params and state tensors."""
    tensors = [p for g in opt.param_groups for p in g["params"]] + [
        v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    return {t.untyped_storage().data_ptr() for t in tensors}


@pytest.mark.parametrize("copier", COPIES.values(), ids=COPIES)
@flatten_both
def test_copies_keep_settings_and_step_on_their_own_memory(kwargs, flatten, copier):
    """torch's test_deepcopy_copies_all_public_attrs, then a step: a deep copy or a pickle round
    trip keeps every public attribute (flatten, backend, threads too) and steps bit for bit as
    the original, on memory of its own (with flatten=True, in a flat buffer of its own)."""
    model = make_mlp()
    opt = RMSprop(model.parameters(), flatten=flatten, threads=1, **kwargs)
    for _ in range(3):
        train_step(model, opt)
    clone = copier(opt)
    public = {k for k in vars(opt) if not k.startswith("_")}
    assert {k for k in vars(clone) if not k.startswith("_")} == public
    assert (clone.flatten, clone.backend, clone.threads) == (flatten, "auto", 1)
    assert not storages(clone) & storages(opt)
    originals, copies = list(model.parameters()), clone.param_groups[0]["params"]
    if flatten:
        assert len({p.untyped_storage().data_ptr() for p in copies}) == 1
    before = [p.detach().clone() for p in originals]
    grads = [torch.randn_like(p) for p in originals]
    for p, g in zip(copies, grads):
        p.grad = g.clone()
    clone.step()
    assert_same(originals, before)
    for p, g in zip(originals, grads):
        p.grad = g.clone()
    opt.step()
    assert_same(originals, copies)
    assert_same([opt.state[p] for p in originals], [clone.state[p] for p in copies])


# -- hooks ------------------------------------------------------------------------------------

def mark_state(opt):
    opt.state["test"] = 1


def unmark_state(opt, state_dict):
    state_dict["ran_state_dict_pre_hook"] = state_dict["state"].pop("test", None) is not None
    return state_dict


@flatten_both
def test_state_dict_hooks(kwargs, flatten):
    """torch's test_state_dict_pre_hook, _post_hook and _pre_post_hook: a pre-hook's non-tensor
    entry in ``opt.state`` is written as it is; the optimizer still steps."""
    param = torch.rand(2, 3, requires_grad=True)
    opt = RMSprop([param], flatten=flatten, **kwargs)
    opt.register_state_dict_pre_hook(mark_state)
    assert opt.state_dict()["state"]["test"] == 1
    post_only = RMSprop([torch.rand(2, requires_grad=True)], **kwargs)
    post_only.register_state_dict_post_hook(unmark_state)
    assert post_only.state_dict()["ran_state_dict_pre_hook"] is False
    opt.register_state_dict_post_hook(unmark_state)
    saved = opt.state_dict()
    assert "test" not in saved["state"] and saved["ran_state_dict_pre_hook"]
    param.grad = torch.ones_like(param)
    opt.step()
    assert opt.state[param]["step"].item() == 1 and opt.state_dict()["state"][0]["step"] == 1


def set_lr(opt, state_dict):
    state_dict["param_groups"][0]["lr"] = 0.002


def copy_with_lr(opt, state_dict):
    state_dict = copy.deepcopy(state_dict)
    state_dict["param_groups"][0]["lr"] = 0.003
    return state_dict


def note_load(opt):
    opt.state["ran_load_state_dict_pre_hook2"] = opt.param_groups[0]["lr"] == 0.003
    opt.state["ran_load_state_dict_post_hook"] = True


@flatten_both
def test_load_state_dict_hooks(kwargs, flatten):
    """torch's test_load_state_dict_pre_hook_and_prepend, _post_hook and _pre_post_hook; the
    post-hook's entries in ``opt.state`` then survive a step and a state dict."""
    param = torch.rand(2, 3, requires_grad=True)
    opt = RMSprop([param], flatten=flatten, **kwargs)
    saved = opt.state_dict()
    opt.register_load_state_dict_pre_hook(set_lr)
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["lr"] == 0.002
    opt.register_load_state_dict_pre_hook(copy_with_lr, prepend=True)
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["lr"] == 0.002
    for pre_hooks, ran_pre in (((), False), ((copy_with_lr,), True)):
        other = RMSprop([param], flatten=flatten, **kwargs)
        for hook in pre_hooks:
            other.register_load_state_dict_pre_hook(hook)
        other.register_load_state_dict_post_hook(note_load)
        other.load_state_dict(other.state_dict())
        assert other.state["ran_load_state_dict_pre_hook2"] is ran_pre
        assert other.state["ran_load_state_dict_post_hook"] is True
    param.grad = torch.ones_like(param)
    other.step()
    assert other.state_dict()["state"]["ran_load_state_dict_post_hook"] is True


def test_step_hooks_fire_in_torchs_order(kwargs):
    """torch's test_step_pre_hook, _post_hook and _all_hooks: global pre, local pre, the step,
    local post, global post; none after removal."""
    params = [torch.tensor([1.0, 1.0])]
    opt, other = RMSprop(params, **kwargs), torch.optim.SGD(params)
    calls = []
    handles = [register_optimizer_step_pre_hook(lambda *_: calls.append(0)),
               register_optimizer_step_post_hook(lambda *_: calls.append(5)),
               opt.register_step_pre_hook(lambda *_: calls.append(1)),
               opt.register_step_post_hook(lambda *_: calls.append(2))]
    try:
        opt.step(), other.step(), opt.step()
    finally:
        for handle in handles:
            handle.remove()
    opt.step()
    assert calls == [0, 1, 2, 5, 0, 5, 0, 1, 2, 5]
