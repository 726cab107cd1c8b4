"""The ``cupy`` backend: one launch of ``rmsprop.cu``'s kernel per step, on the arrays' device and
on the current stream of their framework (CuPy's, or torch's for torch tensors).

The module contract is ``fastrms.dispatch``'s. The launch is planned by ``loader.plan`` (pure,
tested without a GPU); ``update`` adds only the device call.
"""

from . import loader

NAME, PLACE = "cupy", "cuda"
DTYPES = loader.DTYPES


def availability():
    """``None`` where CuPy sees a CUDA device, else why not."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install failing at import
        return f"CuPy not installed ({exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        return f"no CUDA device (CuPy: {exc})"
    if count == 0:
        return "no CUDA device (CuPy sees none)"
    return None


def update(param, grad, square_avg, momentum_buffer, grad_avg, rule, step):
    import cupy

    from . import arrays

    device = param.device.id
    buffers = (param, grad, square_avg, momentum_buffer, grad_avg)
    launch = loader.plan(param.dtype, tuple(None if b is None else b.data.ptr for b in buffers),
                         param.size, rule, step, loader.multiprocessors(device))
    kernel = loader.kernel(device, launch.name)
    with cupy.cuda.Device(device), arrays.launch_stream(param):
        kernel((launch.grid,), (launch.block,), launch.args)
