"""ctypes access to the host-emulated kernels (tests/native/host_kernels.cpp), launched with the
plan that ``fastrms.cuda.loader`` makes for the real launch."""

import ctypes

import numpy as np

from fastrms.cuda import loader

# The C type each kernel parameter has, by the NumPy type loader.kernel_args gives it.
C_TYPES = {np.dtype(np.uint64): ctypes.c_void_p, np.dtype(np.int64): ctypes.c_longlong,
           np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double,
           np.dtype(np.int32): ctypes.c_int}


def kernel_parameters(param_dtype):
    """The C parameter types of ``rmsprop_kernel<P, ...>``, in rmsprop.cu's order."""
    compute = ctypes.c_float if loader.compute_dtype(param_dtype) == np.float32 else ctypes.c_double
    return [ctypes.c_void_p] * 5 + [ctypes.c_longlong] * 4 + [compute] * 8 + [ctypes.c_int] * 6


def multi_kernel_parameters(param_dtype):
    """The C parameter types of ``rmsprop_multi_kernel<P, ...>``, in rmsprop.cu's order."""
    compute = ctypes.c_float if loader.compute_dtype(param_dtype) == np.float32 else ctypes.c_double
    return [ctypes.c_void_p] * 2 + [ctypes.c_longlong] + [compute] * 8 + [ctypes.c_int] * 6


class HostKernels:
    def __init__(self, path):
        self.lib = ctypes.CDLL(str(path))
        self._by_name = {}
        for dtype in loader.CXX_TYPES:
            for m in (False, True):
                for a in (False, True):
                    for kind, name, parameters in (
                            ("", loader.kernel_name, kernel_parameters),
                            ("multi_", loader.multi_kernel_name, multi_kernel_parameters)):
                        fn = getattr(self.lib, f"fastrms_host_{kind}{dtype.name}_{int(m)}{int(a)}")
                        fn.restype = None
                        fn.argtypes = [ctypes.c_uint, ctypes.c_uint] + parameters(dtype)
                        self._by_name[name(dtype, m, a)] = (fn, parameters(dtype))

    def launch(self, launch, args=None):
        """Run ``launch`` (a ``loader.Launch``, or a ``loader.MultiLaunch`` with its ``args``),
        refusing arguments not typed as the kernel's."""
        fn, expected = self._by_name[launch.name]
        args = launch.args if args is None else args
        assert len(args) == len(expected), f"{len(args)} args, kernel has {len(expected)}"
        values = []
        for i, (arg, c_type) in enumerate(zip(args, expected)):
            packed = C_TYPES.get(np.asarray(arg).dtype)
            assert packed is c_type, f"argument {i} packed as {type(arg).__name__}, kernel has {c_type}"
            values.append(arg.item())
        fn(launch.grid, launch.block, *values)

    def step(self, rule, step, param, grad, square_avg, momentum_buffer=None, grad_avg=None,
             multiprocessors=2):
        """One step on host arrays, planned exactly as fastrms.cuda.backend.update plans it."""
        buffers = (param, grad, square_avg, momentum_buffer, grad_avg)
        addresses = tuple(None if b is None else b.ctypes.data for b in buffers)
        launch = loader.plan(param.dtype, addresses, param.size, rule, step, multiprocessors)
        self.launch(launch)
        return launch

    def step_many(self, rule, step, params, grads, square_avgs, momentum_buffers=None,
                  grad_avgs=None, multiprocessors=2, chunk=loader.CHUNK):
        """One step on lists of host arrays, planned and packed as fastrms.cuda.backend.update_many
        does it (the tables stay in host memory, where the emulated kernel reads them). Returns the
        plan (None when every tensor is empty: nothing launched)."""
        columns = (params, grads, square_avgs, momentum_buffers, grad_avgs)
        table = np.array([[0 if c is None else c[j].ctypes.data for c in columns]
                          for j in range(len(params))], dtype=np.int64)
        sizes = np.array([p.size for p in params], dtype=np.int64)
        launch = loader.multi_plan(params[0].dtype, table, sizes, rule, step, multiprocessors,
                                   chunk)
        if launch is not None:
            args = loader.multi_kernel_args(launch.descriptors.ctypes.data, launch.n_tensors,
                                            launch.n_chunks, launch.scalars, launch.modes,
                                            params[0].dtype)
            self.launch(launch, args)
        return launch
