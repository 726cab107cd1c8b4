"""rmsprop.cu, run on the CPU (tests/native/cuda_host.h), equals the NumPy reference bit for bit.

The kernel is launched exactly as the cupy backend launches it (``fastrms.cuda.plan.plan``),
with a small grid (2 "multiprocessors") so that the grid-stride loops go round many times.
Every dtype x every one of the 384 mode combinations at sizes 0, 1, 3 and 4097 and at unaligned
offsets; six rules covering every mode value and every set of state buffers at 2^20 + 3. An lr read
from memory (lr_device) gives the bits of the same lr passed by value, and is read afresh by each
launch.
"""

from dataclasses import replace

import numpy as np
import pytest

from fastrms import reference
from fastrms._buffers import Buffers
from fastrms._spec import Rule
from fastrms.cuda import plan
import cases

STEPS = 7


def _compare(host_kernels, rule, param_dtype, n, rng, offsets=(0, 0, 0, 0, 0)):
    """7 steps on both paths from the same state; returns the last launch plan."""
    param, square_avg, momentum_buffer, grad_avg = cases.state(rng, rule, param_dtype, n)
    ref = [param, square_avg, momentum_buffer, grad_avg]
    emu = [None if a is None else cases.offset_view(a, o)
           for a, o in zip(ref, (offsets[0],) + tuple(offsets[2:]))]
    ref = [None if a is None else a.copy() for a in ref]
    launch = None
    for t in range(1, STEPS + 1):
        grad = cases.grad(rng, param_dtype, n)
        reference.update(Buffers(ref[0], grad, *ref[1:]), rule, t)
        launch = host_kernels.step(rule, t, emu[0], cases.offset_view(grad, offsets[1]), *emu[1:])
    for name, want, got in zip(("param", "square_avg", "momentum_buffer", "grad_avg"), ref, emu):
        if want is not None:
            cases.assert_same(got, want, err_msg=f"{name} after {STEPS} steps")
    return launch


@pytest.mark.parametrize("n", [0, 1, 3, 4097])
@pytest.mark.parametrize("dtype", cases.PARAM_DTYPES, ids=str)
def test_every_mode_equals_reference(host_kernels, dtype, n):
    rng = np.random.default_rng(n)
    for desc, rule in cases.every_mode():
        try:
            _compare(host_kernels, rule, dtype, n, rng)
        except AssertionError as exc:
            raise AssertionError(f"{dtype} n={n} {desc}: {exc}") from None


# Same misalignment everywhere: a scalar head, then 128-bit steps. Different misalignments: never
# aligned together, so every element takes the scalar path.
LAYOUTS = {"head-then-vectors": (1, 1, 1, 1, 1), "mixed": (1, 0, 2, 3, 0)}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", cases.PARAM_DTYPES, ids=str)
def test_unaligned_views_equal_reference(host_kernels, dtype, layout):
    rng = np.random.default_rng(7)
    for desc, rule in cases.every_mode():
        try:
            launch = _compare(host_kernels, rule, dtype, 4097, rng, LAYOUTS[layout])
        except AssertionError as exc:
            raise AssertionError(f"{dtype} {layout} {desc}: {exc}") from None
        begin, vec_begin, vec_end, end = (int(a) for a in launch.args[5:9])
        if layout == "mixed":
            assert (vec_begin, vec_end) == (end, end)  # the scalar path did all the work
        else:
            assert 0 < vec_begin < plan.vector_width(dtype) and vec_end > vec_begin


@pytest.mark.slow
@pytest.mark.parametrize("dtype", cases.PARAM_DTYPES, ids=str)
def test_large_buffer_equals_reference(host_kernels, dtype):
    rng = np.random.default_rng(3)
    for desc, rule in cases.some_modes():
        try:
            _compare(host_kernels, rule, dtype, 2**20 + 3, rng)
        except AssertionError as exc:
            raise AssertionError(f"{dtype} {desc}: {exc}") from None


def test_some_modes_cover_every_mode_value_and_buffer_set():
    every = {(i, v) for _, rule in cases.every_mode() for i, v in enumerate(rule.modes())}
    some = [rule for _, rule in cases.some_modes()]
    assert {(i, v) for rule in some for i, v in enumerate(rule.modes())} == every
    assert {(r.momentum != 0, r.centered) for r in some} == {(m, a) for m in (0, 1) for a in (0, 1)}


@pytest.mark.parametrize("dtype", cases.PARAM_DTYPES, ids=str)
def test_indices_past_2_to_the_32(host_kernels, dtype):
    """A 4097-element window seen as elements [2^32 + 5, 2^32 + 4102) of a buffer that starts
    2^32 + 5 elements earlier: with 32-bit indices the kernel would write far outside it."""
    rule = Rule(momentum=0.9, centered=True, weight_decay=0.01)
    rng = np.random.default_rng(5)
    n, begin = 4097, 2**32 + 5
    param, square_avg, momentum_buffer, grad_avg = cases.state(rng, rule, dtype, n)
    grad = cases.grad(rng, dtype, n)
    want = [a.copy() for a in (param, square_avg, momentum_buffer, grad_avg)]
    reference.update(Buffers(want[0], grad, *want[1:]), rule, None)

    buffers = (param, grad, square_avg, momentum_buffer, grad_avg)
    addresses = tuple(b.ctypes.data - begin * b.itemsize for b in buffers)  # element 0: untouched
    launch = plan.plan(dtype, addresses, begin + n, rule, None, 2, begin=begin)
    assert launch.args[5] == begin and launch.args[8] == begin + n
    host_kernels.launch(launch)
    for got, ref in zip((param, square_avg, momentum_buffer, grad_avg), want):
        cases.assert_same(got, ref)


# ---------------------------------------------------------------------------------------------
# The lr read from memory (lr_device: a float64 that the emulated kernel reads from host memory).

LRS = (0.0123456789, 3e-4, 0.02)  # none of them a float32: each is rounded on the way


def _buffers(rng, rule, dtype, n):
    """param, grad, square_avg, momentum_buffer, grad_avg, and a copy of them all."""
    param, square_avg, momentum_buffer, grad_avg = cases.state(rng, rule, dtype, n)
    ours = [param, cases.grad(rng, dtype, n), square_avg, momentum_buffer, grad_avg]
    return ours, [None if b is None else b.copy() for b in ours]


@pytest.mark.parametrize("dtype", cases.PARAM_DTYPES, ids=str)
def test_lr_from_memory_equals_lr_by_value(host_kernels, dtype):
    """Two steps with the lr at lr_device, the rule's own lr (1.0) ignored, equal two steps with
    that lr in the rule, bit for bit, in modes that use the lr every way (inside and outside the
    momentum, Nesterov, decoupled weight decay, bias correction)."""
    rng = np.random.default_rng(8)
    lr = np.zeros(1, np.float64)
    for desc, rule in cases.some_modes():
        for value in LRS:
            from_memory, by_value = _buffers(rng, rule, dtype, 4097)
            lr[0] = value
            for t in (1, 2):
                host_kernels.step(replace(rule, lr=1.0), t, *from_memory, lr_device=lr.ctypes.data)
                host_kernels.step(replace(rule, lr=value), t, *by_value)
            cases.assert_same_buffers(from_memory[:1] + from_memory[2:],
                                      by_value[:1] + by_value[2:], err_msg=f"{desc} lr={value}")


@pytest.mark.parametrize("dtype", cases.PARAM_DTYPES, ids=str)
def test_the_same_launch_reads_a_new_lr_from_memory(host_kernels, dtype):
    """As a replayed CUDA graph does: one launch, arguments and all, run again after a scheduler
    wrote a new lr where lr_device points."""
    rule = Rule(momentum=0.9, centered=True, weight_decay=0.01, decoupled_weight_decay=True)
    from_memory, by_value = _buffers(np.random.default_rng(9), rule, dtype, 4097)
    lr = np.array([LRS[0]])
    launch = host_kernels.step(rule, None, *from_memory, lr_device=lr.ctypes.data)
    host_kernels.step(replace(rule, lr=LRS[0]), None, *by_value)
    for value in LRS[1:]:
        lr[0] = value
        host_kernels.launch(launch)
        host_kernels.step(replace(rule, lr=value), None, *by_value)
    cases.assert_same_buffers(from_memory[:1] + from_memory[2:], by_value[:1] + by_value[2:])
