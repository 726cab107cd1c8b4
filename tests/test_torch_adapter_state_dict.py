"""fastrms.torch.RMSprop's state dicts: into torch's and back mid-run, across flatten, dtype and
device; a newer format refused."""

import copy

import pytest

torch = pytest.importorskip("torch")

from adapter_cases import ROUND_TRIP, device, flatten_both, make_mlp, train_step, twin  # noqa: E402
from conftest import require_torch_cuda  # noqa: E402
from fastrms.torch import FORMAT, RMSprop  # noqa: E402


def continue_both(model_a, opt_a, model_b, opt_b, steps=5):
    for _ in range(steps):
        la, lb = train_step(model_a, opt_a), train_step(model_b, opt_b)
        assert la == pytest.approx(lb, rel=1e-5)
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


@flatten_both
def test_state_dict_ours_into_torch_mid_run(flatten, device):
    model = make_mlp(device=device)
    ours = RMSprop(model.parameters(), flatten=flatten, **ROUND_TRIP)
    for _ in range(7):
        train_step(model, ours)
    saved = ours.state_dict()
    assert saved["fastrms"] == {"format": FORMAT, "flatten": flatten}
    other = twin(model)
    ref = torch.optim.RMSprop(other.parameters(), **ROUND_TRIP)
    ref.load_state_dict(copy.deepcopy(saved))
    assert ref.state[next(other.parameters())]["step"].item() == 7
    continue_both(model, ours, other, ref)


@flatten_both
def test_state_dict_torch_into_ours_mid_run(flatten, device):
    model = make_mlp(device=device)
    ref = torch.optim.RMSprop(model.parameters(), **ROUND_TRIP)
    for _ in range(7):
        train_step(model, ref)
    other = twin(model)
    ours = RMSprop(other.parameters(), flatten=flatten, **ROUND_TRIP)
    ours.load_state_dict(copy.deepcopy(ref.state_dict()))
    continue_both(model, ref, other, ours)
    assert ours.state[next(other.parameters())]["step"].item() == 12


@pytest.mark.parametrize("saved_flat,loaded_flat", [(False, True), (True, False)])
def test_state_dict_across_flatten_and_dtype(saved_flat, loaded_flat):
    """Saved from float64 (flat or not), loaded into a float32 model (the other way)."""
    model = make_mlp(dtype=torch.float64)
    ours = RMSprop(model.parameters(), flatten=saved_flat, **ROUND_TRIP)
    for _ in range(4):
        train_step(model, ours)
    other = make_mlp(dtype=torch.float32)
    other.load_state_dict(model.state_dict())
    loaded = RMSprop(other.parameters(), flatten=loaded_flat, **ROUND_TRIP)
    loaded.load_state_dict(ours.state_dict())
    for p, q in zip(model.parameters(), other.parameters()):
        for key in ("square_avg", "momentum_buffer", "grad_avg"):
            assert loaded.state[q][key].dtype == torch.float32
            torch.testing.assert_close(loaded.state[q][key], ours.state[p][key].float())
    reference = make_mlp(dtype=torch.float32)
    reference.load_state_dict(model.state_dict())
    ref = torch.optim.RMSprop(reference.parameters(), **ROUND_TRIP)
    ref.load_state_dict(ours.state_dict())
    continue_both(other, loaded, reference, ref, steps=3)


@pytest.mark.gpu
@pytest.mark.parametrize("saved_on,loaded_on", [("cuda", "cpu"), ("cpu", "cuda")])
def test_state_dict_across_devices(saved_on, loaded_on):
    """Saved on one device (flat), loaded on the other (flat and not), continuing as torch."""
    require_torch_cuda()
    model = make_mlp(device=saved_on)
    ours = RMSprop(model.parameters(), flatten=True, **ROUND_TRIP)
    for _ in range(4):
        train_step(model, ours)
    saved = ours.state_dict()
    for loaded_flat in (False, True):
        other = make_mlp(device=loaded_on)
        other.load_state_dict(model.state_dict())
        reference = twin(other)
        loaded = RMSprop(other.parameters(), flatten=loaded_flat, **ROUND_TRIP)
        loaded.load_state_dict(copy.deepcopy(saved))
        ref = torch.optim.RMSprop(reference.parameters(), **ROUND_TRIP)
        ref.load_state_dict(copy.deepcopy(saved))
        continue_both(other, loaded, reference, ref, steps=3)
        for p in other.parameters():
            assert {loaded.state[p][k].device.type for k in ("square_avg", "momentum_buffer",
                                                             "grad_avg")} == {loaded_on}


def test_state_dict_from_a_newer_format_is_refused():
    model = make_mlp()
    ours = RMSprop(model.parameters())
    saved = ours.state_dict()
    saved["fastrms"] = {"format": FORMAT + 1}
    with pytest.raises(ValueError, match="newer fastrms"):
        ours.load_state_dict(saved)


@pytest.mark.parametrize("flatten", [False, True])
def test_half_params_keep_float32_state_and_masters_through_a_state_dict(flatten):
    """torch's loader casts every state tensor of a float param to the param's dtype: the
    float32 square averages and masters of bfloat16 params would come back as bfloat16. They
    load as saved, and the run continues as if uninterrupted."""
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 64).to(torch.bfloat16)
    kw = dict(lr=1e-3, momentum=0.9, master_weights=True, flatten=flatten)
    opt = RMSprop(model.parameters(), **kw)

    def run(m, o, steps):
        for _ in range(steps):
            o.zero_grad()
            m(torch.randn(8, 64, dtype=torch.bfloat16)).float().pow(2).mean().backward()
            o.step()

    run(model, opt, 3)
    saved = copy.deepcopy(opt.state_dict())
    twin = copy.deepcopy(model)
    resumed = RMSprop(twin.parameters(), **kw)
    resumed.load_state_dict(saved)
    for key in ("square_avg", "momentum_buffer", "master_param"):
        assert resumed.state[twin.weight][key].dtype == torch.float32
        assert torch.equal(resumed.state[twin.weight][key], saved["state"][0][key])
    torch.manual_seed(1)
    run(model, opt, 2)
    torch.manual_seed(1)
    run(twin, resumed, 2)
    assert torch.equal(model.weight, twin.weight) and torch.equal(model.bias, twin.bias)
