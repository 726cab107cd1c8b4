"""Loss-scaling values that stay on the GPU: found_inf, the grad scale and the clip factor packed
into the three float32 values the kernels read (``Extras.device_amp``), by device operations on
the current stream, so that the host never waits for them."""


def device_amp(found_inf, grad_scale, clip):
    """A float32 CuPy array ``[found_inf, grad_scale, clip]`` on the device of the first device
    value among ``found_inf`` and ``grad_scale`` (CuPy arrays or torch CUDA tensors of one
    element; None: 0 and 1). Keep it alive until the step that reads it is queued."""
    import cupy

    values = [cupy.asarray(v).reshape(()) if v is not None and not isinstance(v, (int, float))
              else v for v in (found_inf, grad_scale)]
    device = next(v.device for v in values if isinstance(v, cupy.ndarray))
    with device:
        amp = cupy.empty(3, cupy.float32)
        amp[0] = 0 if values[0] is None else values[0]
        amp[1] = 1 if values[1] is None else values[1]
        amp[2] = clip
    return amp
