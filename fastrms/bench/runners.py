"""One runner per benchmarked implementation: a ``step()`` over prepared buffers on its device.

``prepare(backend, variant, mode, n, host)`` returns a ``Runner`` or raises ``Skip`` with the
reason it cannot run here; ``mode`` is a precision mode (``fastrms.bench.modes``: a dtype name
such as "float32", or e.g. "bfloat16+master+clip"); ``host`` holds the NumPy buffers
(x, g, s, b, a) that host runners update in place and GPU runners copy once to the device (a
runner whose mode has a master makes it from x).
"""

import itertools
from typing import Callable, NamedTuple

import numpy as np

from ..dtypes import bfloat16_dtype, state_dtype
from ..dispatch import backend_info
from . import modes
from .timing import event_clock
from .traffic import VARIANTS

HOST_BACKENDS = ("numpy", "numba", "torch", "torch-foreach")
GPU_BACKENDS = ("cupy", "torch-cuda", "torch-cuda-foreach")
ALL_BACKENDS = HOST_BACKENDS + GPU_BACKENDS
# What "speedup vs torch" divides by: torch.optim.RMSprop's default path on that device.
TORCH_DEFAULT = {"cpu": "torch", "cuda": "torch-cuda-foreach"}
BOOK = dict(lr=0.01, alpha=0.9, eps=1e-6)
# +clip rows: RMSprop.step(grad_scale=GRAD_SCALE) with max_grad_norm=MAX_GRAD_NORM, which clips
# (the norm of n unscaled normal grads is about sqrt(n) / GRAD_SCALE; the factor's cost is the
# same either way).
GRAD_SCALE, MAX_GRAD_NORM = 1024.0, 1.0


def device_of(backend):
    return "cuda" if backend in GPU_BACKENDS else "cpu"


class Skip(Exception):
    """This row cannot run here; the message says why."""


class Runner(NamedTuple):
    step: Callable[[], None]
    device: str  # "cpu" or "cuda"
    sync: Callable[[], None] = None
    clock: Callable = None  # timing.event_clock on a GPU, see timing.median_seconds


def draws(n, seed=0):
    """The float32 values of x and g that ``host_buffers`` rounds to a mode's dtype (drawn once
    for every mode of a size: 2²⁶ normals take a second)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)


def host_buffers(variant, mode, n, seed=0, values=None):
    """x, g, s, b, a as NumPy arrays (b, a None where the variant has no such buffer); x and g of
    the mode's dtype, from ``values`` (``draws(n, seed)`` where None). ``Skip`` for bfloat16
    without ml_dtypes."""
    mode = modes.parse(mode)
    dtype = bfloat16_dtype() if mode.dtype == "bfloat16" else np.dtype(mode.dtype)
    if dtype is None:
        raise Skip("bfloat16 needs ml_dtypes (pip install ml_dtypes)")
    momentum, centered = VARIANTS[variant]
    x, g = (v.astype(dtype) for v in (values or draws(n, seed)))  # copies: x is written
    state = state_dtype(dtype)  # float32 for half params, as every backend keeps it
    s = np.ones(n, dtype=state)  # a warm state: no denormals, no NaN, steady speed
    b = np.zeros(n, dtype=state) if momentum else None
    a = np.zeros(n, dtype=state) if centered else None
    if mode.state8:  # the same values, coded (fastrms.eight_bit)
        from ..eight_bit import quantised

        s, b, a = (None if v is None else quantised(v, name)
                   for v, name in zip((s, b, a), ("square_avg", "momentum_buffer", "grad_avg")))
    return x, g, s, b, a


def alternating(g):
    """g, −g, g, …: a constant gradient would drive the centered variance s − a² to 0 (and, by
    rounding, below −ε: NaN); alternating signs keeps it at g² with the same memory traffic."""
    return itertools.cycle((g, -g))


def variant_kwargs(variant):
    momentum, centered = VARIANTS[variant]
    return dict(momentum=0.9 if momentum else 0.0, centered=centered)


def prepare(backend, variant, mode, n, host):
    try:
        make = _RUNNERS[backend]
    except KeyError:
        raise ValueError(f"unknown benchmark backend {backend!r}; choose from {', '.join(ALL_BACKENDS)}") from None
    return make(variant, modes.parse(mode), n, host)


def fastrms_step(backend, variant, mode, x, g, s, b, a, w=None):
    """A fastrms step in ``mode`` over these buffers (NumPy or CuPy; ``w`` the master where the
    mode has one): ``rmsprop_update``, or with ``+clip`` the whole ``RMSprop.step`` with
    ``max_grad_norm`` and ``grad_scale``. Its grads alternate in sign; stochastic rounding
    counts the steps."""
    import fastrms

    grads = alternating(g)
    if mode.clip or mode.state8:  # the whole RMSprop.step (8-bit state: the Codes in s, b, a)
        opt = fastrms.RMSprop(**BOOK, **variant_kwargs(variant), master_weights=mode.master,
                              rounding=mode.rounding, backend=backend,
                              max_grad_norm=MAX_GRAD_NORM if mode.clip else None)
        state = fastrms.RMSpropState(square_avg=s, momentum_buffer=b, grad_avg=a, master_param=w)
        scale = GRAD_SCALE if mode.clip else None
        return lambda: opt.step(x, next(grads), state, grad_scale=scale)
    kw = dict(BOOK, **variant_kwargs(variant), momentum_buffer=b, grad_avg=a, backend=backend)
    if mode.master or mode.stochastic:
        kw.update(master_param=w, rounding=mode.rounding)
    if mode.stochastic:
        steps = itertools.count(1)
        return lambda: fastrms.rmsprop_update(x, next(grads), s, step=next(steps), **kw)
    return lambda: fastrms.rmsprop_update(x, next(grads), s, **kw)


def _master(x, mode):
    """The float32 master of ``x`` where ``mode`` has one, else None."""
    return x.astype(np.float32) if mode.master else None


def _tried(step, catch=(TypeError, ValueError)):
    """``step`` after one call (a warm-up); ``Skip`` with the reason where that call raises
    ``catch`` (e.g. a dtype or mode this backend does not take)."""
    try:
        step()
    except catch as exc:
        raise Skip(f"{type(exc).__name__}: {exc}") from None
    return step


def _fastrms(name):
    def make(variant, mode, n, host):
        _usable_or_skip(name)
        x = host[0]
        step = fastrms_step(name, variant, mode, *host, w=_master(x, mode))
        return Runner(_tried(step), "cpu")

    return make


def _torch_step(param, grad, variant, foreach):
    """``step()`` of torch.optim.RMSprop on one param, its gradient alternating in sign."""
    import torch

    opt = torch.optim.RMSprop([param], foreach=foreach, **BOOK, **variant_kwargs(variant))
    grads = alternating(grad)

    def step():
        param.grad = next(grads)
        opt.step()

    return step


def _torch_cpu(foreach):
    def make(variant, mode, n, host):
        torch = _import_torch()
        _plain_or_skip(mode)
        p = torch.nn.Parameter(_tensor(torch, host[0].copy()))
        return Runner(_torch_step(p, _tensor(torch, host[1]), variant, foreach), "cpu")

    return make


def _plain_or_skip(mode):
    """``Skip`` for the modes torch.optim.RMSprop has no counterpart of."""
    if mode.mixed:
        raise Skip("torch.optim.RMSprop keeps no float32 master, has no stochastic rounding and "
                   "no fused clipping: torch rows run the plain float32, float64, float16 and "
                   "bfloat16 modes")


def _tensor(torch, array):
    """A CPU tensor over ``array``'s memory (bfloat16 through its bits: torch takes no ml_dtypes
    array)."""
    if array.dtype.itemsize == 2 and array.dtype != np.float16:
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def _import_torch():
    try:
        import torch
    except ImportError:
        raise Skip("torch is not installed (pip install 'fastrms[torch]')") from None
    return torch


def _usable_or_skip(backend, why=""):
    """``Skip`` with the reason where ``backend`` is unusable, after ``why`` (what needs it)."""
    info = backend_info(backend)
    if not info.usable:
        raise Skip(why + info.reason)


def _gpu_or_skip(why=""):
    """CuPy, where the cupy backend is usable (a device seen); else ``Skip`` with the reason,
    after ``why`` (what the row needs CuPy for)."""
    _usable_or_skip("cupy", why)
    import cupy

    return cupy


def _on_gpu(step, cupy, sync=None):
    """A CUDA runner, timed by events on the current stream (``sync``: the whole device's)."""
    return Runner(step, "cuda", sync=sync or cupy.cuda.runtime.deviceSynchronize,
                  clock=event_clock(cupy.cuda))


def _cupy_runner(variant, mode, n, host):
    cupy = _gpu_or_skip()
    _no_bfloat16_on_cupy(mode)
    x, g, s, b, a = (None if v is None else _to_device(cupy, v) for v in host)
    w = None if not mode.master else cupy.asarray(_master(host[0], mode))
    step = fastrms_step("cupy", variant, mode, x, g, s, b, a, w)
    # Any error of the first call skips the row with its reason (a mode the CUDA backend does not
    # take yet): the run goes on.
    return _on_gpu(_tried(step, Exception), cupy)


def _to_device(cupy, v):
    """A host buffer on the GPU (8-bit state: its codes and scales)."""
    return type(v)(*map(cupy.asarray, v)) if isinstance(v, tuple) else cupy.asarray(v)


def _no_bfloat16_on_cupy(mode):
    if mode.dtype == "bfloat16":
        raise Skip("CuPy has no bfloat16 arrays (the GPU rows are CuPy arrays)")


def _torch_cuda(foreach):
    def make(variant, mode, n, host):
        torch = _cuda_torch_or_skip()
        cupy = _gpu_or_skip("CuPy not usable (it times these rows and runs their roofline): ")
        _plain_or_skip(mode)
        p = torch.nn.Parameter(_tensor(torch, host[0]).cuda())
        step = _torch_step(p, _tensor(torch, host[1]).cuda(), variant, foreach)
        return _on_gpu(step, cupy, sync=torch.cuda.synchronize)

    return make


def _cuda_torch_or_skip():
    """torch, where it is installed, built with CUDA and sees a device; else ``Skip`` saying
    which of the three is missing."""
    torch = _import_torch()
    built = torch.version.cuda and f"CUDA {torch.version.cuda}"
    built = built or getattr(torch.version, "hip", None) and f"HIP {torch.version.hip}"
    if not built:
        raise Skip(f"torch has no CUDA: this build ({torch.__version__}) is CPU-only")
    if not torch.cuda.is_available():
        raise Skip(f"no CUDA device: torch {torch.__version__} ({built}) sees none")
    return torch


_RUNNERS = {
    "numpy": _fastrms("numpy"),
    "numba": _fastrms("numba"),
    "torch": _torch_cpu(foreach=False),
    "torch-foreach": _torch_cpu(foreach=True),
    "cupy": _cupy_runner,
    "torch-cuda": _torch_cuda(foreach=False),
    "torch-cuda-foreach": _torch_cuda(foreach=True),
}


def _copy(v):
    """A copy of a host buffer (8-bit state: of its codes and scales)."""
    return type(v)(*(a.copy() for a in v)) if isinstance(v, tuple) else v.copy()


def roofline_runner(device, variant, mode, n, host):
    """A kernel with the step's memory traffic in ``mode`` and one multiply-add per element, on
    ``device``; for a ``+clip`` mode, followed by one same-traffic read of the grads."""
    mode = modes.parse(mode)
    if device == "cpu":
        from ..cpu import same_traffic

        if mode.state8 and (mode.half or mode.clip):
            raise Skip("the 8-bit same-traffic loop is for float32 params without clipping")
        x, g, s, b, a = (None if v is None else _copy(v) for v in host)
        passes = [same_traffic.step_pass(x, g, s, b, a, _master(x, mode))]
        if mode.clip:
            passes.append(same_traffic.grad_read(g))
        return Runner(lambda: [run() for run in passes], "cpu")
    cupy = _gpu_or_skip()
    _no_bfloat16_on_cupy(mode)
    if mode.master or mode.clip or mode.state8:
        raise Skip("no GPU roofline for a master, clipping or 8-bit state yet: rmsprop.cu's "
                   "same-traffic build has no master buffer nor codes, grad_stats.cu no "
                   "same-traffic read")
    from .gpu_roofline import same_traffic

    x, g, s, b, a = (None if v is None else cupy.asarray(v) for v in host)
    return _on_gpu(lambda: same_traffic(x, g, s, b, a), cupy)
