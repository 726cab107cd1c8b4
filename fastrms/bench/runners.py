"""One runner per benchmarked implementation: a ``step()`` over prepared buffers on its device.

``prepare(backend, variant, dtype, n, host)`` returns a ``Runner`` or raises ``Skip`` with the
reason it cannot run here; ``host`` holds the NumPy buffers (x, g, s, b, a) that host runners
update in place and GPU runners copy once to the device.
"""

import itertools
from typing import Callable, NamedTuple

import numpy as np

from ..dtypes import state_dtype
from ..dispatch import backend_info
from .timing import event_clock
from .traffic import VARIANTS

HOST_BACKENDS = ("numpy", "numba", "torch", "torch-foreach")
GPU_BACKENDS = ("cupy", "torch-cuda", "torch-cuda-foreach")
ALL_BACKENDS = HOST_BACKENDS + GPU_BACKENDS
# What "speedup vs torch" divides by: torch.optim.RMSprop's default path on that device.
TORCH_DEFAULT = {"cpu": "torch", "cuda": "torch-cuda-foreach"}
BOOK = dict(lr=0.01, alpha=0.9, eps=1e-6)


def device_of(backend):
    return "cuda" if backend in GPU_BACKENDS else "cpu"


class Skip(Exception):
    """This row cannot run here; the message says why."""


class Runner(NamedTuple):
    step: Callable[[], None]
    device: str  # "cpu" or "cuda"
    sync: Callable[[], None] = None
    clock: Callable = None  # timing.event_clock on a GPU, see timing.median_seconds


def host_buffers(variant, dtype, n, seed=0):
    """x, g, s, b, a as NumPy arrays (b, a None where the variant has no such buffer)."""
    rng = np.random.default_rng(seed)
    momentum, centered = VARIANTS[variant]
    x = rng.standard_normal(n, dtype=np.float32).astype(dtype)
    g = rng.standard_normal(n, dtype=np.float32).astype(dtype)
    state = state_dtype(dtype)  # float32 for half params, as every backend keeps it
    s = np.ones(n, dtype=state)  # a warm state: no denormals, no NaN, steady speed
    b = np.zeros(n, dtype=state) if momentum else None
    a = np.zeros(n, dtype=state) if centered else None
    return x, g, s, b, a


def alternating(g):
    """g, −g, g, …: a constant gradient would drive the centered variance s − a² to 0 (and, by
    rounding, below −ε: NaN); alternating signs keeps it at g² with the same memory traffic."""
    return itertools.cycle((g, -g))


def variant_kwargs(variant):
    momentum, centered = VARIANTS[variant]
    return dict(momentum=0.9 if momentum else 0.0, centered=centered)


def prepare(backend, variant, dtype, n, host):
    try:
        make = _RUNNERS[backend]
    except KeyError:
        raise ValueError(f"unknown benchmark backend {backend!r}; choose from {', '.join(ALL_BACKENDS)}") from None
    return make(variant, dtype, n, host)


def _fastrms(name):
    def make(variant, dtype, n, host):
        import fastrms

        _usable_or_skip(name)
        x, g, s, b, a = host
        kw = dict(BOOK, **variant_kwargs(variant), momentum_buffer=b, grad_avg=a, backend=name)
        try:
            fastrms.rmsprop_update(x, g, s, **kw)
        except (TypeError, ValueError) as exc:  # e.g. a dtype this backend does not take
            raise Skip(str(exc)) from None
        grads = alternating(g)
        return Runner(lambda: fastrms.rmsprop_update(x, next(grads), s, **kw), "cpu")

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
    def make(variant, dtype, n, host):
        torch = _import_torch()
        x, g = host[0], host[1]
        p = torch.nn.Parameter(torch.from_numpy(x.copy()))
        return Runner(_torch_step(p, torch.from_numpy(g), variant, foreach), "cpu")

    return make


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


def _cupy_runner(variant, dtype, n, host):
    cupy = _gpu_or_skip()
    import fastrms

    x, g, s, b, a = (None if v is None else cupy.asarray(v) for v in host)
    kw = dict(BOOK, **variant_kwargs(variant), momentum_buffer=b, grad_avg=a, backend="cupy")
    grads = alternating(g)
    return _on_gpu(lambda: fastrms.rmsprop_update(x, next(grads), s, **kw), cupy)


def _torch_cuda(foreach):
    def make(variant, dtype, n, host):
        torch = _cuda_torch_or_skip()
        cupy = _gpu_or_skip("CuPy not usable (it times these rows and runs their roofline): ")
        p = torch.nn.Parameter(torch.from_numpy(host[0]).cuda())
        step = _torch_step(p, torch.from_numpy(host[1]).cuda(), variant, foreach)
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


def roofline_runner(device, variant, dtype, n, host):
    """A kernel with the step's memory traffic and one multiply-add per element, on ``device``."""
    if device == "cpu":
        from ..cpu.backend import DTYPES, PARALLEL_FROM
        from ..cpu.kernels import same_traffic_parallel, same_traffic_serial

        if np.dtype(dtype) not in DTYPES:
            raise Skip(f"no {dtype} roofline on the CPU (Numba has no {dtype} arithmetic)")
        kernel = same_traffic_parallel if n >= PARALLEL_FROM else same_traffic_serial
        x, g, s, b, a = (None if v is None else v.copy() for v in host)
        k = np.array([0.5], dtype=x.dtype)
        return Runner(lambda: kernel(x, g, s, b, a, k), "cpu")
    cupy = _gpu_or_skip()
    from .gpu_roofline import same_traffic

    x, g, s, b, a = (None if v is None else cupy.asarray(v) for v in host)
    return _on_gpu(lambda: same_traffic(x, g, s, b, a), cupy)
