"""The Numba kernels equal the NumPy reference bit for bit (docs/design.md §4)."""

import numpy as np
import pytest

import fastrms
from fastrms.functional import apply

from cases import (FIRST_STEP, NAMED_CASES, assert_same_buffers, covering_modes, grads,
                   make_buffers, rule_of, some_modes)

STEPS = 7
DTYPES = [np.float32, np.float64]


def run_both(rule, n, dtype, offset, seed):
    rng = np.random.default_rng(seed)
    ours = make_buffers(rule, n, dtype, rng, offset)
    ref = tuple(None if a is None else a.copy() for a in ours)
    for t, g in enumerate(grads(n, dtype, rng, STEPS, offset), start=FIRST_STEP):
        apply(rule, ours[0], g, *ours[1:], step=t, backend="numba")
        apply(rule, ref[0], g, *ref[1:], step=t, backend="numpy")
    return ours, ref


# Each mode combination is its own compiled loop (0.8 s of compilation each), and the dtype only
# types it. float32 runs a covering set: every combination of the values of any three modes
# (48 rules; each stage of the rule reads at most three modes). float64 runs six rules that take
# every value of every mode. All 384 combinations run bit for bit in the host-emulated CUDA
# kernel (tests/test_cuda_host_emulation.py), whose modes are run-time values: one compile.
@pytest.mark.parametrize("dtype,rules", [(np.float32, covering_modes), (np.float64, some_modes)],
                         ids=["float32-covering", "float64-some"])
def test_every_mode_combination(dtype, rules):
    """The rule's branches, each over 7 steps on an awkward small size (serial loop)."""
    for i, (desc, rule) in enumerate(rules()):
        ours, ref = run_both(rule, 37, dtype, offset=i % 3, seed=i)
        assert np.isfinite(ours[0]).all(), desc
        assert_same_buffers(ours, ref, err_msg=desc)


SERIAL_SIZES, PARALLEL_SIZE = [0, 1, 7, 4097], 2**20 + 3
# Every named case at the serial sizes, in both dtypes. The parallel loop is the same inlined
# element code in prange scaffolding that does not depend on the modes, at ~4 s of compilation
# per case and dtype: at 2^20 + 3 it runs the cases that together use every buffer, lerp form and
# the step, in both dtypes.
PARALLEL_CASES = ("plain", "centered_lerp_small_alpha", "bias_correction", "everything")
SIZED_CASES = [(c, n, d) for c in NAMED_CASES for d in DTYPES for n in SERIAL_SIZES] + [
    (c, PARALLEL_SIZE, d) for c in NAMED_CASES if c.desc in PARALLEL_CASES for d in DTYPES]


@pytest.mark.parametrize("case,n,dtype", SIZED_CASES, ids=[
    f"{c.desc}-{n}-{np.dtype(d).name}" for c, n, d in SIZED_CASES])
def test_named_cases_sizes_and_offsets(case, n, dtype):
    """The named cases at every size, serial and parallel loops, aligned and odd offsets."""
    rule = rule_of(case)
    for offset in (0, 1):
        ours, ref = run_both(rule, n, dtype, offset, seed=n + offset)
        assert_same_buffers(ours, ref)


def test_multidimensional_params_update_in_place():
    rng = np.random.default_rng(0)
    p = rng.standard_normal((3, 4, 5)).astype(np.float32)
    g = rng.standard_normal((3, 4, 5)).astype(np.float32)
    s = np.zeros_like(p)
    p_ref, s_ref = p.copy(), s.copy()
    fastrms.rmsprop_update(p, g, s, backend="numba")
    fastrms.rmsprop_update(p_ref, g, s_ref, backend="numpy")
    np.testing.assert_array_equal(p, p_ref)
    np.testing.assert_array_equal(s, s_ref)
    assert not np.array_equal(p, p_ref - 1)  # the update happened in the caller's array


def test_nan_and_inf_in_grad_propagate():
    p = np.ones(6, np.float32)
    g = np.array([np.nan, np.inf, -np.inf, 1.0, 0.0, -1.0], np.float32)
    s = np.zeros_like(p)
    fastrms.rmsprop_update(p, g, s)
    assert np.isnan(p[:3]).all()  # inf/√inf is NaN: never silently finite
    assert np.isnan(s[0]) and np.isinf(s[1]) and np.isinf(s[2])
    assert np.isfinite(p[3:]).all()
