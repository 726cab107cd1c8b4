"""The GPU multi-tensor path without a GPU: ``rmsprop_multi_kernel`` (rmsprop.cu) run on the CPU
(tests/native/cuda_host.h) equals the NumPy reference bit for bit, launched with what
``fastrms.cuda.plan.multi_plan`` builds (its pure parts: tests/test_cuda_loader.py), and
``fastrms.cuda.backend.update_many`` itself drives it with one upload and one launch;
``backend.update`` and the benchmark's roofline share one launch helper. An lr read from memory
gives the bits of the same lr by value, afresh at each launch, and ``backend.prepare_many``'s
launches equal ``update_many``'s with nothing but a launch per step.

Lists mix sizes 0, 1, 3 and 4097, aligned and unaligned views, over several steps, with a small
chunk and grid so that tensors split into several chunks and blocks take several chunks each.
Mixed precision: master weights, stochastic rounding with a counter offset per tensor (a buffer
split into a list keeps its bits), loss scale and clip factor, the AMP values read from memory.
"""

import sys
import types
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import pytest

from fastrms import reference, rounding
from fastrms._buffers import NAMES, Buffers, Extras
from fastrms._spec import Rule
from fastrms.cuda import loader, plan
import cases

F32 = np.dtype(np.float32)
STEPS = 3
SMALL_CHUNK = 1024  # 4097 elements: 5 chunks (the default, 2^16, would give one)
# (size, element offset of each of the 5 buffers from a 64-byte boundary): aligned, a common
# misalignment (scalar head, then vectors), different misalignments (all scalar).
LIST = [(0, (0,) * 5), (1, (0,) * 5), (3, (1,) * 5), (4097, (0,) * 5), (4097, (1,) * 5),
        (4097, (1, 0, 2, 3, 0)), (0, (1,) * 5)]


def _lists(rng, rule, dtype, layout):
    """(reference columns, emulated columns): the same state, the emulated copies at the offsets."""
    ref, emu = [[] for _ in range(4)], [[] for _ in range(4)]
    for n, offsets in layout:
        for k, (a, o) in enumerate(zip(cases.state(rng, rule, dtype, n), offsets[:1] + offsets[2:])):
            ref[k].append(None if a is None else a.copy())
            emu[k].append(None if a is None else cases.offset_view(a, o))
    return ([None if c[0] is None else c for c in ref], [None if c[0] is None else c for c in emu])


def _compare(run_step, rule, dtype, rng, layout=LIST, steps=STEPS):
    """``steps`` steps of ``run_step(t, grads, emulated columns)`` against the reference."""
    ref, emu = _lists(rng, rule, dtype, layout)
    launches = []
    for t in range(1, steps + 1):
        grads = [cases.grad(rng, dtype, n) for n, _ in layout]
        for j in range(len(layout)):
            reference.update(Buffers(ref[0][j], grads[j], *(None if c is None else c[j]
                                                            for c in ref[1:])), rule, t)
        launches.append(run_step(t, [cases.offset_view(g, o[1]) for g, (_, o) in zip(grads, layout)], emu))
    for name, want, got in zip(("param", "square_avg", "momentum_buffer", "grad_avg"), ref, emu):
        for j in range(len(layout)) if want is not None else ():
            cases.assert_same(got[j], want[j], err_msg=f"{name}[{j}] after {steps} steps")
    return launches


# ---------------------------------------------------------------------------------------------
# The kernel, emulated.

@pytest.mark.parametrize("dtype", cases.PARAM_DTYPES, ids=str)
def test_every_mode_on_a_mixed_list_equals_reference(host_kernels, dtype):
    rng = np.random.default_rng(11)

    def run_step(t, grads, emu):
        return host_kernels.step_many(rule, t, emu[0], grads, *emu[1:], chunk=SMALL_CHUNK)

    for desc, rule in cases.every_mode():
        try:
            launches = _compare(run_step, rule, dtype, rng)
        except AssertionError as exc:
            raise AssertionError(f"{dtype} {desc}: {exc}") from None
    launch = launches[-1]
    # Sizes 1 and 3: a chunk each; 4097 from element 0: 5; with a scalar head, cut from the vector
    # start: 4 (1024 + head, 1024, 1024, 1024 - head + 1).
    assert launch.n_tensors == len(LIST) and launch.n_chunks == 1 + 1 + 5 + 4 + 5
    assert launch.grid == 4 * 2 and launch.n_chunks > launch.grid  # blocks take several chunks


@pytest.mark.parametrize("dtype", cases.PARAM_DTYPES, ids=str)
def test_default_chunks_equal_reference(host_kernels, dtype):
    """The default chunk size, a tensor of several chunks with a scalar head next to small ones."""
    rng = np.random.default_rng(12)
    layout = [(2 * plan.CHUNK + 9, (1,) * 5), (10, (0,) * 5), (plan.CHUNK, (0,) * 5)]

    def run_step(t, grads, emu):
        return host_kernels.step_many(rule, t, emu[0], grads, *emu[1:], multiprocessors=1)

    for desc, rule in cases.some_modes()[:3]:
        launches = _compare(run_step, rule, dtype, rng, layout, steps=2)
        assert launches[-1].n_chunks == 3 + 1 + 1


@pytest.mark.parametrize("dtype", cases.PARAM_DTYPES, ids=str)
def test_indices_past_2_to_the_32(host_kernels, dtype):
    """Two 4097-element windows seen as elements [2^32 + 5, ...) of buffers that start that much
    earlier: 32-bit chunk offsets would write far outside them."""
    rule = Rule(momentum=0.9, centered=True, weight_decay=0.01)
    rng = np.random.default_rng(5)
    n, begin = 4097, 2**32 + 5
    sets = [[*cases.state(rng, rule, dtype, n)] for _ in range(2)]
    grads = [cases.grad(rng, dtype, n) for _ in range(2)]
    want = [[a.copy() for a in s] for s in sets]
    for w, g in zip(want, grads):
        reference.update(Buffers(w[0], g, *w[1:]), rule, None)

    table = np.array([[b.ctypes.data - begin * b.itemsize for b in (s[0], g, *s[1:])] + [0]
                      for s, g in zip(sets, grads)], dtype=np.int64)  # element 0: untouched
    launch = plan.multi_plan(dtype, table, [begin + n] * 2, rule, None, 2, SMALL_CHUNK,
                               begins=[begin] * 2)
    chunks = launch.descriptors[launch.n_tensors * plan.TENSOR_FIELDS:].reshape(-1, 5)
    assert chunks[:, 1].min() == begin and chunks[:, 4].max() == begin + n
    host_kernels.launch(launch, plan.multi_kernel_args(
        launch.descriptors.ctypes.data, launch.n_tensors, launch.n_chunks, launch.rule_args))
    for s, w in zip(sets, want):
        for got, ref in zip(s, w):
            cases.assert_same(got, ref)


# ---------------------------------------------------------------------------------------------
# The lr read from memory (lr_device: a float64 in host memory here).

LRS = (0.0123456789, 3e-4, 0.02)  # none of them a float32: each is rounded on the way


def _table(columns):
    """int64 [n, 6]: the columns' data addresses (0 where absent, master_param too if not given),
    as update_many takes them."""
    columns = tuple(columns) + (None,) * (6 - len(columns))
    return np.array([[0 if c is None else c[j].ctypes.data for c in columns]
                     for j in range(len(columns[0]))], np.int64)


SIZES = np.array([n for n, _ in LIST], np.int64)


@pytest.mark.parametrize("dtype", cases.PARAM_DTYPES, ids=str)
def test_lr_from_memory_equals_lr_by_value(host_kernels, dtype):
    """Over the mixed list: the lr at lr_device (the rule's own, 1.0, ignored) gives the bits of
    that lr in the rule, in modes that use the lr every way."""
    rng = np.random.default_rng(13)
    lr = np.zeros(1, np.float64)
    for desc, rule in cases.some_modes():
        by_value, from_memory = _lists(rng, rule, dtype, LIST)
        for t, value in enumerate(LRS, 1):
            grads = [cases.grad(rng, dtype, n) for n, _ in LIST]
            lr[0] = value
            host_kernels.step_many(replace(rule, lr=1.0), t, from_memory[0], grads,
                                   *from_memory[1:], chunk=SMALL_CHUNK, lr_device=lr.ctypes.data)
            host_kernels.step_many(replace(rule, lr=value), t, by_value[0], grads, *by_value[1:])
        for j in range(len(LIST)):
            cases.assert_same_buffers([None if c is None else c[j] for c in from_memory],
                                      [None if c is None else c[j] for c in by_value],
                                      err_msg=f"{dtype} {desc} [{j}]")


def test_the_same_multi_launch_reads_a_new_lr_from_memory(host_kernels):
    """As a replayed CUDA graph does: one launch, arguments and all, run again after a new lr
    was written where lr_device points."""
    rule = Rule(momentum=0.9, centered=True, weight_decay=0.01, decoupled_weight_decay=True)
    rng = np.random.default_rng(14)
    by_value, from_memory = _lists(rng, rule, F32, LIST)
    grads = [cases.grad(rng, F32, n) for n, _ in LIST]
    lr = np.array([LRS[0]])
    launch = plan.multi_plan(F32, _table((from_memory[0], grads, *from_memory[1:])), SIZES, rule,
                             None, 2, SMALL_CHUNK)
    args = plan.multi_kernel_args(launch.descriptors.ctypes.data, launch.n_tensors,
                                  launch.n_chunks, launch.rule_args, lr.ctypes.data)
    for value in LRS:
        lr[0] = value
        host_kernels.launch(launch, args)
        host_kernels.step_many(replace(rule, lr=value), None, by_value[0], grads, *by_value[1:])
    for j in range(len(LIST)):
        cases.assert_same_buffers([c[j] for c in from_memory], [c[j] for c in by_value])


# ---------------------------------------------------------------------------------------------
# The backend (update_many, prepare_many; update and the roofline's launch), with CuPy's few calls
# stood in for by host ones.

class _FakeStream:
    ptr = 1234
    current = False  # inside ``with stream``: CuPy launches and allocates on it

    def __enter__(self):
        self.current = True
        return self

    def __exit__(self, *exc):
        self.current = False
        return False

    def synchronize(self):
        self.log.append(("wait", self.ptr))


class _HostCopy:
    """What ``cupy.empty`` returns here: host memory with CuPy's ``set`` and ``data.ptr``."""

    def __init__(self, size, dtype, log):
        self.array = np.zeros(size, dtype)
        self.data = types.SimpleNamespace(ptr=self.array.ctypes.data)
        self.log = log

    def set(self, host, stream):
        self.log.append(("copy", stream.ptr, host.nbytes))
        self.array[...] = host


class _FakeDevice:
    def __init__(self, device_id):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _fake_cupy(log):
    return types.SimpleNamespace(empty=lambda size, dtype: _HostCopy(size, dtype, log),
                                 cuda=types.SimpleNamespace(Device=_FakeDevice))


class Launched(NamedTuple):
    name: str
    options: tuple
    grid: int
    block: int
    args: tuple


@pytest.fixture
def launches():
    """Every launch that ``host_backend`` sees, in full (``Launched``)."""
    return []


@pytest.fixture
def host_backend(host_kernels, monkeypatch, launches):
    """``fastrms.cuda.backend`` with CuPy's device calls routed to the host emulation; yields the
    log of copies and launches. Only the step's build runs (the emulation is built from the step's
    source); a launch with other options is recorded in ``launches`` and not run."""
    from fastrms.cuda import arrays, backend

    log = []
    stream = _FakeStream()
    stream.log = log

    def kernel(device, name, options=loader.OPTIONS):
        def launch(grid, block, args):
            log.append(("launch", name, stream.current))
            launches.append(Launched(name, options, grid[0], block[0], args))
            if options == loader.OPTIONS:
                host_kernels.launch(types.SimpleNamespace(name=name, grid=grid[0],
                                                          block=block[0]), args)
        return launch

    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(log))
    monkeypatch.setattr(arrays, "launch_stream", lambda array: stream)
    monkeypatch.setattr(arrays, "cupy_stream", lambda given, device: stream)
    monkeypatch.setattr(loader, "kernel", kernel)
    monkeypatch.setattr(loader, "multiprocessors", lambda device: 2)
    monkeypatch.setattr(backend, "_DEVICE_TABLES", type(backend._DEVICE_TABLES)())
    return backend, log


class _OnDevice(np.ndarray):
    """A host array that answers ``.device.id`` and ``.data.ptr`` as a CuPy array does."""
    device = types.SimpleNamespace(id=0)

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)


def test_backend_update_many_uploads_once_and_launches_once(host_backend):
    """Three steps (bias-corrected: new scalars each step) with the same buffers: the tables go to
    the device once, on the launch stream; each step is one launch on that stream."""
    backend, log = host_backend
    rule = Rule(momentum=0.5, centered=True, bias_correction=True)
    rng = np.random.default_rng(3)

    grad_buffers = []  # the same grad buffers every step, as a training loop has them

    def run_step(t, grads, emu):
        if not grad_buffers:
            grad_buffers.extend(g.copy() for g in grads)
        for buffer, g in zip(grad_buffers, grads):
            buffer[...] = g
        emu_params = [p.view(_OnDevice) for p in emu[0]]
        columns = (emu_params, grad_buffers, *emu[1:])
        table = _table(columns)
        sizes = np.array([n for n, _ in LIST], np.int64)
        del log[:]
        backend.update_many(Buffers(*columns), rule, t, table, sizes)
        return list(log)

    logs = _compare(run_step, rule, F32, rng)
    name = plan.multi_kernel_name(F32, True, True)
    tables_bytes = 8 * (7 * len(LIST) + 5 * 5)  # a row per tensor, then per chunk (2^16: one each)
    assert logs[0] == [("copy", _FakeStream.ptr, tables_bytes), ("launch", name, True)]
    assert logs[1] == logs[2] == [("launch", name, True)]  # same tables: the device copy is reused


def test_backend_update_many_launches_nothing_for_empty_tensors(host_backend):
    backend, log = host_backend
    p = np.zeros(0, np.float32).view(_OnDevice)
    backend.update_many(Buffers([p, p], [p, p], [p, p]), Rule(), None,
                        np.zeros((2, 6), np.int64), np.zeros(2, np.int64))
    assert log == []


@pytest.mark.parametrize("offset", [0, 1], ids=["aligned", "unaligned"])
def test_the_roofline_is_the_steps_launch_with_its_own_build(host_backend, launches, offset):
    """``backend.update`` (run here, equal to the reference) and the benchmark's roofline
    (``fastrms.bench.gpu_roofline``, recorded) go through one launch helper: the same instance,
    grid, block and arguments, on the same stream; only the compile options differ."""
    from fastrms.bench import gpu_roofline

    backend, log = host_backend
    rule = gpu_roofline._rule(True, True)  # the roofline's rule: its instance has every buffer
    rng = np.random.default_rng(6)
    param, square_avg, momentum_buffer, grad_avg = cases.state(rng, rule, F32, 4099)
    host = [param, cases.grad(rng, F32, 4099), square_avg, momentum_buffer, grad_avg]
    x, g, s, b, a = (cases.offset_view(v, offset).view(_OnDevice) for v in host)
    want = [v.copy() for v in host]
    reference.update(Buffers(*want), rule, None)
    backend.update(Buffers(x, g, s, b, a), rule, None)
    for got, ref in zip((x, g, s, b, a), want):
        cases.assert_same(np.asarray(got), ref)
    gpu_roofline.same_traffic(x, g, s, b, a)
    step, roofline = launches
    assert step.options == loader.OPTIONS and roofline.options == gpu_roofline.OPTIONS
    assert roofline.name == step.name == plan.kernel_name(F32, True, True)
    assert (roofline.grid, roofline.block) == (step.grid, step.block)
    assert [v.tobytes() for v in roofline.args] == [v.tobytes() for v in step.args]
    assert log == [("launch", step.name, True)] * 2


def _columns(state, grads):
    """param, grad, square_avg, momentum_buffer, grad_avg: the params seen as on a device."""
    return ([p.view(_OnDevice) for p in state[0]], grads, *state[1:])


def test_prepared_launch_equals_update_many_with_the_lr_from_memory(host_backend):
    """prepare_many copies the tables once and waits once; then each step is one launch on the
    stream given, nothing else, with the lr read from memory (new each step), and equals
    update_many with that lr by value. Bias-corrected: new scalars each step too."""
    backend, log = host_backend
    rule = Rule(momentum=0.5, centered=True, weight_decay=0.01, decoupled_weight_decay=True,
                bias_correction=True)
    rng = np.random.default_rng(15)
    by_value, from_memory = _lists(rng, rule, F32, LIST)
    fixed_grads = [cases.offset_view(np.zeros(n, F32), o[1]) for n, o in LIST]
    ours = _columns(from_memory, fixed_grads)
    lr = np.zeros(1, np.float64)
    prepared = backend.prepare_many(0, F32, _table(ours), SIZES, True, True)
    tables_bytes = 8 * (7 * len(LIST) + 5 * 5)
    assert log == [("copy", _FakeStream.ptr, tables_bytes), ("wait", _FakeStream.ptr)]
    assert prepared.matches(_table(ours), SIZES) and not prepared.matches(_table(ours), SIZES + 1)
    for t, value in enumerate(LRS, 1):
        grads = [cases.grad(rng, F32, n) for n, _ in LIST]
        for buffer, g in zip(fixed_grads, grads):
            buffer[...] = g
        theirs = _columns(by_value, grads)
        backend.update_many(Buffers(*theirs), replace(rule, lr=value), t, _table(theirs), SIZES)
        lr[0] = value
        del log[:]
        prepared.launch(rule, t, lr_device=lr.ctypes.data)
        assert log == [("launch", plan.multi_kernel_name(F32, True, True), True)]
    for j in range(len(LIST)):
        cases.assert_same_buffers([c[j] for c in ours[:1] + ours[2:]],
                                  [c[j] for c in by_value], err_msg=f"[{j}]")


def test_prepared_launch_refuses_a_rule_with_other_state_buffers(host_backend):
    backend, log = host_backend
    p = np.zeros(4, np.float32)
    table = _table(([p], [p], [p], [p], None))
    prepared = backend.prepare_many(0, F32, table, [4], True, False)
    with pytest.raises(ValueError, match="prepared for"):
        prepared.launch(Rule(momentum=0.9, centered=True))
    with pytest.raises(ValueError, match="prepared for"):
        prepared.launch(Rule())
    with pytest.raises(ValueError, match="lacks an address"):
        backend.prepare_many(0, F32, table, [4], True, True)  # no grad_avg column


def test_prepared_launch_over_empty_tensors_does_nothing(host_backend):
    backend, log = host_backend
    prepared = backend.prepare_many(0, F32, np.zeros((2, 6), np.int64), [0, 0], False, False)
    prepared.launch(Rule())
    assert prepared.layout is None and log == []


# ---------------------------------------------------------------------------------------------
# Mixed precision (issue 13): master weights, stochastic rounding with a counter offset per
# tensor, loss scale and clip factor, the AMP values read from memory.

OFFSETS = tuple(rounding.offset_of(j) for j in range(len(LIST)))


def _mixed_lists(rng, rule, dtype, master, layout=LIST):
    """(reference rows, emulated columns): per tensor param, grad, square_avg, momentum_buffer,
    grad_avg, master_param; the emulated copies at the layout's offsets (the master at the
    param's)."""
    ref = [cases.mixed_state(rng, rule, dtype, n, master) for n, _ in layout]
    emu = [[None if a is None else cases.offset_view(a, o)
            for a, o in zip(row, offsets + offsets[:1])] for row, (_, offsets) in zip(ref, layout)]
    return ref, [None if c[0] is None else list(c) for c in zip(*emu)]


def _reference_rows(ref, rule, t, extras, offsets):
    for row, offset in zip(ref, offsets):
        reference.update(Buffers(*row), rule, t, extras=extras._replace(offsets=offset))


def _rows(columns):
    """Per tensor, its buffers (None where a column is absent)."""
    return [[None if c is None else c[j] for c in columns] for j in range(len(columns[0]))]


def _assert_rows(emu, ref, err_msg=""):
    for j, row in enumerate(ref):
        cases.assert_same_buffers([None if c is None else c[j] for c in emu], row,
                                  names=NAMES, err_msg=f"{err_msg} [{j}]")


@pytest.mark.parametrize("stochastic", [False, True], ids=["nearest", "stochastic"])
@pytest.mark.parametrize("master", [False, True], ids=["", "master"])
@pytest.mark.parametrize("dtype", cases.PARAM_DTYPES, ids=str)
def test_mixed_precision_list_equals_reference(host_kernels, dtype, master, stochastic):
    """The mixed list (sizes 0 to 4097, aligned and not, several chunks each) with a counter
    offset per tensor: each tensor as the reference steps it with its own offset."""
    rng = np.random.default_rng(31)
    for rule in cases.MIXED_RULES:
        ref, emu = _mixed_lists(rng, rule, dtype, master)
        for t in (1, 2):
            extras = cases.extras_at(t, stochastic, offsets=OFFSETS)
            _reference_rows(ref, rule, t, extras, OFFSETS)
            host_kernels.step_many(rule, t, *emu, chunk=SMALL_CHUNK, extras=extras)
        _assert_rows(emu, ref, f"{dtype} {rule}")


@pytest.mark.parametrize("dtype", [d for d in cases.PARAM_DTYPES if d.itemsize == 2], ids=str)
def test_a_buffer_split_into_a_list_keeps_its_stochastic_bits(host_kernels, dtype):
    """Pieces of one buffer set, as a list whose counter offsets are the pieces' starts (plus the
    set's, here one whose counters wrap around 2^64): the bits of the whole set stepped by the
    reference, whatever the chunks, heads and vector paths of the pieces."""
    rule, n, offset = cases.MIXED_RULES[1], 5000, 2**64 - 2500
    whole = cases.mixed_state(np.random.default_rng(32), rule, dtype, n, master=True)
    ours = [None if a is None else a.copy() for a in whole]
    reference.update(Buffers(*whole), rule, 1, extras=cases.extras_at(1, True, offsets=offset))
    starts = [0, 1, 4, 5, 1029, 3000, n]
    pieces = [[None if a is None else a[b:e] for b, e in zip(starts, starts[1:])] for a in ours]
    offsets = tuple((offset + b) % 2**64 for b in starts[:-1])
    host_kernels.step_many(rule, 1, *(None if p[0] is None else p for p in pieces),
                           chunk=SMALL_CHUNK, extras=cases.extras_at(1, True, offsets=offsets))
    cases.assert_same_buffers(ours, whole, names=NAMES)


def test_multi_amp_values_from_memory(host_kernels):
    """found_inf set: the launch writes nothing to any tensor; the same launch with it cleared
    equals the grad scale and clip factor passed by value."""
    amp = cases.AMP.copy()
    by_value = Extras(float(amp[1]), float(amp[2]), rounding.STOCHASTIC, 99, OFFSETS)
    dtype = cases.PARAM_DTYPES[-1]
    for rule in cases.MIXED_RULES:
        rng = np.random.default_rng(33)
        ref, ours = _mixed_lists(rng, rule, dtype, True)
        _, theirs = _mixed_lists(np.random.default_rng(33), rule, dtype, True)
        amp[0] = 1.0
        launch = host_kernels.step_many(rule, 1, *ours, chunk=SMALL_CHUNK, extras=by_value._replace(
            grad_scale=5.0, clip=0.5, device_amp=amp.ctypes.data))
        _assert_rows(ours, ref, "nothing written")
        amp[0] = 0.0
        host_kernels.launch(launch, plan.multi_kernel_args(
            launch.descriptors.ctypes.data, launch.n_tensors, launch.n_chunks, launch.rule_args,
            0, amp.ctypes.data))
        host_kernels.step_many(rule, 1, *theirs, extras=by_value)
        _assert_rows(ours, _rows(theirs))


def test_backend_passes_extras_and_prepared_launches_equal_update_many(host_backend):
    """update_many and a prepared launch (its counter offsets in the tables) with stochastic
    rounding, master weights and the AMP values in memory: the same bits; a prepared launch
    refuses other counter offsets."""
    backend, log = host_backend
    rule, dtype = cases.MIXED_RULES[1], np.dtype(np.float16)
    _, ours = _mixed_lists(np.random.default_rng(34), rule, dtype, True)
    _, theirs = _mixed_lists(np.random.default_rng(34), rule, dtype, True)
    amp = cases.AMP.copy()
    prepared = backend.prepare_many(0, dtype, _table(ours), SIZES, *plan.state_buffers(rule),
                                    offsets=OFFSETS)
    for t in (1, 2):
        extras = cases.extras_at(t, True, offsets=OFFSETS, device_amp=amp.ctypes.data)
        prepared.launch(rule, t, extras=extras)
        their_columns = [theirs[0] and [p.view(_OnDevice) for p in theirs[0]], *theirs[1:]]
        backend.update_many(Buffers(*their_columns), rule, t, _table(theirs), SIZES,
                            extras=extras)
    _assert_rows(ours, _rows(theirs))
    with pytest.raises(ValueError, match="other counter offsets"):
        prepared.launch(rule, 3, extras=cases.extras_at(3, True, offsets=OFFSETS[::-1]))
    prepared.launch(rule, 3, extras=cases.extras_at(3, False, offsets=OFFSETS[::-1]))  # moot
