"""The ``cupy`` backend: one launch of ``rmsprop.cu``'s kernel per step, on the arrays' device and
on the current stream of their framework (CuPy's, or torch's for torch tensors).

The module contract is ``fastrms.dispatch``'s. The launch is planned by ``loader.plan`` (pure,
tested without a GPU); ``update`` adds only the device call. ``update_many`` does the same for a
list of buffer sets, in one launch of the multi-tensor kernel (``loader.multi_plan``), after one
small copy of its tables to the device.
"""

from collections import OrderedDict

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


def update(buffers, rule, step, threads=None, same_traffic=False):
    """One launch over a validated ``Buffers`` of CuPy arrays. ``same_traffic=True``: the
    benchmark's roofline build of the same instance (``loader.kernel``), launched exactly as the
    step is."""
    import cupy

    from . import arrays

    param = buffers.param
    device = param.device.id
    launch = loader.plan(param.dtype, tuple(None if b is None else b.data.ptr for b in buffers),
                         param.size, rule, step, loader.multiprocessors(device))
    kernel = loader.kernel(device, launch.name, same_traffic)
    with cupy.cuda.Device(device), arrays.launch_stream(param):
        kernel((launch.grid,), (launch.block,), launch.args)


def update_many(columns, rule, step, table, sizes, threads=None):
    """Update every buffer set of ``columns`` (a ``Buffers`` of lists) in one launch
    (``fastrms.functional`` has checked them all; ``table`` and ``sizes`` are their host-side
    addresses and element counts).
    """
    import cupy

    from . import arrays

    params = columns.param
    device = params[0].device.id
    launch = loader.multi_plan(params[0].dtype, table, sizes, rule, step,
                               loader.multiprocessors(device))
    if launch is None:  # every tensor is empty
        return
    kernel = loader.kernel(device, launch.name)
    with cupy.cuda.Device(device):
        stream = arrays.launch_stream(params[0])
    with cupy.cuda.Device(device), stream:
        descriptors = _descriptors_on_device(cupy, device, stream, launch)
        args = loader.multi_kernel_args(descriptors.data.ptr, launch.n_tensors, launch.n_chunks,
                                        launch.scalars, launch.modes, params[0].dtype)
        kernel((launch.grid,), (launch.block,), args)


# (device, stream, tables' bytes) -> their device copy. A training loop passes the same buffers
# every step, so after the first step the launch needs no copy at all. Keyed by the stream too:
# the copy is then ordered before every launch that reads it, and when an entry is dropped its
# memory goes back to CuPy's pool for that stream, reused only after the launches queued there.
_DEVICE_TABLES = OrderedDict()
_MAX_DEVICE_TABLES = 64


def _descriptors_on_device(cupy, device, stream, launch):
    key = (device, stream.ptr, launch.key)
    cached = _DEVICE_TABLES.get(key)
    if cached is not None:
        _DEVICE_TABLES.move_to_end(key)
        return cached
    copy = cupy.empty(launch.descriptors.size, launch.descriptors.dtype)
    copy.set(launch.descriptors, stream=stream)  # one host-to-device copy, queued on the stream
    _DEVICE_TABLES[key] = copy
    if len(_DEVICE_TABLES) > _MAX_DEVICE_TABLES:
        _DEVICE_TABLES.popitem(last=False)
    return copy
