"""fastrms.torch.ShardedRMSprop (ZeRO-1) on 2 and 3 gloo ranks spawned here (127.0.0.1), against
one process's runs (docs/sharded.md states the bounds asserted here)."""

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import sharded_ranks as ranks  # noqa: E402

STEPS, SAVE_AT = 20, 10
U = 2.0 ** -24  # float32's unit roundoff


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """20 steps on 2 ranks (saving a consolidated state dict at step 10), then 3 ranks from
    scratch and 3 ranks resuming the 2 ranks' step 10: each rank's results."""
    out = {}
    for name, world, resume in (("two", 2, False), ("three", 3, False), ("resumed", 3, True)):
        folder = tmp_path_factory.mktemp(name)
        saved = str(out["two"]["folder"] / "saved.pt") if resume else None
        error = ranks.spawn(ranks.train, world, str(folder), STEPS, saved,
                            SAVE_AT if name == "two" else None)
        assert error is None, error
        out[name] = {"folder": folder, "ranks": [torch.load(folder / f"rank{r}.pt")
                                                 for r in range(world)]}
    return out


def _equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def _within(a, b, rtol=1e-4, atol=1e-5):
    return all(torch.allclose(x, y, rtol=rtol, atol=atol) for x, y in zip(a, b))


@pytest.mark.parametrize("name", ["two", "three", "resumed"])
def test_same_gradient_bits_give_the_same_params_bit_for_bit(runs, name):
    """The update is fastrms.torch.RMSprop's arithmetic on each element: given the same
    gradient bits (a sum that is exact), the same param bits, on every rank."""
    assert all(r["exact"] for r in runs[name]["ranks"])
    assert all(r["exact8"] for r in runs[name]["ranks"])  # 8-bit state (docs/eight-bit.md)
    assert all(r["same_start"] for r in runs[name]["ranks"])  # rank 0's params broadcast


def test_two_ranks_equal_one_process_averaging_two_slices_bit_for_bit(runs):
    """At 2 ranks the mean over ranks, fl((g0 + g1) / 2), does not depend on the order of the
    sum: the run is one process's that averages the two slices' gradients, bit for bit, on
    every rank, and so is the run under DDP (reduce_grads=False)."""
    expected, _, _ = ranks.emulate(STEPS, lambda step: 2)
    for r in runs["two"]["ranks"]:
        assert _equal(r["params"], expected)
        assert _equal(r["ddp_params"], expected)


def test_three_ranks_within_the_bound_of_reordering_their_sum(runs):
    """At 3 ranks the collective sums the ranks' gradients in its own order per chunk: after 20
    steps the params are within rtol 1e-4 / atol 1e-5 of one process's averaging of three
    slices, on every rank alike."""
    expected, _, _ = ranks.emulate(STEPS, lambda step: 3)
    results = runs["three"]["ranks"]
    assert all(_within(r["params"], expected) for r in results)
    assert all(_equal(r["params"], results[0]["params"]) for r in results)


def test_the_mean_over_ranks_is_within_the_reordering_bound_of_the_batch_gradient(runs):
    """Against one process's gradient of the whole batch (same params), each element's mean over
    ranks is a reordering of the batch's sum: within 2·B·u·Σ_b|g_b| (B = 12 samples)."""
    for name in ("two", "three", "resumed"):
        for r in runs[name]["ranks"]:
            assert r["grad_error"] <= 2 * ranks.BATCH


def test_two_ranks_saved_three_ranks_resumed(runs):
    """A consolidated state dict from 2 ranks at step 10, loaded by 3 ranks, continues within
    the 3-rank bound of one process that averages 2 slices, then 3."""
    saved = torch.load(runs["two"]["folder"] / "saved.pt", weights_only=True)
    _, opt, model = ranks.emulate(SAVE_AT, lambda step: 2)
    assert _equal([saved["model"][k] for k in model.state_dict()], model.state_dict().values())
    # the consolidated state is the 2-slice process's own, bit for bit
    ours = opt.state_dict()["state"]
    assert saved["optimizer"]["state"].keys() == ours.keys()
    for k, s in ours.items():
        assert saved["optimizer"]["state"][k].keys() == s.keys()
        assert all(torch.equal(saved["optimizer"]["state"][k][n], s[n]) for n in s)
    start = (saved["model"], saved["optimizer"], SAVE_AT)
    expected, _, _ = ranks.emulate(STEPS, lambda step: 3, start=start)
    assert all(_within(r["params"], expected) for r in runs["resumed"]["ranks"])


def test_the_consolidated_state_dict_loads_into_torch_and_fastrms(runs):
    """torch.optim.RMSprop and fastrms.torch.RMSprop load it and continue with the same
    numbers (within torch's trajectory bound of fastrms's, 10 steps)."""
    from fastrms.torch import RMSprop

    finals = []
    for make in (torch.optim.RMSprop, RMSprop):  # each loads its own copy (torch adopts tensors)
        saved = torch.load(runs["two"]["folder"] / "saved.pt", weights_only=True)
        model = ranks.mlp()
        model.load_state_dict(saved["model"])
        opt = make(model.parameters(), **ranks.OPTIONS)
        opt.load_state_dict(saved["optimizer"])
        for step in range(SAVE_AT, STEPS):
            opt.zero_grad()
            ranks.full_backward(model, step)
            opt.step()
        finals.append([p.detach() for p in model.parameters()])
        assert all(float(s["step"]) == STEPS for s in opt.state_dict()["state"].values())
    assert _within(*finals)


@pytest.mark.parametrize("name,world", [("two", 2), ("three", 3)])
def test_state_per_rank_is_one_world_th_of_the_unsharded_state(runs, name, world):
    """Optimizer state bytes per rank within 5% of 1/world of fastrms.torch.RMSprop's."""
    _, opt, _ = ranks.emulate(1, lambda step: 1)
    unsharded = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values())
    for r in runs[name]["ranks"]:
        assert unsharded / world <= r["state_bytes"] <= 1.05 * unsharded / world
        assert r["own_roundtrip"]


def test_grad_scaler_and_clipping_after_reduce_gradients(tmp_path):
    """With ``reduce_gradients()`` before ``scaler.step``, every rank's GradScaler sees the same
    mean: an inf on one rank skips the step on all (the scale halves everywhere), and
    ``clip_grad_norm_`` clips by the global norm: bit for bit one process's run at 2 ranks."""
    error = ranks.spawn(ranks.with_grad_scaler, 2, str(tmp_path), 8)
    assert error is None, error
    expected, scales = ranks.emulate_grad_scaler(8, 2)
    assert scales[3] == scales[2] / 2  # the inf at step 3 was seen
    for r in (torch.load(tmp_path / f"rank{r}.pt") for r in range(2)):
        assert r["scales"] == scales
        assert _equal(r["params"], expected)


def test_mismatched_params_and_a_failing_rank_give_clear_errors(tmp_path):
    """Params that differ across ranks: a ValueError on every rank naming the first mismatch.
    A rank that raises mid-training: the other's step raises within the timeout, no hang."""
    error = ranks.spawn(ranks.bad_input, 2, str(tmp_path))
    assert error is not None and "fails on purpose" in str(error)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for r in results:
        assert "param 0 is a torch.float32 param of shape (256, 32)" in r["mismatch"]
        assert "shape (128, 32) on the cpu in group 0 on rank 1" in r["mismatch"]
        assert "rank 1 has 5 params and rank 0 6" in r["count"]
    assert "ShardedRMSprop" in results[0]["failure"] and "rank 0 of 2" in results[0]["failure"]
    assert results[0]["seconds"] < ranks.TIMEOUT + 5
