"""RMSpropState: allocation like the params, step counting, state_dict round trips."""

import numpy as np
import pytest

import fastrms


def test_init_allocates_like_param():
    p = np.zeros((3, 5), np.float64)
    state = fastrms.RMSprop(momentum=0.9, centered=True).init(p)
    for buf in (state.square_avg, state.momentum_buffer, state.grad_avg):
        assert type(buf) is np.ndarray and buf.shape == p.shape and buf.dtype == p.dtype
        assert not np.shares_memory(buf, p)
    assert state.step == 0
    plain = fastrms.RMSprop().init(p)
    assert plain.momentum_buffer is None and plain.grad_avg is None


def test_init_on_torch_tensors_gives_torch_state():
    torch = pytest.importorskip("torch")
    p = torch.zeros(4, dtype=torch.float64)
    state = fastrms.RMSprop(momentum=0.5).init(p)
    assert isinstance(state.square_avg, torch.Tensor) and state.square_avg.dtype == torch.float64
    g = torch.ones(4, dtype=torch.float64)
    fastrms.RMSprop(momentum=0.5).step(p, g, state)
    assert (p < 0).all() and (state.square_avg > 0).all()  # the tensors' own memory was updated


def test_step_counts_from_one_and_not_on_error():
    opt = fastrms.RMSprop(convention="optax", lr=0.1, bias_correction=True)
    p = np.ones(4, np.float32)
    state = opt.init(p)
    opt.step(p, np.ones(4, np.float32), state)
    assert state.step == 1
    # bias correction at t = 1 makes the first step exactly lr·g/√(g² + ε) ≈ lr
    np.testing.assert_allclose(p, 1 - 0.1, rtol=1e-6)
    with pytest.raises(ValueError):
        opt.step(p, np.ones(3, np.float32), state)
    assert state.step == 1


def test_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(0)
    opt = fastrms.RMSprop(convention="torch", momentum=0.9, centered=True)
    p = rng.standard_normal(100).astype(np.float32)
    state = opt.init(p)
    grads = [rng.standard_normal(100).astype(np.float32) for _ in range(6)]
    for g in grads[:3]:
        opt.step(p, g, state)
    saved = state.state_dict()
    assert set(saved) == {"step", "square_avg", "momentum_buffer", "grad_avg"}
    assert saved["step"].dtype == np.float32 and float(saved["step"]) == 3
    assert not np.shares_memory(saved["square_avg"], state.square_avg)  # a snapshot
    p_restored = p.copy()
    restored = fastrms.RMSpropState.from_state_dict(saved)
    for g in grads[3:]:
        opt.step(p, g, state)
        opt.step(p_restored, g, restored)
    np.testing.assert_array_equal(p, p_restored)
    np.testing.assert_array_equal(state.square_avg, restored.square_avg)
    assert restored.step == state.step == 6


def test_state_dict_loads_into_torch_and_back():
    torch = pytest.importorskip("torch")
    opt = fastrms.RMSprop(convention="torch", momentum=0.9)
    p = np.ones(5, np.float32)
    state = opt.init(p)
    opt.step(p, np.full(5, 0.5, np.float32), state)
    tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
    topt = torch.optim.RMSprop([tp], momentum=0.9)
    topt.load_state_dict({"state": {0: {k: torch.from_numpy(v) for k, v in state.state_dict().items()}},
                          "param_groups": [{**topt.param_groups[0], "params": [0]}]})
    tp.grad = torch.full((5,), 0.25)
    topt.step()
    opt.step(p, np.full(5, 0.25, np.float32), state)
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-6)
    back = fastrms.RMSpropState.from_state_dict(topt.state[tp])
    np.testing.assert_allclose(back.square_avg, state.square_avg, rtol=1e-6)
    assert back.step == 2


def test_from_state_dict_like_places_arrays_like_the_param():
    torch = pytest.importorskip("torch")
    d = {"step": np.float32(4), "square_avg": np.ones(3, np.float32)}
    state = fastrms.RMSpropState.from_state_dict(d, like=torch.zeros(3))
    assert isinstance(state.square_avg, torch.Tensor) and state.step == 4


def test_from_state_dict_refuses_bad_dicts():
    with pytest.raises(KeyError, match="square_avg"):
        fastrms.RMSpropState.from_state_dict({"step": 1})
    with pytest.raises(ValueError, match="step"):
        fastrms.RMSpropState.from_state_dict({"step": 1.5, "square_avg": np.ones(2)})


def test_init_and_load_for_half_precision_torch_params_keep_float32_state():
    torch = pytest.importorskip("torch")
    for dtype in (torch.bfloat16, torch.float16):
        p = torch.zeros(3, dtype=dtype)
        assert fastrms.RMSprop().init(p).square_avg.dtype == torch.float32
        torch_state = {"step": torch.tensor(2.0), "square_avg": torch.full((3,), 0.5, dtype=dtype)}
        loaded = fastrms.RMSpropState.from_state_dict(torch_state, like=p)
        assert loaded.square_avg.dtype == torch.float32 and loaded.step == 2
        assert float(loaded.square_avg[0]) == 0.5


def test_from_state_dict_gives_c_contiguous_state():
    d = {"step": 1, "square_avg": np.asfortranarray(np.ones((3, 4), np.float32))}
    state = fastrms.RMSpropState.from_state_dict(d)
    assert state.square_avg.flags.c_contiguous
    p = np.zeros((3, 4), np.float32)
    fastrms.RMSprop().step(p, np.ones((3, 4), np.float32), state)
    assert state.step == 2


@pytest.mark.parametrize("step", [float("nan"), float("inf")])
def test_from_state_dict_refuses_non_finite_step(step):
    with pytest.raises(ValueError, match="step"):
        fastrms.RMSpropState.from_state_dict({"step": step, "square_avg": np.ones(2)})


def test_torch_cpu_tensors_are_updated_in_place():
    torch = pytest.importorskip("torch")
    p, g, s = torch.ones(5), torch.full((5,), 0.5), torch.zeros(5)
    fastrms.rmsprop_update(p, g, s)
    assert (p < 1).all() and (s > 0).all()
