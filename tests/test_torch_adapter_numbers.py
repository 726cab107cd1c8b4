"""fastrms.torch.RMSprop against torch.optim.RMSprop, in numbers: one step within ulps, 100-step
loss curves within 1%, complex params."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from adapter_cases import (  # noqa: E402
    OPTIONS, device, flatten_both, loss_curve, loss_of, make_mlp, mean_relative_difference,
    option_id, train_step, twin)
from fastrms.torch import RMSprop  # noqa: E402
from bounds import step_terms, worst_ulps  # noqa: E402



def step_error_ratio(kw, flatten, device="cpu"):
    """One step from identical params, grads and state; the worst error over its bound.

    The bound per element is one float32 ulp of the magnitude of the terms each buffer sums
    (|x| + lr·|b| for the param, and so on, propagated through the root), so that sums that
    cancel are judged by what they add up, not by their small result.
    """
    ours_model, ref_model = make_mlp(device=device), make_mlp(device=device)
    ref = torch.optim.RMSprop(ref_model.parameters(), **kw)
    for _ in range(3):  # a warm state
        train_step(ref_model, ref)
    ours_model.load_state_dict(ref_model.state_dict())
    ours = RMSprop(ours_model.parameters(), flatten=flatten, **kw)
    ours.load_state_dict(copy.deepcopy(ref.state_dict()))
    ref.zero_grad()
    loss_of(ref_model).backward()
    before = [(p.detach().double().clone(), p.grad.double().clone(),
               {k: v.double().clone() for k, v in ref.state[p].items() if k != "step"})
              for p in ref_model.parameters()]
    for p, q in zip(ours_model.parameters(), ref_model.parameters()):
        p.grad = q.grad.clone()
    ref.step()
    ours.step()
    worst = 0.0
    for (x, g, s0), p, q in zip(before, ours_model.parameters(), ref_model.parameters()):
        terms = step_terms(kw, x.cpu().numpy(), g.cpu().numpy(),
                           {k: v.cpu().numpy() for k, v in s0.items()})
        ours_state, ref_state = ours.state[p], ref.state[q]
        assert ours_state["step"].item() == ref_state["step"].item() == 4
        pairs = {"param": (p, q)} | {k: (ours_state[k], ref_state[k]) for k in terms if k != "param"}
        for name, (mine, theirs) in pairs.items():
            worst = max(worst, worst_ulps(mine.detach().cpu().numpy(),
                                          theirs.detach().cpu().numpy(), terms[name]))
    return worst


@flatten_both
def test_one_step_matches_torch_within_ulps(flatten, device):
    """All 128 option combinations: params and every state buffer within 4 ulps of the terms."""
    ratios = {option_id(kw): step_error_ratio(kw, flatten, device) for kw in OPTIONS}
    worst = max(ratios, key=ratios.get)
    assert ratios[worst] <= 4, (worst, ratios[worst])


def curve_bound(kw, device):
    """The loss-curve bound: 1%, but 2% on CUDA where the centered variance cancels.

    torch's CUDA kernels fuse multiply-adds (square and grad averages, s − a², the addcdiv);
    fastrms rounds every product (no FMA: bitwise equal to the reference, docs/design.md §4). With
    alpha 0.3 and eps 1e-8 a centered v = s − a² is a small difference of large terms that
    amplifies those roundings: measured on an H200 (torch 2.11, docs/loss-curve-spread-h200.txt),
    one such combination's curves differ by 1.2% (torch's own CPU and CUDA curves by 0.5%);
    every other stays within 0.6%. The one-step test holds there to 4 ulps.
    """
    cancels = kw["centered"] and kw["alpha"] == 0.3 and kw["eps"] == 1e-8
    return 0.02 if device == "cuda" and cancels else 0.01


@flatten_both
def test_loss_curves_stay_close_over_100_steps(flatten, device):
    """Every option combination: mean relative difference of the loss curves ≤ 1% (see
    ``curve_bound`` for the one class of CUDA exceptions)."""
    worst = (0.0, 0.0, None)
    for kw in OPTIONS:
        ours_model = make_mlp(seed=3, device=device)
        ref_model = twin(ours_model)
        ours = RMSprop(ours_model.parameters(), flatten=flatten, **kw)
        ref = torch.optim.RMSprop(ref_model.parameters(), **kw)
        mine, theirs = loss_curve(ours_model, ours), loss_curve(ref_model, ref)
        assert np.isfinite(mine).all(), option_id(kw)
        diff = mean_relative_difference(mine, theirs)
        worst = max(worst, (diff / curve_bound(kw, device), diff, option_id(kw)))
    assert worst[0] <= 1, worst


def test_complex_params_are_handled_as_torch_does():
    """Complex params step as their real views (re and im as two reals), like torch."""
    torch.manual_seed(4)
    p = torch.randn(5, 3, dtype=torch.complex64, requires_grad=True)
    q = p.detach().clone().requires_grad_()
    ours, ref = RMSprop([p], momentum=0.9, centered=True), torch.optim.RMSprop([q], momentum=0.9,
                                                                                centered=True)
    for _ in range(5):
        g = torch.randn(5, 3, dtype=torch.complex64)
        p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert ours.state[p]["square_avg"].dtype == torch.complex64
