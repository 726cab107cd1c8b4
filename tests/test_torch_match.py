"""convention="torch" matches torch.optim.RMSprop itself (float32, CPU)."""

import itertools

import numpy as np
import pytest

import fastrms
from bounds import step_terms, worst_ulps

torch = pytest.importorskip("torch")

ONE_STEP_ULPS = 8

OPTIONS = [
    dict(zip(("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"), values))
    for values in itertools.product(
        (0.01, 0.003), (0.99, 0.9, 0.3), (1e-8, 1e-3), (0.0, 0.05), (0.0, 0.9), (False, True),
        (False, True),
    )
]


def option_id(o):
    return "-".join(f"{k}={v}" for k, v in o.items())


def torch_step(options, x, g, state, step, foreach):
    """One step of torch.optim.RMSprop from the given state; returns the new arrays."""
    p = torch.nn.Parameter(torch.from_numpy(x.copy()))
    opt = torch.optim.RMSprop([p], foreach=foreach, **options)
    torch_state = {"step": torch.tensor(float(step))}
    for key, value in state.items():
        if value is not None:
            torch_state[key] = torch.from_numpy(value.copy())
    opt.load_state_dict({"state": {0: torch_state}, "param_groups": [{**opt.param_groups[0], "params": [0]}]})
    p.grad = torch.from_numpy(g.copy())
    opt.step()
    new = opt.state[p]
    return p.detach().numpy(), {k: new[k].numpy() for k in state if state[k] is not None}


def warm_state(options, n, rng):
    return {
        "square_avg": (1 + rng.random(n)).astype(np.float32),
        "momentum_buffer": (0.1 * rng.standard_normal(n)).astype(np.float32) if options["momentum"] else None,
        "grad_avg": (0.1 * rng.standard_normal(n)).astype(np.float32) if options["centered"] else None,
    }


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("options", OPTIONS, ids=option_id)
def test_one_step_within_ulps_of_torch(options, foreach):
    rng = np.random.default_rng(3)
    n = 1000
    x = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    state = warm_state(options, n, rng)
    want_x, want_state = torch_step(options, x, g, state, step=5, foreach=foreach)

    opt = fastrms.RMSprop(convention="torch", **options)
    ours = fastrms.RMSpropState(step=5, **{k: v.copy() for k, v in state.items() if v is not None})
    got_x = x.copy()
    opt.step(got_x, g, ours)
    assert ours.step == 6

    terms = step_terms(options, x.astype(np.float64), g.astype(np.float64),
                       {k: None if v is None else v.astype(np.float64) for k, v in state.items()})
    for key, want in want_state.items():
        assert worst_ulps(getattr(ours, key), want, terms[key]) <= ONE_STEP_ULPS, key
    assert worst_ulps(got_x, want_x, terms["param"]) <= ONE_STEP_ULPS
    assert not np.array_equal(got_x, x)


@pytest.mark.parametrize(
    "options",
    [o for o in OPTIONS if o["lr"] == 0.01 and o["eps"] == 1e-8 and o["alpha"] != 0.3],
    ids=option_id,
)
def test_100_step_trajectory_matches_torch(options):
    rng = np.random.default_rng(11)
    n = 2000
    x0 = rng.standard_normal(n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(100)]

    p = torch.nn.Parameter(torch.from_numpy(x0.copy()))
    topt = torch.optim.RMSprop([p], **options)
    opt = fastrms.RMSprop(convention="torch", **options)
    x = x0.copy()
    state = opt.init(x)
    for g in grads:
        p.grad = torch.from_numpy(g)
        topt.step()
        opt.step(x, g, state)

    np.testing.assert_allclose(x, p.detach().numpy(), rtol=1e-4, atol=1e-5)
    for key, value in topt.state[p].items():
        if key != "step":
            np.testing.assert_allclose(getattr(state, key), value.numpy(), rtol=1e-4, atol=1e-5, err_msg=key)
    assert state.step == int(topt.state[p]["step"]) == 100
