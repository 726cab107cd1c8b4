"""The ``cupy`` backend: one launch of ``rmsprop.cu``'s kernel per step, on the arrays' device and
on the current stream of their framework (CuPy's, or torch's for torch tensors).

The module contract is ``fastrms.dispatch``'s. The launch is planned by ``plan.plan`` (pure,
tested without a GPU) and compiled by ``loader.kernel``; ``launch`` adds only the device call, for
``update`` and for the benchmark's roofline (the same plan and launch, another build).
``update_many`` does the same for a list of buffer sets, in one launch of the multi-tensor kernel
(``plan.multi_plan``), after one small copy of its tables to the device.
"""

from collections import OrderedDict

from . import loader, plan

NAME, PLACE = "cupy", "cuda"
DTYPES = plan.DTYPES


def availability():
    """``None`` where CuPy sees a CUDA device, else why not."""
    try:
        import cupy
    except ImportError as exc:
        return f"CuPy not installed ({exc})"
    except Exception as exc:  # noqa: BLE001 - installed, but its import fails (e.g. no writable
        return f"CuPy cannot be imported ({type(exc).__name__}: {exc})"  # home for ~/.cupy)
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        return f"no CUDA device (CuPy: {exc})"
    if count == 0:
        return "no CUDA device (CuPy sees none)"
    return None


def update(buffers, rule, step, threads=None):
    """One launch over a validated ``Buffers`` of CuPy arrays (``threads``: CPU threads, unused)."""
    launch(buffers, rule, step)


def launch(buffers, rule, step, options=loader.OPTIONS):
    """Plan, compile (with ``options``) and launch one step over ``buffers`` on their device and
    their framework's current stream. ``update`` builds with ``loader.OPTIONS``; the benchmark's
    roofline (``fastrms.bench.gpu_roofline``) passes its own options and is launched the same way.
    """
    import cupy

    from . import arrays

    param = buffers.param
    device = param.device.id
    planned = plan.plan(param.dtype, tuple(None if b is None else b.data.ptr for b in buffers),
                        param.size, rule, step, loader.multiprocessors(device))
    kernel = loader.kernel(device, planned.name, options)
    with cupy.cuda.Device(device), arrays.launch_stream(param):
        kernel((planned.grid,), (planned.block,), planned.args)


def update_many(columns, rule, step, table, sizes, threads=None):
    """Update every buffer set of ``columns`` (a ``Buffers`` of lists) in one launch
    (``fastrms.functional`` has checked them all; ``table`` and ``sizes`` are their host-side
    addresses and element counts).
    """
    import cupy

    from . import arrays

    params = columns.param
    device = params[0].device.id
    planned = plan.multi_plan(params[0].dtype, table, sizes, rule, step,
                              loader.multiprocessors(device))
    if planned is None:  # every tensor is empty
        return
    kernel = loader.kernel(device, planned.name)
    with cupy.cuda.Device(device):
        stream = arrays.launch_stream(params[0])
    with cupy.cuda.Device(device), stream:
        descriptors = _descriptors_on_device(cupy, device, stream, planned)
        args = plan.multi_kernel_args(descriptors.data.ptr, planned.n_tensors, planned.n_chunks,
                                      planned.rule_args)
        kernel((planned.grid,), (planned.block,), args)


# (device, stream, tables' bytes) -> their device copy. A training loop passes the same buffers
# every step, so after the first step the launch needs no copy at all. Keyed by the stream too:
# the copy is then ordered before every launch that reads it, and when an entry is dropped its
# memory goes back to CuPy's pool for that stream, reused only after the launches queued there.
_DEVICE_TABLES = OrderedDict()
_MAX_DEVICE_TABLES = 64


def _descriptors_on_device(cupy, device, stream, planned):
    key = (device, stream.ptr, planned.key)
    cached = _DEVICE_TABLES.get(key)
    if cached is not None:
        _DEVICE_TABLES.move_to_end(key)
        return cached
    copy = cupy.empty(planned.descriptors.size, planned.descriptors.dtype)
    copy.set(planned.descriptors, stream=stream)  # one host-to-device copy, queued on the stream
    _DEVICE_TABLES[key] = copy
    if len(_DEVICE_TABLES) > _MAX_DEVICE_TABLES:
        _DEVICE_TABLES.popitem(last=False)
    return copy
