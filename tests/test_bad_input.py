"""Bad input gets a clear error naming the argument, and nothing is written."""

import numpy as np
import pytest

import fastrms


def buffers(n=16, dtype=np.float32, momentum=False, centered=False):
    rng = np.random.default_rng(0)
    d = {
        "param": rng.standard_normal(n).astype(dtype),
        "grad": rng.standard_normal(n).astype(dtype),
        "square_avg": rng.random(n).astype(dtype),
    }
    if momentum:
        d["momentum_buffer"] = rng.standard_normal(n).astype(dtype)
    if centered:
        d["grad_avg"] = rng.standard_normal(n).astype(dtype)
    return d


def assert_refused(match, bufs, exc=(ValueError, TypeError), **kwargs):
    arrays = {k: v for k, v in bufs.items() if isinstance(v, np.ndarray)}
    before = {k: v.copy() for k, v in arrays.items()}
    with pytest.raises(exc, match=match):
        fastrms.rmsprop_update(bufs["param"], bufs["grad"], bufs["square_avg"],
                               **{k: v for k, v in bufs.items() if k not in ("param", "grad", "square_avg")},
                               **kwargs)
    for k, v in arrays.items():
        np.testing.assert_array_equal(v, before[k], err_msg=f"{k} was written by a refused call")


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_mismatched_shapes(backend):
    b = buffers()
    b["grad"] = b["grad"][:8]
    assert_refused("grad has shape", b, backend=backend)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_mismatched_dtypes(backend):
    b = buffers()
    b["square_avg"] = b["square_avg"].astype(np.float64)
    assert_refused("square_avg has dtype float64", b, backend=backend)


@pytest.mark.parametrize("dtype", [np.int32, np.complex64])  # half params: test_mixed_precision
def test_unsupported_dtype_on_cpu(dtype):
    b = buffers(dtype=dtype)
    assert_refused("param has dtype", b, backend="numba")


def test_not_an_array():
    b = buffers()
    b["grad"] = [1.0] * 16
    assert_refused("grad must be an array", b)


def test_non_contiguous():
    b = buffers(32)
    b = {k: v[::2] for k, v in b.items()}
    assert_refused("param must be C-contiguous", b)


def test_read_only_state():
    b = buffers()
    b["square_avg"].flags.writeable = False
    assert_refused("square_avg is read-only", b)


def test_read_only_grad_is_fine():
    b = buffers()
    b["grad"].flags.writeable = False
    fastrms.rmsprop_update(b["param"], b["grad"], b["square_avg"])


def test_same_array_twice():
    b = buffers()
    b["square_avg"] = b["param"]
    assert_refused("param and square_avg overlap", b)


def test_overlapping_views():
    base = np.zeros(40, np.float32)
    b = {"param": base[0:20], "grad": np.ones(20, np.float32), "square_avg": base[10:30]}
    assert_refused("overlap", b)


def test_grad_overlapping_param():
    base = np.ones(40, np.float32)
    b = {"param": base[0:20], "grad": base[19:39], "square_avg": np.zeros(20, np.float32)}
    assert_refused("param and grad overlap", b)


def test_momentum_without_buffer_and_buffer_without_momentum():
    assert_refused("momentum_buffer", buffers(), momentum=0.9)
    assert_refused("momentum_buffer given", buffers(momentum=True))


def test_centered_without_grad_avg():
    assert_refused("grad_avg", buffers(), centered=True)
    assert_refused("grad_avg given", buffers(centered=True))


def test_bias_correction_without_step():
    assert_refused("step", buffers(), bias_correction=True)
    assert_refused("step", buffers(), bias_correction=True, step=0)


@pytest.mark.parametrize("name", ["lr", "eps", "momentum", "weight_decay"])
@pytest.mark.parametrize("value", [float("nan"), -1.0, float("inf")])
def test_bad_hyperparameters(name, value):
    extra = {"momentum_buffer": np.zeros(16, np.float32)} if name == "momentum" else {}
    assert_refused(name, {**buffers(), **extra}, **{name: value})


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_alpha_outside_unit_interval(alpha):
    assert_refused("alpha", buffers(), alpha=alpha)


def test_alpha_one_with_eps_zero():
    assert_refused("alpha=1", buffers(), alpha=1.0, eps=0.0)
    fastrms.rmsprop_update(**buffers(), alpha=1.0)  # allowed: the book's exercise


def test_nesterov_needs_lr_inside_and_momentum():
    assert_refused("lr_in_momentum", buffers(momentum=True), momentum=0.9, nesterov=True)
    assert_refused("nesterov=True requires momentum", buffers(), nesterov=True, lr_in_momentum=True)


def test_unknown_backend():
    assert_refused("unknown backend 'fortran'", buffers(), backend="fortran")


def test_backend_for_another_place():
    # The cupy backend cannot take host arrays (and is not usable on a machine without a GPU).
    assert_refused("cupy", buffers(), exc=(ValueError, RuntimeError), backend="cupy")


def test_zero_elements_is_a_no_op():
    p = np.zeros(0, np.float32)
    fastrms.rmsprop_update(p, p.copy(), p.copy())


def test_backends_lists_every_backend_with_a_reason():
    infos = {b.name: b for b in fastrms.backends()}
    assert {"numpy", "numba", "cupy"} <= set(infos)
    assert infos["numpy"].usable and infos["numba"].usable
    for info in infos.values():
        assert info.usable == (info.reason == "")


def test_list_call_rechecks_overlap_when_only_the_itemsize_changed():
    """A cached 'disjoint' verdict for float32 buffers must not cover float64 views that overlap."""
    raw, grads = np.zeros(64, np.float64), np.ones(32, np.float64)
    as32 = raw.view(np.float32)
    fastrms.rmsprop_update([as32[0:32]], [grads.view(np.float32)[0:32]], [as32[32:64]])
    # The same addresses and counts, 8-byte items: param and square_avg now overlap.
    before = raw.copy()
    with pytest.raises(ValueError, match="overlap"):
        fastrms.rmsprop_update([raw[0:32]], [grads], [raw[16:48]])
    np.testing.assert_array_equal(raw, before)


@pytest.mark.parametrize("missing", ["param", "grad", "square_avg"])
def test_none_for_a_required_buffer_is_a_clear_type_error(missing):
    b = buffers()
    b[missing] = None
    assert_refused(f"{missing} is None", b, exc=TypeError)


@pytest.mark.parametrize("missing", ["grad", "square_avg", "momentum_buffer"])
def test_none_in_a_list_is_a_clear_type_error(missing):
    b = buffers(momentum=True)
    lists = {k: [v, v.copy()] for k, v in b.items()}
    lists[missing] = [lists[missing][0], None] if missing != "grad" else None
    before = [a.copy() for k in ("param", "square_avg") for a in lists[k] if a is not None]
    with pytest.raises(TypeError, match=f"{missing}(\\[1\\])? is None"):
        fastrms.rmsprop_update(lists["param"], lists["grad"], lists["square_avg"], momentum=0.9,
                               momentum_buffer=lists["momentum_buffer"])
    after = [a for k in ("param", "square_avg") for a in lists[k] if a is not None]
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x, y)


def test_leaf_requiring_grad_is_refused_under_grad_mode_as_torch_does():
    torch = pytest.importorskip("torch")
    p = torch.ones(8, requires_grad=True)
    g, s = torch.full((8,), 0.5), torch.zeros(8)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        p.add_(1.0)  # torch's own refusal, which fastrms mirrors
    with pytest.raises(RuntimeError, match="param: a leaf Variable that requires grad .* in-place"):
        fastrms.rmsprop_update(p, g, s)
    assert torch.equal(p.detach(), torch.ones(8)) and torch.equal(s, torch.zeros(8))
    with pytest.raises(RuntimeError, match="param\\[0\\]: param: a leaf Variable"):
        fastrms.rmsprop_update([p], [g], [s])
    with torch.no_grad():  # an optimizer's step: allowed, and in place
        fastrms.rmsprop_update(p, g, s)
    assert (p.detach() < 1).all()
    grad_tracked = torch.full((8,), 0.5, requires_grad=True)  # grads are only read
    with torch.no_grad():
        fastrms.rmsprop_update(torch.ones(8), grad_tracked, torch.zeros(8))
    fastrms.rmsprop_update(torch.ones(8), grad_tracked, torch.zeros(8))
