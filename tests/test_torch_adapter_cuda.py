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
