"""fastrms.torch.RMSprop on CUDA only (marked gpu): torch's current stream, half-precision
params."""

import pytest

torch = pytest.importorskip("torch")

from adapter_cases import (  # noqa: E402
    ROUND_TRIP, flatten_both, loss_of, make_mlp, train_step, twin)
from conftest import require_torch_cuda  # noqa: E402
from fastrms.torch import RMSprop  # noqa: E402


@pytest.mark.gpu
@flatten_both
def test_cuda_steps_run_on_torchs_current_stream(flatten, monkeypatch):
    """Under ``torch.cuda.stream(side)`` every launch goes to ``side``, with torch's numbers."""
    require_torch_cuda()
    from fastrms.cuda import arrays

    used, real = [], arrays.launch_stream

    def spy(array):
        stream = real(array)
        used.append(stream.ptr)
        return stream

    monkeypatch.setattr(arrays, "launch_stream", spy)
    model = make_mlp(device="cuda")
    other = twin(model)
    ours = RMSprop(model.parameters(), flatten=flatten, momentum=0.9)
    ref = torch.optim.RMSprop(other.parameters(), momentum=0.9)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            train_step(model, ours)
            train_step(other, ref)
    torch.cuda.synchronize()
    assert used and set(used) == {side.cuda_stream}
    for p, q in zip(model.parameters(), other.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_cuda_params_step_with_float32_state(dtype):
    """Half params keep float32 state; a step lands within one half-precision ulp (of the
    terms) of the same step in float64."""
    require_torch_cuda()
    model = make_mlp(device="cuda", dtype=dtype)
    ours = RMSprop(model.parameters(), **ROUND_TRIP)
    for _ in range(3):
        train_step(model, ours)
    exact_model = make_mlp(device="cuda", dtype=torch.float64)
    exact_model.load_state_dict(model.state_dict())
    exact = torch.optim.RMSprop(exact_model.parameters(), **ROUND_TRIP)
    exact.load_state_dict(ours.state_dict())  # torch casts the state to float64
    ours.zero_grad()
    loss_of(model).backward()
    before = [p.detach().double().clone() for p in model.parameters()]
    for p, q in zip(model.parameters(), exact_model.parameters()):
        q.grad = p.grad.double()
    ours.step()
    exact.step()
    ulp = torch.finfo(dtype).eps
    for p, q, x in zip(model.parameters(), exact_model.parameters(), before):
        assert p.dtype == dtype
        assert {ours.state[p][k].dtype for k in ("square_avg", "momentum_buffer", "grad_avg")} \
            == {torch.float32}
        err = (p.detach().double() - q.detach()).abs()
        assert (err <= ulp * (x.abs() + (q.detach() - x).abs())).all(), err.max().item()


def capturable_pair(lr=0.01):
    """A CUDA model with static grads and a capturable optimizer (tensor lr on the device), and
    an eager twin stepped by a plain fastrms optimizer with the same lr values."""
    model = make_mlp(device="cuda")
    other = twin(model)
    loss_of(model).backward()
    loss_of(other).backward()
    kw = dict(momentum=0.9, centered=True, weight_decay=0.01)
    ours = RMSprop(model.parameters(), lr=torch.tensor(lr, device="cuda"), capturable=True, **kw)
    eager = RMSprop(other.parameters(), lr=lr, **kw)
    return model, other, ours, eager


@pytest.mark.gpu
def test_captured_step_replays_equal_eager_steps():
    """N replays of a captured ``opt.step()`` equal N eager steps to the bit, with an lr written
    into the lr tensor between replays (as an LR scheduler does)."""
    require_torch_cuda()
    model, other, ours, eager = capturable_pair()
    side = torch.cuda.Stream()  # warm-up on a side stream (torch's recipe): compiles, prepares
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        ours.step()
    torch.cuda.current_stream().wait_stream(side)
    eager.step()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ours.step()
    for lr in (0.01, 0.005, 0.0025):
        ours.param_groups[0]["lr"].fill_(lr)
        graph.replay()
        eager.param_groups[0]["lr"] = lr
        eager.step()
    torch.cuda.synchronize()
    for p, q in zip(model.parameters(), other.parameters()):
        assert torch.equal(p, q)
        for name in ("square_avg", "momentum_buffer", "grad_avg"):
            assert torch.equal(ours.state[p][name], eager.state[q][name])
        assert ours.state[p]["step"].item() == eager.state[q]["step"].item() == 4


@pytest.mark.gpu
def test_capturable_step_makes_no_host_synchronisation():
    require_torch_cuda()
    model, _, ours, _ = capturable_pair()
    ours.step()  # the first step builds the plan and prepares the launch (one wait, allowed)
    torch.cuda.set_sync_debug_mode("error")
    try:
        ours.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
def test_capture_without_warm_up_is_a_clear_error():
    require_torch_cuda()
    model, _, ours, _ = capturable_pair()
    ours.step()
    for p in model.parameters():  # grads moved: the next step would copy a new table
        p.grad = p.grad.clone()
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="warm-up"):
        with torch.cuda.graph(graph):
            ours.step()
