"""fastrms.torch.RMSprop in torch.optim's machinery: schedulers, param groups, hooks, closures,
version counters, params without grads, updates in place."""

import pytest

torch = pytest.importorskip("torch")

from adapter_cases import device, flatten_both, loss_of, make_mlp, train_step, twin  # noqa: E402
from fastrms.torch import RMSprop  # noqa: E402


@flatten_both
def test_lr_scheduler_drives_the_step(flatten):
    model = make_mlp()
    other = twin(model)
    ours = RMSprop(model.parameters(), flatten=flatten, lr=0.01)
    ref = torch.optim.RMSprop(other.parameters(), lr=0.01)
    sched_ours = torch.optim.lr_scheduler.StepLR(ours, step_size=3, gamma=0.1)
    sched_ref = torch.optim.lr_scheduler.StepLR(ref, step_size=3, gamma=0.1)
    for _ in range(8):
        train_step(model, ours)
        train_step(other, ref)
        sched_ours.step()
        sched_ref.step()
    assert ours.param_groups[0]["lr"] == pytest.approx(1e-4)
    for p, q in zip(model.parameters(), other.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


def test_param_groups_hooks_and_closure():
    model = make_mlp()
    first, second = list(model[0].parameters()), list(model[2].parameters())
    ours = RMSprop([{"params": first}, {"params": second, "lr": 0.0}], lr=0.01)
    calls = []
    ours.register_step_pre_hook(lambda opt, args, kwargs: calls.append("pre"))
    ours.register_step_post_hook(lambda opt, args, kwargs: calls.append("post"))
    frozen = [p.detach().clone() for p in second]
    loss = ours.step(lambda: (ours.zero_grad(), loss_of(model).backward(), loss_of(model))[2])
    assert calls == ["pre", "post"] and torch.is_tensor(loss)
    assert all(torch.equal(p, f) for p, f in zip(second, frozen))  # lr 0: unchanged
    assert ours.state[first[0]]["step"].item() == 1


@flatten_both
def test_version_counter_is_bumped(flatten, device):
    """A tensor saved for backward and then stepped makes backward fail, as with torch."""
    model = make_mlp(device=device)
    ours = RMSprop(model.parameters(), flatten=flatten)
    train_step(model, ours)
    weight = model[0].weight
    version = weight._version
    saved = (weight * weight).sum()  # saves weight for backward
    loss_of(model).backward()
    ours.step()
    assert weight._version > version
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        saved.backward()


@flatten_both
def test_params_without_grad_are_skipped(flatten, device):
    model = make_mlp(device=device)
    ours = RMSprop(model.parameters(), flatten=flatten, momentum=0.9)
    loss_of(model).backward()
    model[2].bias.grad = None
    bias = model[2].bias.detach().clone()
    weight = model[2].weight.detach().clone()
    ours.step()
    assert torch.equal(model[2].bias, bias) and model[2].bias not in ours.state
    assert not torch.equal(model[2].weight, weight)
    assert ours.state[model[2].weight]["step"].item() == 1
    saved = ours.state_dict()["state"]
    assert len(saved) == 3  # as torch's: no state for the skipped param


def test_tensors_on_other_devices_are_refused_by_name():
    """A meta tensor (like an xpu or mps one: neither CPU nor CUDA) is a clear error."""
    p = torch.nn.Parameter(torch.ones(3, device="meta"))
    p.grad = torch.ones(3, device="meta")
    with pytest.raises(ValueError, match=r"param\[0\].*meta"):
        RMSprop([p]).step()


def test_updates_in_place_zero_copy(device):
    model = make_mlp(device=device)
    ours = RMSprop(model.parameters())
    addresses = [p.data_ptr() for p in model.parameters()]
    before = [p.detach().clone() for p in model.parameters()]
    train_step(model, ours)
    assert [p.data_ptr() for p in model.parameters()] == addresses
    assert all(not torch.equal(p, b) for p, b in zip(model.parameters(), before))
