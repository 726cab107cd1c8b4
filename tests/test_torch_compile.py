"""torch.compile and the torch operator: a compiled step goes through torch.ops.fastrms.rmsprop_,
in place, equals the eager step to the bit, breaks the graph no more often than torch's own
RMSprop and does not recompile after warm-up when an LR scheduler changes a tensor lr."""

import pytest

torch = pytest.importorskip("torch")

import fastrms  # noqa: E402
from fastrms.torch import RMSprop  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402
from torch._inductor.utils import run_and_get_code  # noqa: E402

KW = dict(momentum=0.9, centered=True, weight_decay=0.01)


def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def trainer(make_optimizer):
    """A model, its optimizer with a tensor lr and an LR scheduler, and one training step."""
    model = make_model()
    opt = make_optimizer(model.parameters(), lr=torch.tensor(0.01), **KW)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))

    def step():
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    return model, opt, scheduler, step


def test_compiled_training_step_equals_eager_in_place_without_recompiles():
    """A whole compiled training step (forward, backward, step); the eager optimizer steps with
    the compiled step's grads (inductor's backward rounds differently from eager's)."""
    model, opt, scheduler, step = trainer(RMSprop)
    eager_model, eager_opt, eager_scheduler, _ = trainer(RMSprop)
    compiled = torch.compile(step)
    torch._dynamo.reset()
    codes = []
    for i in range(4):
        with torch._dynamo.config.patch(error_on_recompile=i >= 2):  # warm-up: state, then steady
            codes += run_and_get_code(compiled)[1]
        scheduler.step()
        for p, q in zip(model.parameters(), eager_model.parameters()):
            q.grad = p.grad.clone()
        eager_opt.step()
        eager_scheduler.step()
    for p, q in zip(model.parameters(), eager_model.parameters()):
        assert torch.equal(p, q)
        assert opt.state[p].keys() == eager_opt.state[q].keys()
        for name, value in opt.state[p].items():
            assert torch.equal(value, eager_opt.state[q][name]), name
    calls = [c for c in codes if "torch.ops.fastrms.rmsprop_" in c]
    assert calls, "the compiled step does not call the operator"
    for code in calls:  # inductor updates the buffers in place: no functionalisation copies
        assert ".copy_(" not in code and "clone" not in code


def graph_breaks(make_optimizer, steps=4):
    """Graph breaks of ``torch.compile(lambda: opt.step())`` over ``steps`` training steps with a
    scheduler, and whether steps after the second recompiled."""
    model, opt, scheduler, _ = trainer(make_optimizer)
    x = torch.randn(32, 8)
    compiled = torch.compile(lambda: opt.step())
    torch._dynamo.reset()
    counters.clear()
    for i in range(steps):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        with torch._dynamo.config.patch(error_on_recompile=i >= 2):
            compiled()
        scheduler.step()
    return sum(counters["graph_break"].values())


def test_graph_breaks_no_more_than_torch_rmsprop():
    ours, theirs = graph_breaks(RMSprop), graph_breaks(torch.optim.RMSprop)
    assert ours <= theirs, (ours, theirs)


def lists(seed, n=3):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(5 + j, generator=gen) for j in range(n)]


def test_operator_equals_rmsprop_update():
    """The operator with the book's convention is ``rmsprop_update`` over lists, to the bit;
    ``lr_tensor`` replaces ``lr``."""
    params, grads = lists(0), lists(1)
    squares, buffers = [g.abs() for g in lists(2)], lists(3)
    mine = [[t.clone() for t in ts] for ts in (params, squares, buffers)]
    torch.ops.fastrms.rmsprop_(mine[0], grads, mine[1], mine[2], [],
                               lr_tensor=torch.tensor(0.05), momentum=0.9, alpha=0.95)
    fastrms.rmsprop_update(params, grads, squares, lr=0.05, momentum=0.9, alpha=0.95,
                           momentum_buffer=buffers)
    for ours, theirs in zip(mine, (params, squares, buffers)):
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_operator_refuses_tracked_leaf_under_grad_mode_and_writes_nothing():
    params = [torch.nn.Parameter(t) for t in lists(0)]
    grads, squares = lists(1), [torch.zeros(5 + j) for j in range(3)]
    before = [t.detach().clone() for t in params + squares]
    with pytest.raises(RuntimeError, match=r"params\[0\]: a leaf Variable that requires grad"):
        torch.ops.fastrms.rmsprop_(params, grads, squares, [], [])
    assert all(torch.equal(a, b) for a, b in zip(before, params + squares))
    with torch.no_grad():
        torch.ops.fastrms.rmsprop_(params, grads, squares, [], [])
    assert not torch.equal(before[0], params[0])


def test_operator_checks_like_rmsprop_update():
    params, grads = lists(0), lists(1)
    squares = [torch.zeros(5), torch.zeros(6), torch.zeros(3)]  # the last one's shape is wrong
    with pytest.raises(ValueError, match=r"square_avg\[2\] has shape"):
        torch.ops.fastrms.rmsprop_(params, grads, squares, [], [])
    assert all(torch.equal(s, torch.zeros_like(s)) for s in squares)


def test_operator_plan_follows_new_tensors_and_moved_memory():
    """The operator keeps a plan per set of tensors: a call with other state tensors, or after a
    param's memory moved, gives the bits of a fresh ``rmsprop_update``."""
    params, squares = lists(0), [g.abs() for g in lists(2)]
    twins = [[t.clone() for t in ts] for ts in (params, squares)]
    for seed in (1, 2, 3):
        if seed == 2:
            squares = [s.clone() for s in squares]  # new state tensors: another plan
        if seed == 3:
            params[0].data = params[0].clone()  # moved memory: the plan is rebuilt
        grads = lists(seed)
        torch.ops.fastrms.rmsprop_(params, grads, squares, [], [], lr=0.05)
        fastrms.rmsprop_update(twins[0], grads, twins[1], lr=0.05)
    for ours, theirs in zip((params, squares), twins):
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
