"""The GPU multi-tensor path without a GPU: ``rmsprop_multi_kernel`` (rmsprop.cu) run on the CPU
(tests/native/cuda_host.h) equals the NumPy reference bit for bit, launched with what
``fastrms.cuda.loader.multi_plan`` builds (tested here as pure functions), and
``fastrms.cuda.backend.update_many`` itself drives it with one upload and one launch.

Lists mix sizes 0, 1, 3 and 4097, aligned and unaligned views, over several steps, with a small
chunk and grid so that tensors split into several chunks and blocks take several chunks each.
"""

import sys
import types

import numpy as np
import pytest

from fastrms import reference
from fastrms._buffers import Buffers
from fastrms._spec import Rule
from fastrms.cuda import loader
from native import cases

F32, F64, F16 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)
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
    layout = [(2 * loader.CHUNK + 9, (1,) * 5), (10, (0,) * 5), (loader.CHUNK, (0,) * 5)]

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

    table = np.array([[b.ctypes.data - begin * b.itemsize for b in (s[0], g, *s[1:])]
                      for s, g in zip(sets, grads)], dtype=np.int64)  # element 0: untouched
    launch = loader.multi_plan(dtype, table, [begin + n] * 2, rule, None, 2, SMALL_CHUNK,
                               begins=[begin] * 2)
    chunks = launch.descriptors[launch.n_tensors * 5:].reshape(-1, 5)
    assert chunks[:, 1].min() == begin and chunks[:, 4].max() == begin + n
    host_kernels.launch(launch, loader.multi_kernel_args(
        launch.descriptors.ctypes.data, launch.n_tensors, launch.n_chunks, launch.scalars,
        launch.modes, dtype))
    for s, w in zip(sets, want):
        for got, ref in zip(s, w):
            cases.assert_same(got, ref)


# ---------------------------------------------------------------------------------------------
# The backend's update_many, with CuPy's few calls stood in for by host ones.

class _FakeStream:
    ptr = 1234
    current = False  # inside ``with stream``: CuPy launches and allocates on it

    def __enter__(self):
        self.current = True
        return self

    def __exit__(self, *exc):
        self.current = False
        return False


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


@pytest.fixture
def host_backend(host_kernels, monkeypatch):
    """``fastrms.cuda.backend`` with CuPy's device calls routed to the host emulation; yields the
    log of copies and launches."""
    from fastrms.cuda import arrays, backend

    log = []
    stream = _FakeStream()

    def kernel(device, name, same_traffic=False):
        assert not same_traffic  # the emulation is built from the step's source
        def launch(grid, block, args):
            log.append(("launch", name, stream.current))
            host_kernels.launch(loader.MultiLaunch(name, grid[0], block[0], *[None] * 6), args)
        return launch

    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(log))
    monkeypatch.setattr(arrays, "launch_stream", lambda array: stream)
    monkeypatch.setattr(loader, "kernel", kernel)
    monkeypatch.setattr(loader, "multiprocessors", lambda device: 2)
    monkeypatch.setattr(backend, "_DEVICE_TABLES", type(backend._DEVICE_TABLES)())
    return backend, log


class _OnDevice(np.ndarray):
    """A host array that answers ``.device.id`` as a CuPy array does."""
    device = types.SimpleNamespace(id=0)


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
        table = np.array([[c[j].ctypes.data for c in columns] for j in range(len(LIST))], np.int64)
        sizes = np.array([n for n, _ in LIST], np.int64)
        del log[:]
        backend.update_many(Buffers(*columns), rule, t, table, sizes)
        return list(log)

    logs = _compare(run_step, rule, F32, rng)
    name = loader.multi_kernel_name(F32, True, True)
    tables_bytes = 8 * 5 * (len(LIST) + 5)  # a row per tensor, then per chunk (2^16: one each)
    assert logs[0] == [("copy", _FakeStream.ptr, tables_bytes), ("launch", name, True)]
    assert logs[1] == logs[2] == [("launch", name, True)]  # same tables: the device copy is reused


def test_backend_update_many_launches_nothing_for_empty_tensors(host_backend):
    backend, log = host_backend
    p = np.zeros(0, np.float32).view(_OnDevice)
    backend.update_many(Buffers([p, p], [p, p], [p, p]), Rule(), None,
                        np.zeros((2, 5), np.int64), np.zeros(2, np.int64))
    assert log == []


# ---------------------------------------------------------------------------------------------
# The loader's pure functions.

def test_multi_instance_names():
    names = loader.all_multi_kernel_names()
    assert len(set(names)) == 16 and not set(names) & set(loader.all_kernel_names())
    assert loader.multi_kernel_name(F16, True, False) == \
        "fastrms::rmsprop_multi_kernel<__half, true, false>"


@pytest.mark.parametrize("dtype", cases.PARAM_DTYPES, ids=str)
def test_vector_spans_agree_with_vector_span(dtype):
    rng = np.random.default_rng(0)
    state = loader.compute_dtype(dtype)
    n = 400
    pages = 4096 * rng.integers(1, 100, (n, 5))
    misalign = np.concatenate([rng.integers(0, 8, (n, 2)) * dtype.itemsize,
                               rng.integers(0, 4, (n, 3)) * state.itemsize], axis=1)
    table = pages + misalign
    table[rng.random(n) < 0.5, 3] = 0  # absent buffers
    sizes = rng.choice([0, 1, 3, 5, 9, 100], n)
    vec_begins, vec_ends = loader.vector_spans(table, sizes, dtype)
    for row, size, vb, ve in zip(table, sizes, vec_begins, vec_ends):
        present = [(a, dtype.itemsize if i < 2 else state.itemsize) for i, a in enumerate(row) if a]
        want = loader.vector_span([a for a, _ in present], [s for _, s in present], 0, size,
                                  loader.vector_width(dtype))
        assert (vb, ve) == want, (row, size)
    assert (vec_begins < sizes).any() and (vec_begins == sizes).any()  # both kinds occurred


def test_chunks_tile_each_tensor_with_aligned_whole_vector_spans():
    sizes = np.array([0, 1, 3, 4097, 5000, 2048, 7])
    vec_begins = np.array([0, 1, 0, 3, 5000, 0, 2])  # 5000: unaligned, all scalar
    vec_ends = np.array([0, 1, 0, 4095, 5000, 2048, 6])
    chunks = loader.chunk_table(sizes, vec_begins, vec_ends, chunk=1024, begins=None)
    assert chunks.dtype == np.int64 and chunks.shape[1] == loader.CHUNK_FIELDS
    for j, (n, vb, ve) in enumerate(zip(sizes, vec_begins, vec_ends)):
        mine = chunks[chunks[:, 0] == j]
        if n == 0:
            assert len(mine) == 0
            continue
        begin, vec_begin, vec_end, end = mine[:, 1], mine[:, 2], mine[:, 3], mine[:, 4]
        assert begin[0] == 0 and end[-1] == n and (begin[1:] == end[:-1]).all()  # a tiling
        assert (begin <= vec_begin).all() and (vec_begin <= vec_end).all() and (vec_end <= end).all()
        assert ((vec_end - vec_begin) % 4 == 0).all() and ((vec_begin - vb) % 4 == 0).all()
        assert (vec_end - vec_begin).sum() == ve - vb  # every vector element stays a vector
        assert (end - begin).max() <= 1024 + 4
    assert len(chunks[chunks[:, 0] == 4]) == 5  # an unaligned tensor is still cut up


def test_chunk_size_must_keep_vectors_whole():
    for bad in (0, 1000, 2**31):
        with pytest.raises(ValueError, match="multiple of 16"):
            loader.chunk_table([10], [0], [8], chunk=bad)


def test_multi_launch_config():
    assert loader.multi_launch_config(1, 132) == (1, 256)
    assert loader.multi_launch_config(100, 132) == (100, 256)
    assert loader.multi_launch_config(10**6, 132) == (4 * 132, 256)  # one wave; blocks loop


def test_multi_kernel_args_are_typed_as_the_kernel_parameters():
    rule = Rule(momentum=0.9)
    for dtype, compute in ((F32, np.float32), (F64, np.float64), (F16, np.float32)):
        scalars = rule.scalars(loader.compute_dtype(dtype), None)
        args = loader.multi_kernel_args(4096, 3, 7, scalars, rule.modes(), dtype)
        assert [type(a) for a in args] == [np.uint64, np.uint64, np.int64] + [compute] * 8 + \
            [np.int32] * 6
        assert args[:3] == (4096, 4096 + 3 * 5 * 8, 7)  # the chunk table follows the tensor table
    with pytest.raises(ValueError):
        loader.multi_kernel_args(0, 1, 1, (1.0,), rule.modes(), F32)


def test_multi_plan_layout_and_memo():
    table = np.array([[4096, 8192, 12288, 0, 0], [16384, 20480, 24576, 0, 0]], np.int64)
    sizes = np.array([5000, 0], np.int64)
    launch = loader.multi_plan(F32, table, sizes, Rule(), 1, 132)
    assert launch.name == loader.multi_kernel_name(F32, False, False)
    assert (launch.descriptors[:10] == table.ravel()).all()
    assert launch.n_tensors == 2 and launch.n_chunks == 1 and launch.grid == 1
    assert list(launch.descriptors[10:]) == [0, 0, 0, 5000, 5000]
    assert loader.multi_plan(F32, table.copy(), sizes.copy(), Rule(), 2, 132) is launch  # no bias
    biased = Rule(bias_correction=True)
    first, second = (loader.multi_plan(F32, table, sizes, biased, t, 132) for t in (1, 2))
    assert first.scalars != second.scalars and first.descriptors is second.descriptors
    assert loader.multi_plan(F32, table, np.zeros(2, np.int64), Rule(), 1, 132) is None
