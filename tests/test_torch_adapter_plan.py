"""The unflattened step's plan (fastrms.torch.step_plan): reusing it gives the bits a full rebuild
gives, whatever changed between steps; params in any memory format; grads checked every step."""

import pytest

torch = pytest.importorskip("torch")

from fastrms.torch import RMSprop  # noqa: E402

KW = dict(lr=1e-2, momentum=0.9, centered=True, weight_decay=0.01)


def params_of_every_layout():
    """A square matrix, a channels_last conv weight, a transpose (dense, not contiguous), a
    strided view with gaps, and a complex vector."""
    torch.manual_seed(0)
    base = torch.randn(5, 12)
    return [torch.nn.Parameter(t) for t in (
        torch.randn(4, 4),
        torch.randn(8, 3, 3, 3).to(memory_format=torch.channels_last),
        torch.randn(6, 4).t(),
        base[:, ::3],
        torch.randn(7, dtype=torch.complex64),
    )]


def contiguous_twins(params):
    return [torch.nn.Parameter(p.detach().contiguous().clone()) for p in params]


def set_grads(params, seed):
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)


def test_every_memory_format_steps_as_its_contiguous_twin():
    params = params_of_every_layout()
    strides = [p.stride() for p in params]
    twins = contiguous_twins(params)
    ours, ref = RMSprop(params, **KW), RMSprop(twins, **KW)
    for seed in range(3):
        set_grads(params, seed)
        set_grads(twins, seed)
        ours.step()
        ref.step()
    for p, q, stride in zip(params, twins, strides):
        assert p.stride() == stride  # updated where it lives, no re-layout
        assert torch.equal(p, q)
        for name in ("square_avg", "momentum_buffer", "grad_avg"):
            assert torch.equal(ours.state[p][name], ref.state[q][name])


def test_state_has_torch_layout():
    """State buffers take the param's strides where it is dense (torch's preserve_format)."""
    params = params_of_every_layout()
    torch_params = contiguous_twins(params)
    for p, q in zip(torch_params, params):
        p.data = q.detach().clone(memory_format=torch.preserve_format)
    ours, ref = RMSprop(params, **KW), torch.optim.RMSprop(torch_params, **KW)
    set_grads(params, 0)
    set_grads(torch_params, 0)
    ours.step()
    ref.step()
    for p, q in zip(params[:3], torch_params[:3]):  # the dense ones
        assert ours.state[p]["square_avg"].stride() == ref.state[q]["square_avg"].stride() \
            == p.stride()


def test_gapped_param_writes_through_to_its_base():
    base = torch.zeros(4, 6)
    p = torch.nn.Parameter(base[:, ::2])
    p.grad = torch.ones_like(p)
    RMSprop([p], lr=0.1).step()
    assert (base[:, ::2] < 0).all() and (base[:, 1::2] == 0).all()


def forced_rebuild(opt):
    """Step ``opt`` as if it had never planned: the reference for a reused plan."""
    opt._plans.clear()
    opt.step()


def swap_memory(t):
    t.data = t.detach().clone()


def reset_state(params, opt):
    opt.state.clear()


CHANGES = {
    "set_to_none": lambda params, opt: None,
    "state_reset": reset_state,
    "param_state_replaced": lambda params, opt: opt.state.__setitem__(params[1], {}),
    "state_memory_swapped": lambda params, opt: swap_memory(opt.state[params[1]]["square_avg"]),
    "param_transposed_in_place": lambda params, opt: setattr(params[0], "data",
                                                             params[0].detach().t()),
    "grad_conjugated_lazily": lambda params, opt: setattr(params[4], "grad",
                                                          params[4].grad.conj()),
    "param_memory_replaced": lambda params, opt: setattr(params[0], "data",
                                                         params[0].detach().clone()),
    "state_tensor_replaced": lambda params, opt: opt.state[params[1]].__setitem__(
        "square_avg", opt.state[params[1]]["square_avg"].clone() * 2),
    "grad_lost": lambda params, opt: setattr(params[2], "grad", None),
    "grad_of_other_strides": lambda params, opt: setattr(
        params[0], "grad", params[0].grad.t().contiguous().t()),
    "momentum_turned_off": lambda params, opt: opt.param_groups[0].__setitem__("momentum", 0),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_reused_plan_gives_the_bits_of_a_rebuilt_one(change):
    """Three steps with grads reallocated each step, ``change`` applied before the third: the
    planned optimizer equals one that rebuilds its plan every step, to the bit."""
    params = params_of_every_layout()
    twins = [torch.nn.Parameter(p.detach().clone(memory_format=torch.preserve_format))
             for p in params]
    planned, rebuilt = RMSprop(params, **KW), RMSprop(twins, **KW)
    for seed in range(3):
        set_grads(params, seed)
        set_grads(twins, seed)
        if seed == 2:
            CHANGES[change](params, planned)
            CHANGES[change](twins, rebuilt)
        planned.step()
        forced_rebuild(rebuilt)
    for p, q in zip(params, twins):
        assert torch.equal(p, q)
        assert planned.state[p].keys() == rebuilt.state[q].keys()
        for name, value in planned.state[p].items():
            assert torch.equal(value, rebuilt.state[q][name]), name


def test_grad_overlapping_a_param_is_refused_on_a_planned_step():
    a, b = torch.nn.Parameter(torch.randn(8)), torch.nn.Parameter(torch.randn(8))
    opt = RMSprop([a, b])
    a.grad, b.grad = torch.ones(8), torch.ones(8)
    opt.step()  # the plan is built
    a.grad = b.detach()  # shares b's memory, which the step writes
    before = [t.clone() for t in (a, b, opt.state[a]["square_avg"], opt.state[b]["square_avg"])]
    with pytest.raises(ValueError, match="overlap"):
        opt.step()
    after = (a, b, opt.state[a]["square_avg"], opt.state[b]["square_avg"])
    assert all(torch.equal(x, y) for x, y in zip(before, after))
    a.grad = torch.ones(8)
    opt.step()  # recovers once the grad is its own buffer again
    assert opt.state[a]["step"].item() == 2


def test_params_whose_memory_cannot_be_updated_in_place_are_refused_before_any_write():
    """An expanded param (its elements share memory), and strided views whose memory extents
    interleave: refused, naming the param, with nothing written."""
    base = torch.zeros(4, 6)
    cases = {"share memory": [torch.nn.Parameter(torch.zeros(1).expand(3))],
             "strided view with gaps": [torch.nn.Parameter(base[:, 0:3]),
                                        torch.nn.Parameter(base[:, 1:4])]}
    for message, odd in cases.items():
        plain = torch.nn.Parameter(torch.ones(5))
        params = [plain, *odd]
        for p in params:
            p.grad = torch.ones_like(p)
        with pytest.raises(ValueError, match=message):
            RMSprop(params).step()
        assert torch.equal(plain, torch.ones(5)) and torch.equal(base, torch.zeros(4, 6))


def test_grad_aliasing_a_gapped_param_is_refused():
    base = torch.zeros(4, 6)
    p = torch.nn.Parameter(base[:, ::2])
    p.grad = torch.ones_like(p)
    opt = RMSprop([p])
    opt.step()
    p.grad = base.view(-1)[1:13].view(4, 3)  # the param's strides, inside its extent
    with pytest.raises(ValueError, match="overlap"):
        opt.step()


def test_capturable_set_later_on_cpu_params_is_refused_not_run_with_a_placeholder_lr():
    p = torch.nn.Parameter(torch.ones(5))
    opt = RMSprop([p], lr=torch.tensor(0.01))
    p.grad = torch.ones(5)
    opt.step()
    opt.param_groups[0]["capturable"] = True  # as torch.compile does on CUDA groups
    before = p.detach().clone()
    with pytest.raises(ValueError, match="capturable=True needs"):
        opt.step()
    assert torch.equal(p, before)


def test_operator_plan_keeps_no_tensor_alive():
    """The operator's cached plan holds neither the params and state nor the grads' memory."""
    import gc

    from torch.multiprocessing.reductions import StorageWeakRef

    tensors = [torch.randn(8) for _ in range(3)]
    torch.ops.fastrms.rmsprop_([tensors[0]], [tensors[1]], [tensors[2].abs()], [], [])
    refs = [StorageWeakRef(t.untyped_storage()) for t in tensors]
    del tensors
    gc.collect()
    assert all(ref.expired() for ref in refs)


def test_flat_step_with_capturable_set_later_uses_the_groups_lr():
    """torch.compile sets capturable=True on CUDA groups; a flattened group then still steps
    eagerly (uncaptured) with its own lr, as one without the flag."""
    params = [torch.nn.Parameter(torch.ones(5)) for _ in range(2)]
    flagged, plain = (RMSprop([p], lr=torch.tensor(0.01), flatten=True) for p in params)
    flagged.param_groups[0]["capturable"] = True
    for p, opt in zip(params, (flagged, plain)):
        p.grad = torch.ones(5)
        opt.step()
    assert torch.equal(params[0], params[1]) and not torch.equal(params[0], torch.ones(5))
