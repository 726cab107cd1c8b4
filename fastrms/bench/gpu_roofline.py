"""The GPU roofline: an elementwise CuPy kernel with the fused step's memory traffic."""

import functools

import cupy


@functools.lru_cache(maxsize=None)
def _kernel(momentum, centered):
    state = ["s"] + (["b"] if momentum else []) + (["a"] if centered else [])
    body = "x = x * c + g; " + " ".join(f"{v} = {v} * c + g;" for v in state)
    return cupy.ElementwiseKernel(
        "T g, S c", "T x, " + ", ".join(f"S {v}" for v in state), body,
        f"fastrms_same_traffic_{''.join(state)}",
    )


def same_traffic(x, g, s, b, a):
    """Reads and writes x, s (and b, a), reads g: one multiply-add each, in place."""
    kernel = _kernel(b is not None, a is not None)
    c = s.dtype.type(0.5)
    kernel(g, c, x, s, *(v for v in (b, a) if v is not None))
