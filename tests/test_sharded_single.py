"""fastrms.torch.ShardedRMSprop in this process (a gloo group of one rank): what it refuses, and
that a refused call writes nothing; and the torchrun example, run by torchrun on 2 ranks."""

import os
import pathlib
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from fastrms.torch import RMSprop, ShardedRMSprop, float32_state_dict  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))


def test_it_needs_torch_distributed_initialised():
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    with pytest.raises(RuntimeError, match="init_process_group"):
        ShardedRMSprop(mlp().parameters())


@pytest.fixture
def group(tmp_path):
    dist.init_process_group("gloo", rank=0, world_size=1,
                            store=dist.FileStore(str(tmp_path / "store"), 1))
    yield
    dist.destroy_process_group()


def _train(model, opt, steps=4, drop_at=2):
    for step in range(steps):
        opt.zero_grad()
        x = torch.ones(4, 3, dtype=next(model.parameters()).dtype) * (step + 1)
        model(x).float().square().mean().backward()
        if step == drop_at:
            model[2].bias.grad = None  # not stepped, not counted
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def test_one_rank_equals_fastrms_rmsprop_bit_for_bit(group):
    options = dict(lr=1e-2, momentum=0.9, centered=True)
    model, ref = mlp(), mlp()
    opt = ShardedRMSprop(model.parameters(), **options)
    ref_opt = RMSprop(ref.parameters(), **options)
    assert all(torch.equal(a, b) for a, b in zip(_train(model, opt), _train(ref, ref_opt)))
    whole = opt.consolidate_state_dict()
    assert [float(s["step"]) for s in whole["state"].values()] == [4, 4, 4, 3]


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(timeout=0), ValueError, "timeout must be a positive"),
    (dict(timeout="1"), ValueError, "timeout must be a positive"),
    (dict(collectives=("all_reduce", "scatter")), ValueError, "collectives must be"),
    (dict(capturable=True), ValueError, "capturable=True is not supported by ShardedRMSprop"),
    (dict(differentiable=True), ValueError, "differentiable=True is not supported"),
    (dict(lr=-1.0), ValueError, "Invalid learning rate: -1.0"),
    (dict(state_bits=16), ValueError, "state_bits must be 8 or 32"),
    (dict(state_bits=8, threshold=-1), ValueError, "threshold must be an integer >= 0"),
])
def test_bad_arguments_name_themselves(group, kwargs, error, match):
    with pytest.raises(error, match=match):
        ShardedRMSprop(mlp().parameters(), **kwargs)


def test_complex_params_and_late_groups_are_refused(group):
    with pytest.raises(TypeError, match="complex"):
        ShardedRMSprop([torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))])
    opt = ShardedRMSprop(mlp().parameters())
    with pytest.raises(NotImplementedError, match="after construction"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))]})
    with pytest.raises(ValueError, match="to must be a rank"):
        opt.consolidate_state_dict(to=1)


def test_moved_params_are_refused_at_the_step(group):
    model = mlp()
    opt = ShardedRMSprop(model.parameters())
    model[0].weight.data = model[0].weight.data.clone()  # what model.to(...) does
    model(torch.ones(1, 3)).sum().backward()
    with pytest.raises(RuntimeError, match="moved out of its flat buffers"):
        opt.step()


def test_state_dicts_that_do_not_fit_are_refused_and_nothing_is_written(group):
    model = mlp()
    opt = ShardedRMSprop(model.parameters(), momentum=0.9)
    _train(model, opt)
    before = opt.state_dict()
    whole = opt.consolidate_state_dict()
    whole["state"][3]["square_avg"] = torch.zeros(7)  # the bias has 2 elements
    with pytest.raises(ValueError, match="the state 'square_avg' of param 3 has 7 elements"):
        opt.load_state_dict(whole)
    other = dict(before, fastrms={"format": 1, "sharded": {"world_size": 2, "rank": 1}})
    with pytest.raises(ValueError, match="rank 1's shard of 2 ranks"):
        opt.load_state_dict(other)
    after = opt.state_dict()
    for a, b in zip(before["shards"], after["shards"]):
        assert torch.equal(a["step"], b["step"])
        assert all(torch.equal(a["state"][n], b["state"][n]) for n in a["state"])
    # one rank's shard is refused by the unsharded optimizers rather than loaded as empty
    with pytest.raises(ValueError, match="consolidated"):
        RMSprop(mlp().parameters()).load_state_dict(before)
    with pytest.raises(KeyError):
        torch.optim.RMSprop(mlp().parameters()).load_state_dict(before)


def test_the_example_trains_under_torchrun_and_its_state_loads_into_torch(tmp_path):
    """examples/sharded_training.py, as the README runs it (torchrun, 2 ranks, this machine)."""
    saved = tmp_path / "saved.pt"
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(ROOT / "examples" / "sharded_training.py"), "--steps", "60", "--save", str(saved)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    losses = [float(line.split()[3]) for line in run.stdout.splitlines()
              if line.startswith("step")]
    assert len(losses) == 3 and losses[-1] < losses[0] / 5
    checkpoint = torch.load(saved, weights_only=True)
    model = torch.nn.Sequential(torch.nn.Linear(1, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64),
                                torch.nn.Tanh(), torch.nn.Linear(64, 1))
    model.load_state_dict(checkpoint["model"])
    opt = torch.optim.RMSprop(model.parameters(), lr=3e-3, momentum=0.9)
    opt.load_state_dict(checkpoint["optimizer"])
    assert [float(s["step"]) for s in opt.state.values()] == [60.0] * 6


def test_loading_a_state_dict_mid_run_continues_as_a_fresh_optimizer_would(group):
    """The step's cached arrays follow the state buffers a load replaces."""
    options = dict(lr=1e-2, momentum=0.9, centered=True)
    model = mlp()
    opt = ShardedRMSprop(model.parameters(), **options)
    _train(model, opt, drop_at=None)
    saved_params = [p.detach().clone() for p in model.parameters()]
    saved = opt.state_dict()
    _train(model, opt, drop_at=None)  # steps on, then back to the saved point
    with torch.no_grad():
        for p, q in zip(model.parameters(), saved_params):
            p.copy_(q)
    opt.load_state_dict(saved)
    fresh_model = mlp()
    fresh_model.load_state_dict(model.state_dict())
    fresh = ShardedRMSprop(fresh_model.parameters(), **options)
    fresh.load_state_dict(saved)
    assert all(torch.equal(a, b) for a, b in zip(_train(model, opt, drop_at=None),
                                                  _train(fresh_model, fresh, drop_at=None)))


@pytest.mark.parametrize("dtype, master", [(torch.float32, False), (torch.bfloat16, True)])
def test_8_bit_state_equals_fastrms_rmsprop_and_its_state_dicts_convert(group, dtype, master):
    """state_bits=8 (docs/eight-bit.md), threshold 10: the weights (15 and 10 values) keep
    8-bit state, the biases (5 and 2) float32 state; float32 params, and bfloat16 params with
    float32 masters. One rank equals
    fastrms.torch.RMSprop bit for bit, a param without gradient at one step included; its
    consolidated state is that optimizer's; a float32 state dict is coded on load as that
    optimizer codes it; an 8-bit one is refused without state_bits=8."""
    options = dict(lr=1e-2, momentum=0.9, centered=True, state_bits=8, threshold=10,
                   master_weights=master)
    model, ref = mlp().to(dtype), mlp().to(dtype)
    opt = ShardedRMSprop(model.parameters(), **options)
    ref_opt = RMSprop(ref.parameters(), **options)
    assert all(torch.equal(a, b) for a, b in zip(_train(model, opt, drop_at=1),
                                                  _train(ref, ref_opt, drop_at=1)))
    whole, expected = opt.consolidate_state_dict(), ref_opt.state_dict()
    assert whole["fastrms"]["state_bits"] == 8 and "square_avg_codes" in whole["state"][2]
    assert whole["state"].keys() == expected["state"].keys()
    for k, state in expected["state"].items():
        assert state.keys() == whole["state"][k].keys()
        assert all(torch.equal(value, whole["state"][k][key]) for key, value in state.items())
    floats = float32_state_dict(expected)
    opt.load_state_dict(floats)
    ref_opt.load_state_dict(floats)
    assert all(torch.equal(a, b) for a, b in zip(_train(model, opt), _train(ref, ref_opt)))
    before = opt.state_dict()
    with pytest.raises(ValueError, match="holds 8-bit state"):
        ShardedRMSprop(mlp().parameters(), momentum=0.9, centered=True).load_state_dict(whole)
    for wrong in ({"square_avg": torch.zeros(256)}, {"square_avg_codes": torch.zeros(256)}):
        shards = [dict(s, state={**s["state"], **wrong}) if "square_avg_codes" in s["state"]
                  else s for s in before["shards"]]
        with pytest.raises(ValueError, match="does not fit a shard of 512 values"):
            opt.load_state_dict(dict(before, shards=shards))
    fresh = ShardedRMSprop(mlp().to(dtype).parameters(), **options)
    fresh.load_state_dict(before)  # a rank's own shards load back as they were
    for after in (opt.state_dict(), fresh.state_dict()):
        for a, b in zip(before["shards"], after["shards"]):
            assert a["state"].keys() == b["state"].keys() and torch.equal(a["step"], b["step"])
            assert all(torch.equal(a["state"][n], b["state"][n]) for n in a["state"])
