"""End to end on a real GPU: the cupy backend against the NumPy reference and against
torch.optim.RMSprop on CUDA. Marked ``gpu``; skipped, with the reason, where CuPy sees no device.
"""

from dataclasses import replace

import numpy as np
import pytest

import fastrms
from fastrms import dispatch, reference, rounding
from fastrms._buffers import NAMES, Buffers, Extras
from fastrms._spec import Rule, rule_for
from fastrms.functional import apply
from conftest import require_cupy_device, require_torch_cuda
import cases

pytestmark = pytest.mark.gpu
STEPS = 7


@pytest.fixture(scope="module")
def cp():
    require_cupy_device()
    import cupy

    return cupy


@pytest.fixture(scope="module")
def torch_cuda(cp):
    return require_torch_cuda()


def _steps_on_device(cp, rule, dtype, n, rng, offset=0):
    """STEPS steps through fastrms (cupy backend) and the reference; assert identical results.

    Device results equal the reference bit for bit: IEEE division and square root, no FMA, and
    data clear of denormals (CuPy compiles with -ftz=true, which only changes denormals).
    """
    host = list(cases.state(rng, rule, dtype, n))
    device = []
    for a in host:
        if a is None:
            device.append(None)
            continue
        raw = cp.empty(a.size + offset, a.dtype)  # offset: an unaligned view of a larger buffer
        view = raw[offset:]
        view.set(a)
        device.append(view)
    for t in range(1, STEPS + 1):
        grad = cases.grad(rng, dtype, n)
        d_grad = cp.empty(n + offset, dtype)[offset:]
        d_grad.set(grad)
        reference.update(Buffers(host[0], grad, *host[1:]), rule, t)
        apply(rule, device[0], d_grad, *device[1:], step=t, backend="cupy")
    for name, want, got in zip(("param", "square_avg", "momentum_buffer", "grad_avg"), host, device):
        if want is not None:
            cases.assert_same(got.get(), want, err_msg=f"{dtype} n={n} {name}")


@pytest.mark.parametrize("dtype", cases.PARAM_DTYPES, ids=str)
def test_every_mode_equals_reference(cp, dtype):
    rng = np.random.default_rng(1)
    for desc, rule in cases.every_mode():
        for n, offset in ((1, 0), (4097, 0), (4097, 1)):
            try:
                _steps_on_device(cp, rule, dtype, n, rng, offset)
            except AssertionError as exc:
                raise AssertionError(f"{desc} offset={offset}: {exc}") from None


@pytest.mark.parametrize("dtype", cases.PARAM_DTYPES, ids=str)
def test_large_buffer_equals_reference(cp, dtype):
    rng = np.random.default_rng(2)
    for desc, rule in cases.some_modes():
        _steps_on_device(cp, rule, dtype, 2**20 + 3, rng)


def test_auto_dispatch_picks_cupy_and_compiles_each_instance_once(cp):
    from fastrms.cuda import loader

    assert dispatch.resolve("auto", "cuda:0").NAME == "cupy"
    p, g, s = (cp.full(1000, v, cp.float32) for v in (1.0, 0.5, 0.0))
    fastrms.rmsprop_update(p, g, s)
    misses = loader.kernel.cache_info().misses
    fastrms.rmsprop_update(p, g, s)
    assert loader.kernel.cache_info().misses == misses
    assert float(p[0]) < 1.0


def test_host_and_device_buffers_in_one_call_are_refused(cp):
    p = cp.zeros(4, cp.float32)
    with pytest.raises(ValueError, match="one place"):
        fastrms.rmsprop_update(p, np.zeros(4, np.float32), cp.zeros(4, cp.float32))


@pytest.mark.parametrize("momentum,centered", [(0, False), (0.9, False), (0, True), (0.9, True)])
def test_torch_tensors_track_torch_optim_rmsprop(torch_cuda, momentum, centered):
    torch = torch_cuda
    gen = torch.Generator(device="cuda").manual_seed(0)
    n = 10_000
    theirs = torch.randn(n, device="cuda", generator=gen)
    ours = theirs.clone()
    opt = torch.optim.RMSprop([theirs.requires_grad_()], lr=0.01, alpha=0.99, eps=1e-8,
                              momentum=momentum, centered=centered, foreach=False)
    rule = rule_for("torch", lr=0.01, momentum=momentum, centered=centered)
    square_avg = torch.zeros_like(ours)
    momentum_buffer = torch.zeros_like(ours) if momentum else None
    grad_avg = torch.zeros_like(ours) if centered else None
    for _ in range(100):
        grad = torch.randn(n, device="cuda", generator=gen)
        theirs.grad = grad.clone()
        opt.step()
        apply(rule, ours, grad, square_avg, momentum_buffer, grad_avg)
    torch.testing.assert_close(ours, theirs.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(square_avg, opt.state[theirs]["square_avg"], rtol=1e-4, atol=1e-5)


def test_torch_tensors_run_on_torchs_current_stream(torch_cuda):
    torch = torch_cuda
    from fastrms.cuda import arrays

    stream = torch.cuda.Stream()
    p = torch.ones(4096, device="cuda")
    with torch.cuda.stream(stream):
        array, place = arrays.as_cupy(p, "param")
        assert place == f"cuda:{p.device.index}"
        assert arrays.launch_stream(array).ptr == stream.cuda_stream
        g, s = torch.full_like(p, 0.5), torch.zeros_like(p)
        fastrms.rmsprop_update(p, g, s)
    stream.synchronize()
    want = np.ones(4096, np.float32)
    reference.update(Buffers(want, np.full(4096, 0.5, np.float32), np.zeros(4096, np.float32)),
                     Rule(), None)
    np.testing.assert_array_equal(p.cpu().numpy(), want)


def test_torch_bfloat16_tensors(torch_cuda):
    torch = torch_cuda
    if cases.bfloat16 is None:
        pytest.skip("ml_dtypes not installed")
    p = torch.linspace(-1, 1, 1001, device="cuda", dtype=torch.bfloat16)
    g = torch.linspace(1, -1, 1001, device="cuda", dtype=torch.bfloat16)
    s = torch.zeros(1001, device="cuda", dtype=torch.float32)
    want_p = p.cpu().view(torch.int16).numpy().view(cases.bfloat16).copy()
    want_s = np.zeros(1001, np.float32)
    reference.update(Buffers(want_p, g.cpu().view(torch.int16).numpy().view(cases.bfloat16), want_s),
                     Rule(), None)
    fastrms.rmsprop_update(p, g, s)
    torch.cuda.synchronize()
    cases.assert_same(p.cpu().view(torch.int16).numpy().view(cases.bfloat16), want_p)
    cases.assert_same(s.cpu().numpy(), want_s)


# ---------------------------------------------------------------------------------------------
# Multi-tensor steps: lists in one launch of rmsprop_multi_kernel (fastrms.cuda.backend.update_many).

# (size, element offset of the view into a larger buffer): sizes 0, 1, 3, 4097 and one of several
# 2^16-element chunks; aligned and unaligned (a scalar head, then vectors).
LIST = [(0, 0), (1, 0), (3, 1), (4097, 0), (4097, 1), (3 * 2**16 + 5, 1), (0, 1)]


def _device_view(cp, a, offset):
    view = cp.empty(a.size + offset, a.dtype)[offset:]
    view.set(a)
    return view


@pytest.fixture
def count_launches(cp, monkeypatch):
    """The names of the kernels launched while the test runs."""
    from fastrms.cuda import loader

    launched, real = [], loader.kernel

    def kernel(device, name, options=loader.OPTIONS):
        compiled = real(device, name, options)

        def launch(*args):
            launched.append(name)
            compiled(*args)
        return launch

    monkeypatch.setattr(loader, "kernel", kernel)
    return launched


def _list_steps(cp, rule, dtype, rng, update, steps=3):
    """``steps`` steps of ``update(t, device columns, device grads)`` against the reference."""
    host = [[] for _ in range(4)]
    for n, _ in LIST:
        for k, a in enumerate(cases.state(rng, rule, dtype, n)):
            host[k].append(a)
    host = [None if c[0] is None else c for c in host]
    device = [None if c is None else [_device_view(cp, a, o) for a, (_, o) in zip(c, LIST)]
              for c in host]
    for t in range(1, steps + 1):
        grads = [cases.grad(rng, dtype, n) for n, _ in LIST]
        for j, g in enumerate(grads):
            reference.update(Buffers(host[0][j], g, *(None if c is None else c[j] for c in host[1:])),
                             rule, t)
        update(t, device, [_device_view(cp, g, o) for g, (_, o) in zip(grads, LIST)])
    for name, want, got in zip(("param", "square_avg", "momentum_buffer", "grad_avg"), host, device):
        for j in range(len(LIST)) if want is not None else ():
            cases.assert_same(got[j].get(), want[j], err_msg=f"{dtype} {name}[{j}]")


@pytest.mark.parametrize("dtype", cases.PARAM_DTYPES, ids=str)
def test_lists_through_rmsprop_update_equal_reference_in_one_launch(cp, dtype, count_launches):
    from fastrms.cuda import plan

    rng = np.random.default_rng(3)
    kwargs = dict(lr=0.01, alpha=0.9, eps=1e-6, momentum=0.8, centered=True, weight_decay=0.05,
                  bias_correction=True)
    rule = Rule(**kwargs)

    def update(t, device, grads):
        del count_launches[:]
        fastrms.rmsprop_update(device[0], grads, device[1], momentum_buffer=device[2],
                               grad_avg=device[3], step=t, **kwargs)
        assert count_launches == [plan.multi_kernel_name(dtype, True, True)]

    _list_steps(cp, rule, dtype, rng, update)


@pytest.mark.parametrize("dtype", cases.PARAM_DTYPES, ids=str)
def test_lists_in_every_mode_equal_reference(cp, dtype, count_launches):
    rng = np.random.default_rng(4)
    for desc, rule in cases.every_mode():
        def update(t, device, grads):
            del count_launches[:]
            apply(rule, device[0], grads, *device[1:], step=t, backend="cupy")
            assert len(count_launches) == 1 and "multi" in count_launches[0]

        try:
            _list_steps(cp, rule, dtype, rng, update, steps=2)
        except AssertionError as exc:
            raise AssertionError(f"{desc}: {exc}") from None


def test_torch_tensor_lists_run_on_torchs_current_stream(torch_cuda):
    torch = torch_cuda
    from fastrms.cuda import arrays

    stream = torch.cuda.Stream()
    ps = [torch.ones(n, device="cuda") for n in (4096, 3, 70_001)]
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        array, _ = arrays.as_cupy(ps[0], "param")
        assert arrays.launch_stream(array).ptr == stream.cuda_stream
        gs = [torch.full_like(p, 0.5) for p in ps]
        ss = [torch.zeros_like(p) for p in ps]
        fastrms.rmsprop_update(ps, gs, ss)
    stream.synchronize()
    for p in ps:
        want = np.ones(p.numel(), np.float32)
        reference.update(Buffers(want, np.full(p.numel(), 0.5, np.float32),
                                 np.zeros(p.numel(), np.float32)), Rule(), None)
        np.testing.assert_array_equal(p.cpu().numpy(), want)


@pytest.mark.parametrize("offset", [0, 1], ids=["aligned", "unaligned"])
def test_benchmark_roofline_does_one_multiply_add_per_buffer(cp, offset):
    """fastrms bench's GPU roofline: the step's launch, with v ← v·0.5 + g for every buffer."""
    from fastrms.bench.gpu_roofline import same_traffic

    rng = np.random.default_rng(5)
    host = [rng.uniform(0.5, 2.0, 4099).astype(np.float32) for _ in range(5)]
    x, g, s, b, a = (_device_view(cp, v, offset) for v in host)
    same_traffic(x, g, s, b, a)
    for name, got, want in zip("xsba", (x, s, b, a), host[:1] + host[2:]):
        np.testing.assert_array_equal(got.get(), want * np.float32(0.5) + host[1], err_msg=name)
    np.testing.assert_array_equal(g.get(), host[1])


# ---------------------------------------------------------------------------------------------
# Prepared launches (backend.prepare_many): nothing but a launch per step, so that a CUDA graph can
# capture them, with the lr read from device memory (a scheduler's tensor) at each replay.

F32 = np.dtype(np.float32)
SIZES = np.array([n for n, _ in LIST], np.int64)
LRS = (0.02, 0.005, 0.0123456789)


def _twin_lists(cp, rule, dtype, rng):
    """Two device copies of one state over LIST: for each, its columns (param, grad, square_avg,
    momentum_buffer, grad_avg; lists of views at LIST's offsets, None where absent) and its
    address table."""
    host = []
    for n, _ in LIST:
        param, square_avg, momentum_buffer, grad_avg = cases.state(rng, rule, dtype, n)
        host.append((param, cases.grad(rng, dtype, n), square_avg, momentum_buffer, grad_avg))
    twins = []
    for _ in range(2):
        rows = [[None if a is None else _device_view(cp, a, o) for a in row]
                for row, (_, o) in zip(host, LIST)]
        table = np.array([[0 if b is None else b.data.ptr for b in row] + [0] for row in rows],
                         np.int64)  # no master_param
        twins.append(([None if c[0] is None else list(c) for c in zip(*rows)], table))
    return twins


def _assert_twins_equal(ours, theirs, err_msg=""):
    for j in range(len(LIST)):
        cases.assert_same_buffers([None if c is None else c[j].get() for c in ours[:1] + ours[2:]],
                                  [None if c is None else c[j].get()
                                   for c in theirs[:1] + theirs[2:]], err_msg=f"{err_msg} [{j}]")


@pytest.mark.parametrize("dtype", cases.PARAM_DTYPES, ids=str)
def test_prepared_launch_equals_update_many(cp, dtype):
    from fastrms.cuda import backend, plan

    rng = np.random.default_rng(6)
    device = cp.cuda.Device().id
    for desc, rule in cases.some_modes():
        (ours, table), (theirs, their_table) = _twin_lists(cp, rule, dtype, rng)
        prepared = backend.prepare_many(device, dtype, table, SIZES, *plan.state_buffers(rule))
        assert prepared.matches(table, SIZES) and not prepared.matches(their_table, SIZES)
        for t in (1, 2, 3):
            prepared.launch(rule, t)
            backend.update_many(Buffers(*theirs), rule, t, their_table, SIZES)
        _assert_twins_equal(ours, theirs, desc)


RULE = Rule(momentum=0.9, centered=True, weight_decay=0.01, decoupled_weight_decay=True)


def test_a_cupy_graph_replays_a_prepared_launch_with_the_lr_in_device_memory(cp):
    """Captured once, replayed once per lr written to device memory: equal, bit for bit, to
    eager launches with those lrs passed by value."""
    from fastrms.cuda import backend

    (ours, table), (theirs, their_table) = _twin_lists(cp, RULE, F32, np.random.default_rng(7))
    cp.cuda.Device().synchronize()  # the copies above: a non-blocking stream does not wait for them
    stream = cp.cuda.Stream(non_blocking=True)
    device = cp.cuda.Device().id
    prepared = backend.prepare_many(device, F32, table, SIZES, True, True, stream=stream)
    twin = backend.prepare_many(device, F32, their_table, SIZES, True, True, stream=stream)
    with stream:
        lr = cp.full(1, LRS[0], cp.float64)
        prepared.launch(RULE, lr_device=lr.data.ptr)  # warm-up: everything loaded before capture
        twin.launch(replace(RULE, lr=LRS[0]))
        stream.begin_capture()
        prepared.launch(RULE, lr_device=lr.data.ptr)
        graph = stream.end_capture()
        for value in LRS:
            lr.fill(value)
            graph.launch(stream=stream)
            twin.launch(replace(RULE, lr=value))
        stream.synchronize()
    _assert_twins_equal(ours, theirs)


def test_a_torch_cuda_graph_replays_a_prepared_launch_with_an_lr_tensor(torch_cuda):
    """Under torch.cuda.graph (global capture mode), launched on torch's current stream: the
    replays read the lr tensor an LR scheduler writes, and equal eager launches bit for bit."""
    from fastrms.cuda import backend

    torch = torch_cuda
    gen = torch.Generator(device="cuda").manual_seed(0)
    sizes = [4097, 3, 3 * 2**16 + 5]
    ours = [[torch.randn(n, device="cuda", generator=gen) for n in sizes] for _ in range(2)]
    ours += [[torch.rand(n, device="cuda", generator=gen) + 1 for n in sizes]]
    ours += [[torch.zeros(n, device="cuda") for n in sizes] for _ in range(2)]
    theirs = [[t.clone() for t in column] for column in ours]

    def prepare(columns):
        table = np.array([[c[j].data_ptr() for c in columns] + [0] for j in range(len(sizes))],
                         np.int64)  # no master_param
        return backend.prepare_many(torch.cuda.current_device(), np.float32, table, sizes, True,
                                    True, stream=torch.cuda.current_stream())

    prepared, twin = prepare(ours), prepare(theirs)
    lr = torch.tensor(LRS[0], dtype=torch.float64, device="cuda")
    side = torch.cuda.Stream()  # warm-up on a side stream, as torch's graph docs do
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        prepared.launch(RULE, lr_device=lr.data_ptr(), stream=torch.cuda.current_stream())
        twin.launch(replace(RULE, lr=LRS[0]), stream=torch.cuda.current_stream())
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        prepared.launch(RULE, lr_device=lr.data_ptr(), stream=torch.cuda.current_stream())
    for value in LRS:
        lr.fill_(value)
        graph.replay()
        twin.launch(replace(RULE, lr=value), stream=torch.cuda.current_stream())
    torch.cuda.synchronize()
    for column, (a, b) in enumerate(zip(ours, theirs)):
        for j in range(len(sizes)):
            assert torch.equal(a[j], b[j]), (column, j)


# ---------------------------------------------------------------------------------------------
# Mixed precision (issue 13) through the backend: master weights, stochastic rounding with a
# counter offset per buffer set, loss scale and clip factor, the AMP values in device memory.

MIXED_DTYPES = cases.HALF_DTYPES + [F32]


def _rows_on_device(cp, rows, offsets):
    return [[None if a is None else _device_view(cp, a, o) for a in row]
            for row, o in zip(rows, offsets)]


def _assert_rows(device_rows, host_rows, err_msg=""):
    for j, (ours, want) in enumerate(zip(device_rows, host_rows)):
        cases.assert_same_buffers([None if a is None else a.get() for a in ours], want,
                                  names=NAMES, err_msg=f"{err_msg} [{j}]")


@pytest.mark.parametrize("dtype", MIXED_DTYPES, ids=str)
def test_mixed_precision_equals_reference(cp, dtype):
    """backend.update: with and without a master, nearest and stochastic, at sizes with odd
    heads and tails and an unaligned view, two steps."""
    from fastrms.cuda import backend

    rng = np.random.default_rng(41)
    for rule in cases.MIXED_RULES:
        for master in (False, True):
            for stochastic in (False, True):
                sizes, offsets = (1, 3, 4097, 4097), (0, 0, 0, 1)
                host = [cases.mixed_state(rng, rule, dtype, n, master) for n in sizes]
                device = _rows_on_device(cp, host, offsets)
                for t in (1, 2):
                    extras = cases.extras_at(t, stochastic)
                    for h, d in zip(host, device):
                        reference.update(Buffers(*h), rule, t, extras=extras)
                        backend.update(Buffers(*d), rule, t, extras=extras)
                _assert_rows(device, host, f"{rule} master={master} stochastic={stochastic}")


def _table(rows):
    return np.array([[0 if b is None else b.data.ptr for b in row] for row in rows], np.int64)


@pytest.mark.parametrize("dtype", MIXED_DTYPES, ids=str)
def test_mixed_precision_lists_equal_reference(cp, dtype):
    """backend.update_many and a prepared launch with a counter offset per tensor (LIST: tensors
    of several chunks, aligned and not): each tensor as the reference steps it."""
    from fastrms.cuda import backend, plan

    rng = np.random.default_rng(42)
    offsets = tuple(rounding.offset_of(j) for j in range(len(LIST)))
    sizes = [n for n, _ in LIST]
    for rule in cases.MIXED_RULES:
        host = [cases.mixed_state(rng, rule, dtype, n, True) for n in sizes]
        ours = _rows_on_device(cp, host, [o for _, o in LIST])
        prepared_rows = _rows_on_device(cp, host, [o for _, o in LIST])
        prepared = backend.prepare_many(cp.cuda.Device().id, dtype, _table(prepared_rows), sizes,
                                        *plan.state_buffers(rule), offsets=offsets)
        for t in (1, 2):
            extras = cases.extras_at(t, True, offsets=offsets)
            for row, offset in zip(host, offsets):
                reference.update(Buffers(*row), rule, t, extras=extras._replace(offsets=offset))
            columns = Buffers(*(None if c[0] is None else list(c) for c in zip(*ours)))
            backend.update_many(columns, rule, t, _table(ours), sizes, extras=extras)
            prepared.launch(rule, t, extras=extras)
        _assert_rows(ours, host, str(rule))
        _assert_rows(prepared_rows, host, f"prepared {rule}")


@pytest.mark.parametrize("dtype", MIXED_DTYPES, ids=str)
def test_amp_values_in_device_memory(cp, dtype):
    """found_inf set on the device: neither kernel writes anything; cleared: both equal the
    grad scale and clip factor passed by value, bit for bit."""
    from fastrms.cuda import backend

    amp = cp.asarray(cases.AMP)
    by_value = Extras(float(cases.AMP[1]), float(cases.AMP[2]), rounding.STOCHASTIC, 99, 5)
    from_memory = by_value._replace(grad_scale=1.0, clip=1.0, device_amp=amp.data.ptr)
    rule = cases.MIXED_RULES[1]
    host = [cases.mixed_state(np.random.default_rng(43), rule, dtype, n, True)
            for n in (4097, 3, 70_001)]
    ours, theirs = (_rows_on_device(cp, host, (0, 1, 1)) for _ in range(2))
    sizes = [len(row[0]) for row in host]

    def step(rows, extras):
        backend.update(Buffers(*rows[0]), rule, 1, extras=extras)
        columns = Buffers(*(None if c[0] is None else list(c) for c in zip(*rows[1:])))
        backend.update_many(columns, rule, 1, _table(rows[1:]), sizes[1:],
                            extras=extras._replace(offsets=(5, 2**40)))

    amp[0] = 1.0
    step(ours, from_memory)
    _assert_rows(ours, host, "found_inf")
    amp[0] = 0.0
    step(ours, from_memory)
    step(theirs, by_value)
    _assert_rows(ours, [[None if a is None else a.get() for a in row] for row in theirs])



@pytest.mark.parametrize("dtype", cases.HALF_DTYPES, ids=str)
def test_rounding_across_every_float32_exponent(cp, dtype):
    """lr 0 leaves the master as it is, so the param receives it rounded by the device's own
    conversions (after stochastic_f32, or directly): every float32 exponent but denormals (the
    device flushes them), zeros, infinities, NaN, as fastrms.rounding rounds them."""
    from fastrms.cuda import backend

    rng = np.random.default_rng(44)
    bits = (np.repeat(np.arange(1, 255, dtype=np.uint32), 32) << 23) | rng.integers(
        0, 1 << 23, 254 * 32, dtype=np.uint32) | (rng.integers(0, 2, 254 * 32, np.uint32) << 31)
    special = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00001, 0x477FE000,
                        0x477FF000, 0x7F7FFFFF, 0x33800000, 0x33000000], np.uint32)
    master = np.concatenate([bits, special]).view(np.float32)
    rule, n = Rule(lr=0.0), master.size
    for stochastic in (False, True):
        param, square_avg, _, _ = cases.state(rng, rule, dtype, n)
        host = [param, cases.grad(rng, dtype, n), square_avg, None, None, master.copy()]
        device = _rows_on_device(cp, [host], [0])
        extras = cases.extras_at(1, stochastic)
        reference.update(Buffers(*host), rule, 1, extras=extras)
        backend.update(Buffers(*device[0]), rule, 1, extras=extras)
        _assert_rows(device, [host], f"stochastic={stochastic}")
