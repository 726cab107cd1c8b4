"""rmsprop.cu, run on the CPU (tests/native/cuda_host.h), equals the NumPy reference bit for bit.

The kernel is launched exactly as the cupy backend launches it (``fastrms.cuda.plan.plan``),
with a small grid (2 "multiprocessors") so that the grid-stride loops go round many times.
Every dtype x every one of the 384 mode combinations at sizes 0, 1, 3 and 4097 and at unaligned
offsets; six rules covering every mode value and every set of state buffers at 2^20 + 3. An lr read
from memory (lr_device) gives the bits of the same lr passed by value, and is read afresh by each
launch. Mixed precision: master weights, stochastic rounding (the counter of element i is
offset + i, past 2^32 too), loss scale and clip factor, and the AMP values read from memory.
"""

from dataclasses import replace

import numpy as np
import pytest

from fastrms import reference, rounding
from fastrms._buffers import NAMES, Buffers, Extras
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
        begin, vec_begin, vec_end, end = (int(a) for a in launch.args[6:10])
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
    launch = plan.plan(dtype, addresses + (None,), begin + n, rule, None, 2, begin=begin)
    assert launch.args[6] == begin and launch.args[9] == begin + n
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


# ---------------------------------------------------------------------------------------------
# Mixed precision (issue 13): float32 master weights, stochastic rounding of half params, the loss
# scale and clip factor, and the AMP values read from memory (amp_device: host memory here).

def _compare_mixed(host_kernels, rule, dtype, n, rng, master, stochastic, offsets=(0,) * 6):
    """Two steps on both paths from the same state, the emulated buffers at ``offsets``."""
    ref = cases.mixed_state(rng, rule, dtype, n, master)
    emu = [None if a is None else cases.offset_view(a, o) for a, o in zip(ref, offsets)]
    for t in (1, 2):
        reference.update(Buffers(*ref), rule, t, extras=cases.extras_at(t, stochastic))
        host_kernels.step(rule, t, *emu, extras=cases.extras_at(t, stochastic))
    cases.assert_same_buffers(emu, ref, names=NAMES)


@pytest.mark.parametrize("stochastic", [False, True], ids=["nearest", "stochastic"])
@pytest.mark.parametrize("master", [False, True], ids=["", "master"])
@pytest.mark.parametrize("dtype", cases.PARAM_DTYPES, ids=str)
def test_mixed_precision_equals_reference(host_kernels, dtype, master, stochastic):
    """Every dtype (rounding only matters to half params) with and without a master, at sizes
    with odd heads and tails, with a common misalignment (a scalar head, then vectors) and
    different ones (all scalar), in rules with every set of state buffers."""
    rng = np.random.default_rng(21)
    for rule in cases.MIXED_RULES:
        for n, offsets in ((1, (0,) * 6), (3, (0,) * 6), (4097, (0,) * 6), (4097, (1,) * 6),
                           (4097, (1, 0, 2, 3, 0, 1))):
            try:
                _compare_mixed(host_kernels, rule, dtype, n, rng, master, stochastic, offsets)
            except AssertionError as exc:
                raise AssertionError(f"{rule} n={n} offsets={offsets}: {exc}") from None


@pytest.mark.parametrize("dtype", cases.HALF_DTYPES, ids=str)
def test_stochastic_rounding_is_not_nearest_and_follows_the_counter(host_kernels, dtype):
    """The checks above are not vacuous: stochastic rounding moves many params off the nearest
    value, and another offset gives other bits."""
    rule = cases.MIXED_RULES[0]
    state = cases.mixed_state(np.random.default_rng(22), rule, dtype, 4097, master=True)
    params = []
    for stochastic, offset in ((False, cases.OFFSET), (True, cases.OFFSET), (True, 0)):
        extras = cases.extras_at(1, stochastic, offsets=offset)
        buffers = [None if a is None else a.copy() for a in state]
        host_kernels.step(rule, 1, *buffers, extras=extras)
        params.append(buffers[0].view(np.uint16))
    nearest, stochastic, other = params
    assert 0.2 < np.mean(nearest != stochastic) < 0.8
    assert 0.2 < np.mean(stochastic != other) < 0.8


@pytest.mark.parametrize("dtype", cases.HALF_DTYPES, ids=str)
def test_stochastic_counters_past_2_to_the_32(host_kernels, dtype):
    """A window of elements from 2^32 + 5 on (as test_indices_past_2_to_the_32): element i takes
    the counter offset + i, with i past 32 bits."""
    rule, n, begin = cases.MIXED_RULES[1], 4097, 2**32 + 5
    ref = cases.mixed_state(np.random.default_rng(23), rule, dtype, n, master=True)
    ours = [None if a is None else a.copy() for a in ref]
    extras = cases.extras_at(1, True, offsets=cases.OFFSET + begin)
    reference.update(Buffers(*ref), rule, 1, extras=extras)
    addresses = tuple(None if b is None else b.ctypes.data - begin * b.itemsize for b in ours)
    host_kernels.launch(plan.plan(dtype, addresses, begin + n, rule, 1, 2, begin=begin,
                                  extras=cases.extras_at(1, True)))
    cases.assert_same_buffers(ours, ref, names=NAMES)


@pytest.mark.parametrize("dtype", cases.PARAM_DTYPES, ids=str)
def test_amp_values_from_memory(host_kernels, dtype):
    """With found_inf set the launch writes nothing; the same launch, found_inf cleared, equals
    the grad scale and clip factor passed by value, bit for bit (the host's own are ignored)."""
    amp = cases.AMP.copy()
    by_value = Extras(float(amp[1]), float(amp[2]), rounding.STOCHASTIC, 99, cases.OFFSET)
    for rule in cases.MIXED_RULES:
        ours = cases.mixed_state(np.random.default_rng(24), rule, dtype, 4097, master=True)
        theirs = [None if a is None else a.copy() for a in ours]
        amp[0] = 1.0
        launch = host_kernels.step(rule, 1, *ours, extras=by_value._replace(
            grad_scale=5.0, clip=0.5, device_amp=amp.ctypes.data))
        cases.assert_same_buffers(ours, theirs, names=NAMES)  # nothing written
        amp[0] = 0.0
        host_kernels.launch(launch)
        host_kernels.step(rule, 1, *theirs, extras=by_value)
        cases.assert_same_buffers(ours, theirs, names=NAMES, err_msg=str(rule))


@pytest.mark.parametrize("stochastic", [False, True], ids=["nearest", "stochastic"])
@pytest.mark.parametrize("dtype", cases.HALF_DTYPES, ids=str)
def test_rounding_across_every_float32_exponent(host_kernels, dtype, stochastic):
    """With lr 0 the rule leaves the master as it is, so the param receives the master rounded:
    float32 values of every exponent (those of half subnormals, below the smallest one, past
    the largest finite one), zeros, infinities and NaN, as rounding.py rounds them. No float32
    denormals: the device flushes them (-ftz=true)."""
    rng = np.random.default_rng(25)
    exponents = np.repeat(np.arange(1, 255, dtype=np.uint32), 32)
    bits = (exponents << 23) | rng.integers(0, 1 << 23, exponents.size, dtype=np.uint32)
    bits |= rng.integers(0, 2, bits.size, dtype=np.uint32) << 31
    special = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00001, 0x477FE000,
                        0x477FF000, 0x7F7FFFFF, 0x33800000, 0x33000000], np.uint32)
    master = np.concatenate([bits, special]).view(np.float32)
    n, rule = master.size, Rule(lr=0.0)
    param, square_avg, _, _ = cases.state(rng, rule, dtype, n)
    ref = [param, cases.grad(rng, dtype, n), square_avg, None, None, master]
    ours = [None if a is None else a.copy() for a in ref]
    extras = cases.extras_at(1, stochastic)
    reference.update(Buffers(*ref), rule, 1, extras=extras)
    host_kernels.step(rule, 1, *ours, extras=extras)
    cases.assert_same(ours[0], ref[0])
    cases.assert_same(ours[5], master)
