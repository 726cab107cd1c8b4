"""flatten=True: params and grads re-pointed into one buffer, and kept there as groups, dtypes and
state change."""

import pytest

torch = pytest.importorskip("torch")

from adapter_cases import device, loss_of, make_mlp, train_step, twin  # noqa: E402
from fastrms.torch import RMSprop  # noqa: E402


def test_flatten_points_params_and_grads_into_one_buffer(device):
    model = make_mlp(device=device)
    other = twin(model)
    ours = RMSprop(model.parameters(), flatten=True, lr=0.01, momentum=0.5)
    ref = torch.optim.RMSprop(other.parameters(), lr=0.01, momentum=0.5)
    flat = ours._flat[0][0].flat
    start, end = flat.data.data_ptr(), flat.data.data_ptr() + flat.size * 4
    assert all(start <= p.data_ptr() < end for p in model.parameters())
    assert all(p.data_ptr() % 64 == 0 for p in model.parameters())
    for step in range(6):
        set_to_none = step < 3  # torch's default first: autograd allocates fresh grads
        train_step(model, ours, set_to_none)
        train_step(other, ref, set_to_none)
        grads = [p.grad.data_ptr() for p in model.parameters()]
        assert all(flat.grad.data_ptr() <= g < flat.grad.data_ptr() + flat.size * 4 for g in grads)
    for p, q in zip(model.parameters(), other.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)
    # zero_grad(set_to_none=False) zeros the flat views in place; backward accumulates there
    ours.zero_grad(set_to_none=False)
    assert [p.grad.data_ptr() for p in model.parameters()] == grads
    assert not flat.grad.any()
    loss_of(model).backward()
    assert [p.grad.data_ptr() for p in model.parameters()] == grads and flat.grad.any()


def test_flatten_survives_a_change_of_dtype_and_new_groups():
    model = make_mlp()
    ours = RMSprop(model[0].parameters(), flatten=True, momentum=0.9)
    train_step(model, ours)
    ours.add_param_group({"params": model[2].parameters(), "lr": 0.001})
    train_step(model, ours)
    model.double()  # moves every param out of the flat buffers
    square = ours.state[model[0].weight]["square_avg"].double().clone()
    train_step(model, ours)
    assert ours.state[model[0].weight]["square_avg"].dtype == torch.float64
    assert ours.state[model[0].weight]["step"].item() == 3
    assert ours.state[model[2].weight]["step"].item() == 2
    assert not torch.equal(ours.state[model[0].weight]["square_avg"], square)


def test_flatten_with_a_param_that_fills_its_buffer():
    """A param as large as its flat buffer (the other one empty) keeps stepping when the group
    changes, exactly as without flattening (its view and the flat tensor share an address)."""
    def model():
        torch.manual_seed(5)
        return [torch.nn.Parameter(torch.randn(4, 4)), torch.nn.Parameter(torch.zeros(0))]

    flat_params, plain_params = model(), model()
    flat, plain = RMSprop(flat_params, flatten=True), RMSprop(plain_params)
    for step in range(4):
        for params, opt in ((flat_params, flat), (plain_params, plain)):
            params[0].grad = torch.full((4, 4), 0.5 + step)
            params[1].grad = torch.zeros(0) if step == 0 else None
            if step == 2:
                opt.param_groups[0]["momentum"] = 0.9  # a new state buffer, mid-run
            opt.step()
    assert torch.equal(flat_params[0], plain_params[0])
    assert torch.equal(flat.state[flat_params[0]]["momentum_buffer"],
                       plain.state[plain_params[0]]["momentum_buffer"])
