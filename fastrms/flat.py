"""``FlatBuffer``: many arrays packed into one contiguous buffer, so that one fused call updates all.

A model's params are dozens of small arrays; stepping them one call each pays the call overhead
dozens of times. Packed into one buffer (and their grads into a second of the same layout, the
state into more), one ``rmsprop_update`` call steps the whole model. Each array stays reachable as
a view with its own shape, so the model computes with the views and writes its gradients into the
grad views.

Segments start at multiples of ``align`` bytes (64 by default: a cache line, and a whole AVX-512
vector), so that every segment's vector loads are aligned. The padding between segments holds
zeros in every buffer; a step maps a zero grad with zero state to a zero update, so the padding
stays zero (with eps = 0, 0/0 makes it NaN, which no view can see).
"""

import numpy as np

from .dtypes import array_kind, is_bfloat16, numpy_dtype, torch_dtype


class FlatBuffer:
    """``arrays`` (NumPy, CuPy or torch; one kind, dtype and device) copied into one buffer.

    >>> flat = FlatBuffer([w1, b1, w2, b2])
    >>> w1, b1, w2, b2 = flat.views            # compute with these from now on
    >>> gw1, gb1, gw2, gb2 = flat.grad_views   # write the gradients here
    >>> opt = fastrms.RMSprop(convention="torch"); state = opt.init(flat.data)
    >>> opt.step(flat.data, flat.grad, state)  # one fused call for the whole model

    Attributes: ``data`` (the 1-D buffer), ``views``, ``grad`` (a zeroed buffer of the same
    layout), ``grad_views``, ``shapes``, ``offsets`` (element offsets of the segments), ``size``
    (elements of the buffer, padding included), ``align`` (bytes). ``multiple``: the buffer's
    size is rounded up to a multiple of that many elements (zeros at the end), so that it splits
    into equal shards (``fastrms.torch.ShardedRMSprop``).
    """

    def __init__(self, arrays, align=64, multiple=1):
        arrays = list(arrays)
        if not arrays:
            raise ValueError("FlatBuffer needs at least one array")
        first = arrays[0]
        self.kind, self.dtype, self.device = _kind(first), first.dtype, _device(first)
        for i, a in enumerate(arrays):
            if _kind(a) != self.kind or a.dtype != self.dtype or _device(a) != self.device:
                raise TypeError(
                    f"array {i} is a {_kind(a)} {a.dtype} array on {_device(a)}, but array 0 a "
                    f"{self.kind} {self.dtype} one on {self.device}: one FlatBuffer holds one "
                    "kind, dtype and device (make one buffer per dtype and device)"
                )
        itemsize = _itemsize(first)
        if isinstance(align, bool) or not isinstance(align, int) or align < itemsize \
                or align % itemsize:
            raise ValueError(f"align must be a whole multiple of the itemsize {itemsize}, got {align!r}")
        self.align = align
        step = align // itemsize
        self.shapes = [tuple(a.shape) for a in arrays]
        self.offsets = []
        offset = 0
        for a in arrays:
            self.offsets.append(offset)
            offset += -(-_numel(a) // step) * step  # round each segment up to the alignment
        if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
            raise ValueError(f"multiple must be a positive int, got {multiple!r}")
        self.size = -(-offset // multiple) * multiple
        self.data = self.new_buffer()
        self.views = self.views_of(self.data)
        self.gather(arrays, self.data)
        self.grad = self.new_buffer()
        self.grad_views = self.views_of(self.grad)

    def __len__(self):
        return len(self.shapes)

    def new_buffer(self, dtype=None, fill=0):
        """A new 1-D buffer with this layout (``fill`` everywhere), aligned like ``data``.

        ``dtype`` defaults to the arrays' (pass float32 for the state of half-precision params);
        a NumPy dtype is translated for torch buffers.
        """
        dtype = self.dtype if dtype is None else dtype
        dtype = torch_dtype(dtype) if self.kind == "torch" else np.dtype(dtype)
        itemsize = dtype.itemsize
        spare = self.align // itemsize  # room to slide the start onto an aligned address
        raw = _full(self.kind, self.size + spare, dtype, self.device, fill)
        skip = (-_address(raw) % self.align) // itemsize
        return raw[skip:skip + self.size]

    def views_of(self, buffer):
        """Views of ``buffer`` (laid out like ``data``) with the arrays' shapes."""
        if tuple(buffer.shape) != (self.size,):
            raise ValueError(f"buffer has shape {tuple(buffer.shape)}, expected ({self.size},)")
        return [buffer[o:o + _prod(s)].reshape(s) for o, s in zip(self.offsets, self.shapes)]

    def gather(self, arrays, buffer=None):
        """Copy ``arrays`` (one per segment) into ``buffer`` (default: a new one); return it."""
        arrays = list(arrays)
        if len(arrays) != len(self.shapes):
            raise ValueError(f"{len(arrays)} arrays for a FlatBuffer of {len(self.shapes)}")
        if buffer is None:
            buffer = self.new_buffer()
        for view, a in zip(self.views_of(buffer), arrays):
            if tuple(a.shape) != tuple(view.shape):
                raise ValueError(f"array of shape {tuple(a.shape)} for a segment of {tuple(view.shape)}")
        for view, a in zip(self.views_of(buffer), arrays):
            _copy(view, a)
        return buffer


def _kind(a):
    kind = array_kind(a)
    if kind is None:
        raise TypeError(f"FlatBuffer packs NumPy, CuPy and torch arrays, not {type(a).__name__}")
    return kind


def _device(a):
    kind = _kind(a)
    if kind == "numpy":
        return "cpu"
    if kind == "cupy":
        return f"cuda:{a.device.id}"
    return str(a.device)


def _numel(a):
    return int(a.numel()) if _kind(a) == "torch" else int(a.size)


def _prod(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def _itemsize(a):
    return a.element_size() if _kind(a) == "torch" else a.itemsize


def _full(kind, n, dtype, device, fill):
    """A 1-D buffer of ``n`` elements; ``dtype`` is torch's for torch buffers, else NumPy's."""
    if kind == "torch":
        import torch

        if device == "cpu" and not is_bfloat16(dtype):  # torch hands NumPy no bfloat16
            # NumPy's allocator asks for transparent huge pages on large buffers (torch's does
            # not): a fused step over 11 M float32 elements ran 12% faster in such memory here.
            return torch.from_numpy(np.full(n, fill, dtype=numpy_dtype(dtype)))
        return torch.full((n,), fill, dtype=dtype, device=device)
    if kind == "cupy":
        import cupy

        with cupy.cuda.Device(int(device.split(":")[1])):
            return cupy.full(n, fill, dtype=dtype)
    return np.full(n, fill, dtype=dtype)


def _address(buffer):
    kind = _kind(buffer)
    if kind == "torch":
        return buffer.data_ptr()
    if kind == "cupy":
        return buffer.data.ptr
    return buffer.__array_interface__["data"][0]


def _copy(view, a):
    kind = _kind(view)
    if kind == "torch":
        view.copy_(a.detach())
    elif kind == "cupy":
        view[...] = a
    else:
        np.copyto(view, a)
