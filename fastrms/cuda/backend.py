"""The ``cupy`` backend: one launch of ``rmsprop.cu``'s kernel per step, on the arrays' device and
on the current stream of their framework (CuPy's, or torch's for torch tensors).

The module contract is ``fastrms.dispatch``'s. The launch is planned by ``plan.plan`` (pure,
tested without a GPU) and compiled by ``loader.kernel``; ``launch`` adds only the device call, for
``update`` and for the benchmark's roofline (the same plan and launch, another build).
``update_many`` does the same for a list of buffer sets, in one launch of the multi-tensor kernel
(``plan.multi_plan``), after one small copy of its tables to the device. ``prepare_many`` does that
copy once for a fixed list, ahead: its launches allocate, copy and wait for nothing, so that a
CUDA graph can capture them (docs/gpu.md). Every entry takes the step's ``Extras`` (grad scale,
clip factor, rounding of half params, device AMP values; a ``master_param`` buffer or column
makes the rule run on float32 master weights).
"""

from collections import OrderedDict

import numpy as np

from .._buffers import PLAIN
from ..rounding import STOCHASTIC
from . import loader, plan, rule_args

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


def update(buffers, rule, step, threads=None, extras=PLAIN):
    """One launch over a validated ``Buffers`` of CuPy arrays (``threads``: CPU threads, unused)
    with ``extras`` (``fastrms._buffers.Extras``; ``offsets``: one int)."""
    launch(buffers, rule, step, extras=extras)


def launch(buffers, rule, step, options=loader.OPTIONS, extras=PLAIN):
    """Plan, compile (with ``options``) and launch one step over ``buffers`` on their device and
    their framework's current stream. ``update`` builds with ``loader.OPTIONS``; the benchmark's
    roofline (``fastrms.bench.gpu_roofline``) passes its own options and is launched the same way.
    """
    import cupy

    from . import arrays

    param = buffers.param
    device = param.device.id
    planned = plan.plan(param.dtype, tuple(None if b is None else b.data.ptr for b in buffers),
                        param.size, rule, step, loader.multiprocessors(device), extras=extras)
    kernel = loader.kernel(device, planned.name, options)
    with cupy.cuda.Device(device), arrays.launch_stream(param):
        kernel((planned.grid,), (planned.block,), planned.args)


def update8(buffers, rule, step, threads=None, extras=PLAIN):
    """One launch of the 8-bit kernel over a validated ``Buffers`` of CuPy arrays whose state
    buffers are ``fastrms.eight_bit.Codes`` (``plan8``)."""
    import cupy

    from . import arrays, plan8

    param = buffers.param
    if param.dtype not in plan8.DTYPES:
        raise TypeError(f"param has dtype {param.dtype}: the 8-bit kernel takes "
                        f"{', '.join(sorted(d.name for d in plan8.DTYPES))}")
    device = param.device.id
    addresses = [param.data.ptr, buffers.grad.data.ptr]
    for c in buffers[2:5]:
        addresses += [0, 0] if c is None else [c.codes.data.ptr, c.scales.data.ptr]
    addresses.append(0 if buffers.master_param is None else buffers.master_param.data.ptr)
    planned = plan8.plan8(param.dtype, addresses, param.size, rule, step,
                          loader.multiprocessors(device), extras)
    kernel = loader.kernel(device, planned.name)
    with cupy.cuda.Device(device), arrays.launch_stream(param):
        kernel((planned.grid,), (planned.block,), planned.args)


def update_many(columns, rule, step, table, sizes, threads=None, extras=PLAIN):
    """Update every buffer set of ``columns`` (a ``Buffers`` of lists) in one launch
    (``fastrms.functional`` has checked them all; ``table`` and ``sizes`` are their host-side
    addresses and element counts; ``extras.offsets``: one int per set).
    """
    import cupy

    from . import arrays

    params = columns.param
    device = params[0].device.id
    planned = plan.multi_plan(params[0].dtype, table, sizes, rule, step,
                              loader.multiprocessors(device), extras=extras)
    if planned is None:  # every tensor is empty
        return
    kernel = loader.kernel(device, planned.name)
    with cupy.cuda.Device(device):
        stream = arrays.launch_stream(params[0])
    with cupy.cuda.Device(device), stream:
        descriptors = _descriptors_on_device(cupy, device, stream, planned)
        _launch_many(kernel, planned, descriptors, planned.rule_args, 0, extras.device_amp)


def _launch_many(kernel, layout, tables, packed, lr_device, amp_device):
    """The multi-tensor ``kernel`` over ``layout`` (``tables``: its descriptors on the device) on
    the current device and stream: one launch, no allocation, no copy, no synchronization."""
    args = plan.multi_kernel_args(tables.data.ptr, layout.n_tensors, layout.n_chunks, packed,
                                  lr_device, amp_device)
    kernel((layout.grid,), (layout.block,), args)


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
    copy = _DEVICE_TABLES[key] = _upload(cupy, planned.descriptors, stream)
    if len(_DEVICE_TABLES) > _MAX_DEVICE_TABLES:
        _DEVICE_TABLES.popitem(last=False)
    return copy


def _upload(cupy, descriptors, stream):
    """A device copy of ``descriptors``: from CuPy's pool for the current stream, filled by one
    host-to-device copy queued on ``stream``."""
    copy = cupy.empty(descriptors.size, descriptors.dtype)
    copy.set(descriptors, stream=stream)
    return copy


# ---------------------------------------------------------------------------------------------
# Prepared launches: the tables of a fixed list on the device once, then launches that do nothing
# else, as a CUDA graph needs (a capture may neither allocate nor copy from pageable memory nor
# wait). Rebuilt, by the caller, for another list: an upload once per new set of addresses.

def prepare_many(device, param_dtype, table, sizes, has_momentum_buffer, has_grad_avg,
                 stream=None, offsets=0):
    """A ``PreparedMany``: the multi-tensor launch over the buffer sets that ``table`` and
    ``sizes`` describe (as ``update_many`` takes them) on device ``device``, for the instance with
    these state buffers: planned, compiled, and its tables copied to the device on ``stream`` (as
    ``PreparedMany.launch`` takes it), which is then waited for once, so that launches on any stream
    (a capturing one too) read them. Call it before a capture, not during one. ``offsets``: the
    stochastic-rounding counter of each set's element 0 (``Extras.offsets``), in the tables too.
    """
    import cupy

    from . import arrays

    buffers = (bool(has_momentum_buffer), bool(has_grad_avg))
    _check_columns(table, sizes, buffers)
    layout = plan.multi_layout(param_dtype, table, sizes, *buffers, loader.multiprocessors(device),
                               offsets=offsets)
    kernel = tables = None
    if layout is not None:
        kernel = loader.kernel(device, layout.name)
        with cupy.cuda.Device(device):
            stream = arrays.cupy_stream(stream, device)
            with stream:
                tables = _upload(cupy, layout.descriptors, stream)
            stream.synchronize()
    return PreparedMany(device, np.dtype(param_dtype), buffers, plan.table_key(table, sizes),
                        layout, kernel, tables, rule_args.counter_offsets(offsets, len(sizes)))


def _check_columns(table, sizes, buffers):
    """Every tensor with elements has the buffers the instance reads and writes (a zero address
    would be written through)."""
    needed = [0, 1, 2] + [3] * buffers[0] + [4] * buffers[1]
    rows = np.asarray(table, np.int64).reshape(-1, plan.COLUMNS)[np.asarray(sizes, np.int64) > 0]
    if (rows[:, needed] == 0).any():
        raise ValueError("the table lacks an address that the instance needs "
                         f"(param, grad, square_avg, momentum_buffer: {buffers[0]}, "
                         f"grad_avg: {buffers[1]})")


class PreparedMany:
    """One multi-tensor launch over a fixed list of buffer sets, its tables on the device
    (``prepare_many``). It keeps them alive: keep it as long as launches (a graph that captured
    one) may read them. ``layout`` is the plan (None when every tensor is empty: launches do
    nothing); ``matches(table, sizes)`` says whether it was prepared for those."""

    def __init__(self, device, param_dtype, buffers, key, layout, kernel, tables, offsets):
        self.device, self.param_dtype, self.buffers, self.key = device, param_dtype, buffers, key
        self.layout, self._kernel, self._tables, self._offsets = layout, kernel, tables, offsets
        self._memo = (None, None)  # the last (rule, step, extras) launched, and its RuleArgs

    def matches(self, table, sizes):
        """Whether this launch is the one for ``table`` and ``sizes`` (their bytes compared)."""
        return plan.table_key(table, sizes) == self.key

    def launch(self, rule, step=None, lr_device=0, stream=None, extras=PLAIN):
        """One step with ``rule`` (whose state buffers must be the prepared ones) at ``step`` on
        ``stream``: a CuPy stream, a torch CUDA stream (pass ``torch.cuda.current_stream()``
        for torch tensors: a capturing one under ``torch.cuda.graph``) or None for CuPy's current
        one. ``lr_device``: the device address of a float64 lr read at run time in place of
        ``rule.lr`` (0: ``rule.lr``). ``extras``: as ``update_many`` takes them; stochastic
        rounding needs the prepared ``offsets``. Allocates, copies and waits for nothing on the
        device; the rule is packed on the host, once per new rule (per step with bias correction
        or stochastic rounding: a key per step)."""
        if self.layout is None:
            return
        import cupy

        from . import arrays

        packed = self._rule_args(rule, step, rule_args.effective(extras, self.param_dtype))
        with cupy.cuda.Device(self.device):
            with arrays.cupy_stream(stream, self.device):
                _launch_many(self._kernel, self.layout, self._tables, packed, lr_device,
                             extras.device_amp)

    def _rule_args(self, rule, step, extras):
        key = (rule, step if rule.bias_correction else None, extras._replace(device_amp=0))
        last, packed = self._memo
        if key != last:
            if plan.state_buffers(rule) != self.buffers:
                raise ValueError(f"the rule updates (momentum_buffer, grad_avg) = "
                                 f"{plan.state_buffers(rule)}, prepared for {self.buffers}")
            offsets = rule_args.counter_offsets(extras.offsets, len(self._offsets))
            if extras.rounding == STOCHASTIC and not np.array_equal(offsets, self._offsets):
                raise ValueError("stochastic rounding with other counter offsets than prepared")
            packed = rule_args.for_rule(rule, step, self.param_dtype, extras)
            self._memo = (key, packed)  # one assignment: threads see a pair that belongs together
        return packed
