"""Mixed precision in the torch adapter (docs/mixed-precision.md): GradScaler's contract, clipping,
master weights and stochastic rounding, against torch.optim.RMSprop and fastrms's own paths."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastrms.torch import RMSprop  # noqa: E402

INF_AT = (3, 7)  # steps whose gradient gets an inf (GradScaler then skips them)


def _mlp(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    return model.to(dtype)


def _data(dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 8, generator=g).to(dtype), torch.randn(32, 1, generator=g).to(dtype)


def _train(make_opt, steps=10, scaler=True, clip=None, unscale=False, dtype=torch.float32):
    """Params after each step of a small MLP (inf injected at INF_AT), and the optimizer."""
    model = _mlp(dtype=dtype)
    opt = make_opt(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=4) if scaler \
        else None
    x, y = _data(dtype)
    history = []
    for step in range(1, steps + 1):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        (scaler.scale(loss) if scaler else loss).backward()
        if step in INF_AT:
            model[0].weight.grad[0, 0] = float("inf")
        if scaler is not None:
            if unscale or clip is not None and not isinstance(opt, RMSprop):
                scaler.unscale_(opt)
            if clip is not None and not isinstance(opt, RMSprop):
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            scaler.step(opt)
            scaler.update()
        else:
            if clip is not None and not isinstance(opt, RMSprop):
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
        history.append([p.detach().clone() for p in model.parameters()])
    return history, opt


@pytest.mark.parametrize("unscale", [False, True], ids=["fused-unscale", "explicit-unscale_"])
@pytest.mark.parametrize("clip", [None, 0.05], ids=["no-clip", "clip"])
def test_grad_scaler_matches_torch_step_for_step(unscale, clip):
    ours, opt = _train(lambda ps: RMSprop(ps, lr=0.01, momentum=0.5, max_grad_norm=clip),
                       clip=clip, unscale=unscale)
    theirs, ref = _train(lambda ps: torch.optim.RMSprop(ps, lr=0.01, momentum=0.5), clip=clip,
                         unscale=unscale)
    for step, (a, b) in enumerate(zip(ours, theirs), start=1):
        for p, q in zip(a, b):
            torch.testing.assert_close(p, q, rtol=2e-5, atol=1e-6, msg=f"step {step}")
        if step in INF_AT:  # skipped: exactly the params of the step before
            assert all(torch.equal(p, q) for p, q in zip(a, ours[step - 2]))
    steps = {float(s["step"]) for s in opt.state.values()}
    assert steps == {float(s["step"]) for s in ref.state.values()} == {10.0 - len(INF_AT)}
    assert opt.skipped_steps == len(INF_AT)  # GradScaler hands its verdict to every step


def test_clipping_without_scaler_matches_clip_grad_norm_and_skips_inf():
    ours, opt = _train(lambda ps: RMSprop(ps, lr=0.01, max_grad_norm=0.05), scaler=False,
                       clip=0.05)
    theirs, _ = _train(lambda ps: torch.optim.RMSprop(ps, lr=0.01), scaler=False, clip=0.05)
    for step, (a, b) in enumerate(zip(ours, theirs), start=1):
        if step >= INF_AT[0]:  # torch's clip turns the inf into NaN params; ours skips
            break
        for p, q in zip(a, b):
            torch.testing.assert_close(p, q, rtol=2e-5, atol=1e-6)
    assert opt.skipped_steps == len(INF_AT)
    assert all(torch.isfinite(p).all() for p in ours[-1])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("flatten", [False, True])
def test_master_is_a_float32_run_on_the_widened_grads(dtype, flatten):
    """The master equals, bit for bit, float32 params stepped with the half grads widened; the
    half param is its nearest-even copy."""
    torch.manual_seed(0)
    half = [torch.nn.Parameter(torch.randn(n).to(dtype)) for n in (5, 300, 17)]
    wide = [torch.nn.Parameter(p.detach().float()) for p in half]
    ours = RMSprop(half, lr=0.01, momentum=0.9, centered=True, master_weights=True,
                   flatten=flatten)
    plain = RMSprop(wide, lr=0.01, momentum=0.9, centered=True)
    for _ in range(4):
        for p, w in zip(half, wide):
            p.grad = torch.randn(p.shape).to(dtype)
            w.grad = p.grad.float()
        ours.step()
        plain.step()
    for p, w in zip(half, wide):
        master = ours.state[p]["master_param"]
        assert master.dtype == torch.float32 and torch.equal(master, w.detach())
        assert torch.equal(p.detach(), w.detach().to(dtype))
    saved = ours.state_dict()["state"][0]
    assert torch.equal(saved["master_param"], ours.state[half[0]]["master_param"])


@pytest.mark.parametrize("master", [False, True])
def test_stochastic_rounding_same_bits_flat_lists_and_arrays(master):
    """flatten=True, the unflattened step and rmsprop_update with each tensor's offset give the
    same bits: element i of the param at position j draws counter j·2⁴⁰ + i."""
    import fastrms
    from fastrms.rounding import offset_of

    sizes = (3, 4097, 64)
    results = []
    for how in ("flat", "lists", "arrays"):
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(n).bfloat16()) for n in sizes]
        grads = [torch.randn(n).bfloat16() for n in sizes]
        if how == "arrays":
            states = [torch.zeros(n) for n in sizes]
            masters = [p.detach().float() for p in params]
            for t in (1, 2):
                for j, (p, g, s, w) in enumerate(zip(params, grads, states, masters)):
                    fastrms.rmsprop_update(p.data, g, s, lr=0.01, alpha=0.99, eps=1e-8,
                                           eps_in_sqrt=False, rounding="stochastic", seed=5,
                                           step=t, offset=offset_of(j),
                                           master_param=w if master else None)
        else:
            opt = RMSprop(params, lr=0.01, rounding="stochastic", seed=5, master_weights=master,
                          flatten=how == "flat")
            for _ in (1, 2):
                for p, g in zip(params, grads):
                    p.grad = g.clone()
                opt.step()
        results.append([p.detach().view(torch.int16).clone() for p in params])
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))
    nearest = [p.detach() for p in params]  # differs from nearest-even rounding somewhere
    assert len(results[0]) == len(nearest)


def test_bad_options_are_clear_errors():
    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="rounding"):
        RMSprop([p], rounding="up")
    with pytest.raises(ValueError, match="max_grad_norm"):
        RMSprop([p], max_grad_norm=-1.0)
    with pytest.raises(ValueError, match="seed"):
        RMSprop([p], seed=-1)


def test_half_params_without_master_match_the_reference():
    """bfloat16 params on the CPU, no master: each step widens, updates and rounds to nearest
    even, as the NumPy reference does."""
    import fastrms

    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(1000).bfloat16())
    ref = p.detach().clone()
    s = torch.zeros(1000)
    opt = RMSprop([p], lr=0.01)
    for _ in range(3):
        g = torch.randn(1000).bfloat16()
        p.grad = g
        opt.step()
        fastrms.rmsprop_update(ref, g, s, lr=0.01, alpha=0.99, eps=1e-8, eps_in_sqrt=False,
                               backend="numpy")
    assert torch.equal(p.detach().view(torch.int16), ref.view(torch.int16))
    assert np.isfinite(p.detach().float().numpy()).all()


# -- on a CUDA device (marked gpu: they skip here, with the reason, and run where one is lent) --

def _cuda_train(make_opt, steps=6):
    model = _mlp().cuda()
    opt = make_opt(model.parameters())
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 12, growth_interval=2)
    x, y = (t.cuda() for t in _data())
    out = []
    for step in range(1, steps + 1):
        opt.zero_grad()
        scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
        if step == 3:
            model[0].weight.grad[0, 0] = float("inf")
        scaler.step(opt)
        scaler.update()
        out.append([p.detach().cpu() for p in model.parameters()])
    return out, opt


@pytest.mark.gpu
@pytest.mark.parametrize("clip", [None, 0.05])
def test_cuda_grad_scaler_matches_torch_without_host_sync(clip):
    from conftest import require_torch_cuda

    require_torch_cuda()
    ours, opt = _cuda_train(lambda ps: RMSprop(ps, lr=0.01, max_grad_norm=clip))
    theirs, ref = _cuda_train(lambda ps: torch.optim.RMSprop(ps, lr=0.01))
    if clip is None:  # (torch's side of the clipped run clips in _train's way: compare steps)
        for a, b in zip(ours, theirs):
            for p, q in zip(a, b):
                torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(p, q) for p, q in zip(ours[2], ours[1]))  # the inf step skipped
    steps = {float(s["step"]) for s in opt.state.values()}  # counted on the device
    assert steps == {5.0} and opt.skipped_steps == 1
    torch.cuda.set_sync_debug_mode("error")  # a step reads the verdict on the device only
    try:
        for p in opt.param_groups[0]["params"]:
            p.grad = torch.ones_like(p)
        opt.grad_scale, opt.found_inf = torch.ones((), device="cuda"), torch.zeros((), device="cuda")
        opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
        del opt.grad_scale, opt.found_inf


@pytest.mark.gpu
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_cuda_half_params_with_master_equal_the_cpu_step(rounding):
    """The same bfloat16 params, masters and grads stepped on CUDA and on the CPU: the same bits
    (the kernels' element math is the reference's; CuPy's flush-to-zero aside, no denormals)."""
    from conftest import require_torch_cuda

    require_torch_cuda()
    results = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(n).bfloat16().to(device)) for n in (7, 5000)]
        opt = RMSprop(params, lr=0.01, momentum=0.9, master_weights=True, rounding=rounding,
                      seed=3)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape).bfloat16().to(device)
            opt.step()
        results.append([p.detach().cpu().view(torch.int16) for p in params] +
                       [opt.state[p]["master_param"].cpu() for p in params])
    assert all(torch.equal(a, b) for a, b in zip(*results))
