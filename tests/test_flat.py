"""FlatBuffer: layout, views, alignment, and one fused call for a whole model."""

import pathlib
import runpy

import numpy as np
import pytest

import fastrms
from fastrms import FlatBuffer
from fastrms.functional import apply

from cases import NAMED_CASES, rule_of
from conftest import require_cupy_device

SHAPES = [(3, 4), (5,), (0,), (17,), (2, 3, 4), ()]
ROOT = pathlib.Path(__file__).resolve().parents[1]


def arrays(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("align", [64, 16, 128])
def test_views_hold_the_values_and_start_aligned(dtype, align):
    src = arrays(dtype)
    flat = FlatBuffer(src, align=align)
    assert flat.data.ndim == 1 and flat.data.size == flat.size and flat.data.dtype == dtype
    for view, a, offset in zip(flat.views, src, flat.offsets):
        assert view.shape == a.shape
        np.testing.assert_array_equal(view, a)
        assert view.__array_interface__["data"][0] % align == 0
        assert np.shares_memory(view, flat.data) or view.size == 0
        assert offset * flat.data.itemsize % align == 0
    assert flat.grad.shape == flat.data.shape and not flat.grad.any()
    assert flat.grad.__array_interface__["data"][0] % align == 0
    used = np.zeros(flat.size, bool)
    for view, offset in zip(flat.views, flat.offsets):
        used[offset:offset + view.size] = True
    assert not flat.data[~used].any()  # the padding is zero
    assert flat.size % (align // flat.data.itemsize) == 0


def test_views_write_through_and_originals_are_copied():
    src = arrays()
    flat = FlatBuffer(src)
    flat.views[0][1, 2] = 42.0
    assert flat.data[flat.offsets[0] + 6] == 42.0
    assert src[0][1, 2] != 42.0  # the originals are not aliased


@pytest.mark.parametrize("case", NAMED_CASES, ids=[c.desc for c in NAMED_CASES])
def test_one_fused_call_equals_a_call_per_array(case):
    rule = rule_of(case)
    flat = FlatBuffer(arrays(seed=1))
    flat.gather(arrays(seed=2), flat.grad)
    state = [flat.new_buffer(fill=1.0), flat.new_buffer() if rule.momentum else None,
             flat.new_buffer() if rule.centered else None]
    singles = [[a.copy(), np.ones_like(a), np.zeros_like(a) if rule.momentum else None,
                np.zeros_like(a) if rule.centered else None] for a in arrays(seed=1)]
    for t in range(1, 4):
        apply(rule, flat.data, flat.grad, *state, step=t)
        for (p, *s), g in zip(singles, arrays(seed=2)):
            apply(rule, p, g, *s, step=t)
    for i, buffer in enumerate([flat.data] + state):
        if buffer is None:
            continue
        for view, single in zip(flat.views_of(buffer), singles):
            np.testing.assert_array_equal(view, single[i], err_msg=f"buffer {i}")
    used = np.zeros(flat.size, bool)
    for view, offset in zip(flat.views, flat.offsets):
        used[offset:offset + view.size] = True
    assert not flat.data[~used].any()  # the padding stays zero through the steps


def test_gather_new_buffer_and_views_of():
    flat = FlatBuffer(arrays())
    out = flat.gather(arrays(seed=3))
    for view, a in zip(flat.views_of(out), arrays(seed=3)):
        np.testing.assert_array_equal(view, a)
    assert flat.new_buffer(np.float64).dtype == np.float64
    assert (flat.new_buffer(fill=1.0) == 1.0).all()
    with pytest.raises(ValueError, match="shape"):
        flat.views_of(np.zeros(flat.size + 1, np.float32))
    with pytest.raises(ValueError, match="segment"):
        flat.gather([np.zeros(2, np.float32)] * len(SHAPES))


def test_refuses_mixed_or_bad_input():
    with pytest.raises(TypeError, match="one\\s+kind, dtype and device"):
        FlatBuffer([np.zeros(3, np.float32), np.zeros(3, np.float64)])
    with pytest.raises(ValueError, match="align"):
        FlatBuffer([np.zeros(3, np.float32)], align=6)
    with pytest.raises(ValueError, match="at least one"):
        FlatBuffer([])
    with pytest.raises(TypeError, match="NumPy, CuPy and torch"):
        FlatBuffer([[1.0, 2.0]])
    with pytest.raises(ValueError, match="multiple must be a positive int"):
        FlatBuffer([np.zeros(3, np.float32)], multiple=0)


def test_multiple_pads_the_buffer_into_equal_shards():
    flat = FlatBuffer([np.ones(5, np.float32), np.ones(300, np.float32)], multiple=3 * 256)
    assert flat.size == 768 and flat.offsets == [0, 16]
    assert flat.data[16 + 300:].sum() == 0 and flat.data.sum() == 305


def test_torch_tensors_pack_into_a_torch_buffer():
    torch = pytest.importorskip("torch")
    src = [torch.randn(3, 4, requires_grad=True), torch.randn(7)]
    flat = FlatBuffer(src)
    assert isinstance(flat.data, torch.Tensor) and flat.data.data_ptr() % 64 == 0
    for view, a in zip(flat.views, src):
        assert view.shape == a.shape and torch.equal(view, a.detach())
        assert view.untyped_storage().data_ptr() == flat.data.untyped_storage().data_ptr()
    state = fastrms.RMSprop(convention="torch").init(flat.data)
    assert isinstance(state.square_avg, torch.Tensor)


def test_example_trains():
    """examples/numpy_flat_training.py runs from the repository and its loss falls."""
    example = runpy.run_path(str(ROOT / "examples" / "numpy_flat_training.py"))
    losses = example["train"](np, steps=200, verbose=False)
    assert losses[-1] < 0.1 * losses[0]


@pytest.mark.gpu
def test_example_with_cupy_where_present():
    require_cupy_device()
    import cupy
    example = runpy.run_path(str(ROOT / "examples" / "numpy_flat_training.py"))
    losses = example["train"](cupy, steps=200, verbose=False)
    assert losses[-1] < 0.1 * losses[0]
