"""Multi-tensor steps: lists of buffers in one call equal one call per buffer, bit for bit."""

import numpy as np
import pytest

import fastrms
from fastrms.cpu import multi
from fastrms.functional import apply

from cases import FIRST_STEP, NAMED_CASES, assert_same_buffers, rule_of

DTYPES = [np.float32, np.float64]
SIZES_SERIAL = [0, 1, 31, 4097, 7]  # 4136 elements: the serial loop
SIZES_PARALLEL = [3, 40000, 0, 1, 2**15 + 5]  # over PARALLEL_FROM: chunked prange


def make_lists(rule, sizes, dtype, seed, offset=1):
    """Per-tensor buffers (views ``offset`` elements into their allocations: unaligned)."""
    rng = np.random.default_rng(seed)

    def buf(values):
        base = np.empty(values.size + offset, dtype=dtype)
        base[offset:] = values
        return base[offset:]

    cols = {"param": [], "grad": [], "square_avg": [], "momentum_buffer": [], "grad_avg": []}
    for n in sizes:
        cols["param"].append(buf(rng.standard_normal(n)))
        cols["grad"].append(buf(rng.standard_normal(n)))
        cols["square_avg"].append(buf(1 + rng.random(n)))
        cols["momentum_buffer"].append(buf(0.1 * rng.standard_normal(n)))
        cols["grad_avg"].append(buf(0.1 * rng.standard_normal(n)))
    if not rule.momentum:
        cols["momentum_buffer"] = None
    if not rule.centered:
        cols["grad_avg"] = None
    return cols


def copies(cols):
    return {k: None if v is None else [a.copy() for a in v] for k, v in cols.items()}


def step_list(rule, cols, step, backend="auto"):
    apply(rule, cols["param"], cols["grad"], cols["square_avg"], cols["momentum_buffer"],
          cols["grad_avg"], step=step, backend=backend)


def step_each(rule, cols, step, backend="numba"):
    for j in range(len(cols["param"])):
        apply(rule, *(None if cols[k] is None else cols[k][j]
                      for k in ("param", "grad", "square_avg", "momentum_buffer", "grad_avg")),
              step=step, backend=backend)


def assert_same(ours, ref):
    """Every buffer of every tensor, bit for bit."""
    for key in ours:
        assert (ours[key] is None) == (ref[key] is None), key
        for j, (a, b) in enumerate(zip(ours[key] or [], ref[key] or [])):
            assert_same_buffers([a], [b], names=[f"{key}[{j}]"])


# The element math of every case runs in the serial loop (all named cases in float32). The
# parallel loop adds only mode-independent scaffolding (chunks of a table over threads) around the
# same inlined sweep, at 4-5 s of compilation per case: it runs the plainest case and three that
# use every buffer, lerp and the step. float64 only retypes the same loops: three cases.
FLOAT64_CASES = ("plain", "bias_correction", "everything")
PARALLEL_CASES = ("plain", "centered_lerp_small_alpha", "bias_correction", "everything")
LIST_CASES = [(c, np.float32, SIZES_SERIAL) for c in NAMED_CASES] + [
    (c, np.float64, SIZES_SERIAL) for c in NAMED_CASES if c.desc in FLOAT64_CASES] + [
    (c, dtype, SIZES_PARALLEL) for dtype, names in ((np.float32, PARALLEL_CASES),
                                                    (np.float64, FLOAT64_CASES))
    for c in NAMED_CASES if c.desc in names]


@pytest.mark.parametrize("case,dtype,sizes", LIST_CASES, ids=[
    f"{c.desc}-{np.dtype(d).name}-{'serial' if s is SIZES_SERIAL else 'parallel'}"
    for c, d, s in LIST_CASES])
def test_list_equals_one_call_per_buffer(case, sizes, dtype):
    rule = rule_of(case)
    ours = make_lists(rule, sizes, dtype, seed=len(case.desc))
    ref = copies(ours)
    for t in range(FIRST_STEP, FIRST_STEP + 3):
        step_list(rule, ours, t)
        step_each(rule, ref, t)
    assert_same(ours, ref)
    assert not np.array_equal(ours["param"][1], make_lists(rule, sizes, dtype, len(case.desc))["param"][1])


def test_parallel_chunks_cover_every_element_once():
    sizes = np.array([0, 1, multi.CHUNK, multi.CHUNK + 1, 3 * multi.CHUNK - 1], dtype=np.int64)
    chunks = multi.chunks_of(sizes)
    covered = [np.zeros(n, dtype=int) for n in sizes]
    for j, start, stop in chunks:
        assert 0 < stop - start <= multi.CHUNK
        covered[j][start:stop] += 1
    assert all((c == 1).all() for c in covered)


def test_rmsprop_update_takes_lists_and_mixed_dtypes():
    rng = np.random.default_rng(1)
    params = [rng.standard_normal(n).astype(t) for n, t in ((5, np.float32), (9, np.float64),
                                                            (3, np.float32))]
    grads = [rng.standard_normal(p.size).astype(p.dtype) for p in params]
    squares = [np.zeros_like(p) for p in params]
    moms = [np.zeros_like(p) for p in params]
    ref = [(p.copy(), s.copy(), b.copy()) for p, s, b in zip(params, squares, moms)]
    fastrms.rmsprop_update(params, grads, squares, momentum=0.9, momentum_buffer=moms)
    for (p, s, b), g in zip(ref, grads):
        fastrms.rmsprop_update(p, g, s, momentum=0.9, momentum_buffer=b, backend="numpy")
    for (p, s, b), q, r, c in zip(ref, params, squares, moms):
        np.testing.assert_array_equal(q, p)
        np.testing.assert_array_equal(r, s)
        np.testing.assert_array_equal(c, b)


def test_per_tensor_steps_with_bias_correction():
    """``step`` may be a list: each tensor's bias correction uses its own step."""
    rule = rule_of(NAMED_CASES[11])  # bias_correction
    assert rule.bias_correction
    ours = make_lists(rule, [4, 6, 5], np.float32, seed=3)
    ref = copies(ours)
    steps = [1, 7, 1]
    step_list(rule, ours, steps)
    for j, t in enumerate(steps):
        apply(rule, ref["param"][j], ref["grad"][j], ref["square_avg"][j], None,
              ref["grad_avg"][j], step=t, backend="numpy")
    assert_same(ours, ref)


def test_backend_without_update_many_loops_over_update():
    """The NumPy reference has no multi-tensor entry: the list runs element by element."""
    rule = rule_of(NAMED_CASES[-1])
    ours = make_lists(rule, SIZES_SERIAL, np.float32, seed=4)
    ref = copies(ours)
    step_list(rule, ours, FIRST_STEP, backend="numpy")
    step_each(rule, ref, FIRST_STEP, backend="numba")
    assert_same(ours, ref)


def test_torch_and_numpy_buffers_in_one_list():
    torch = pytest.importorskip("torch")
    p0 = torch.ones(10)
    p1 = np.ones(4, np.float32)
    g = [torch.full((10,), 2.0), np.full(4, 2.0, np.float32)]
    s = [torch.zeros(10), np.zeros(4, np.float32)]
    address = p0.data_ptr()
    fastrms.rmsprop_update([p0, p1], g, s)
    assert p0.data_ptr() == address and (p0 < 1).all()  # updated in its own memory
    np.testing.assert_array_equal(p0.numpy(), p1[0].repeat(10))


def test_a_grad_may_serve_several_params():
    """Grads are only read, so one grad buffer may appear twice (written buffers may not)."""
    g = np.ones(8, np.float32)
    params = [np.zeros(8, np.float32), np.zeros(8, np.float32)]
    fastrms.rmsprop_update(params, [g, g], [np.zeros(8, np.float32), np.zeros(8, np.float32)])
    np.testing.assert_array_equal(params[0], params[1])


def test_second_call_compiles_nothing():
    rule = rule_of(NAMED_CASES[5])
    cols = make_lists(rule, SIZES_SERIAL, np.float32, seed=5)
    step_list(rule, cols, 1)
    kernel = multi.rmsprop_multi_kernel(rule.modes(), False)
    before = list(kernel.signatures)
    step_list(rule, make_lists(rule, [3, 2], np.float32, seed=6), 1)
    assert kernel.signatures == before


# -- bad input: every check runs before any write -----------------------------------------------

def _bad_inputs():
    """(description, mutate(cols) -> kwargs override or None, expected error)."""

    def last(key, value):
        def mutate(cols):
            cols[key][-1] = value(cols[key][-1])
        return mutate

    def overlap(cols):  # square_avg[2] shares memory with param[1]
        cols["square_avg"][2] = cols["param"][1][10: 10 + cols["param"][2].size]

    def grad_overlaps_state(cols):  # a grad may not alias a written buffer of another tensor
        cols["grad"][3] = cols["momentum_buffer"][1][: cols["param"][3].size]

    def read_only(cols):
        cols["square_avg"][-1].flags.writeable = False

    def short(cols):
        cols["grad"].pop()

    def wrong_place(cols):
        cols["grad"][-1] = object()

    return [
        ("dtype", last("grad", lambda a: a.astype(np.float64)), "grad\\[3\\] has dtype"),
        ("shape", last("square_avg", lambda a: np.zeros(a.size + 1, a.dtype)), "shape"),
        ("non_contiguous", last("param", lambda a: np.zeros(2 * a.size, a.dtype)[::2]),
         "param\\[3\\] must be C-contiguous"),
        ("read_only", read_only, "square_avg\\[3\\] is read-only"),
        ("overlap", overlap, "param\\[1\\] and square_avg\\[2\\] overlap"),
        ("grad_overlap", grad_overlaps_state, "overlap"),
        ("length", short, "3 grad buffers for 4 params"),
        ("not_an_array", wrong_place, "grad\\[3\\]: grad must be an array"),
    ]


@pytest.mark.parametrize("desc,mutate,error", _bad_inputs(), ids=[b[0] for b in _bad_inputs()])
def test_bad_element_leaves_every_buffer_unchanged(desc, mutate, error):
    """The bad element comes last (or late): nothing before it may have been written."""
    rule = rule_of(NAMED_CASES[-1])  # momentum and centered: all five columns
    cols = make_lists(rule, [5, 40000, 7, 2**15], np.float32, seed=7)
    mutate(cols)
    before = {k: [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in v]
              for k, v in cols.items()}
    with pytest.raises((TypeError, ValueError), match=error):
        step_list(rule, cols, 1)
    for key, column in cols.items():
        for j, (a, b) in enumerate(zip(column, before[key])):
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b, err_msg=f"{key}[{j}] was written")


def test_missing_state_list_is_refused():
    rule = rule_of(NAMED_CASES[5])  # momentum
    cols = make_lists(rule, [3], np.float32, seed=8)
    with pytest.raises(ValueError, match="momentum_buffer"):
        apply(rule, cols["param"], cols["grad"], cols["square_avg"], None, None)
    with pytest.raises(TypeError, match="must be a list"):
        apply(rule, cols["param"], cols["grad"][0], cols["square_avg"], cols["momentum_buffer"])
