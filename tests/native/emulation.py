"""ctypes access to the host-emulated kernels (tests/native/host_kernels.cpp), launched with the
plan that ``fastrms.cuda.plan`` makes for the real launch, its arguments passed as CuPy passes
them to the driver."""

import ctypes

import numpy as np

from fastrms._buffers import PLAIN
from fastrms.cuda import plan, plan8, rule_args

# A kernel parameter's kind (host_kernels.cpp: cuda_host::signature) -> the NumPy kind of the
# argument that fills it: pointers get addresses as np.uint64, a struct a structured array.
NUMPY_KINDS = {"p": "u", "i": "i", "u": "u", "f": "f", "V": "V"}
MAX_PARAMETERS = 32


def argument_bytes(arg):
    """``(address, keep-alive)``: where the bytes of one argument are, as CuPy points
    cuLaunchKernel at them (cupy/cuda/function.pyx, ``_pointer``): a NumPy array of size one at its
    own data (``CNumpyArray``: how a struct goes by value), a NumPy scalar at a copy of its value in
    its own dtype (``CScalar``)."""
    if isinstance(arg, np.ndarray):
        assert arg.size == 1, "CuPy passes only NumPy arrays of size one by value"
        return arg.__array_interface__["data"][0], arg
    value = np.array(arg)  # a NumPy scalar: its own dtype, its own bytes
    return value.ctypes.data, value


class HostKernels:
    def __init__(self, path):
        self.lib = ctypes.CDLL(str(path))
        self._by_name = {}
        for dtype in plan.CXX_TYPES:
            for m in (False, True):
                for a in (False, True):
                    for kind, name in (("single", plan.kernel_name),
                                       ("multi", plan.multi_kernel_name)):
                        entry = f"fastrms_host_{kind}_{dtype.name}_{int(m)}{int(a)}"
                        self._by_name[name(dtype, m, a)] = (self._entry(entry),
                                                            self._signature(entry))
                    if dtype in plan8.DTYPES:  # the device's name, the host's one-lane build
                        entry = f"fastrms_host_eight_{dtype.name}_{int(m)}{int(a)}"
                        self._by_name[plan8.kernel_name(dtype, m, a)] = (
                            self._entry(entry), self._signature(entry))

    def _entry(self, entry):
        fn = getattr(self.lib, entry)
        fn.restype = None
        fn.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p)]
        return fn

    def _signature(self, entry):
        """``[(kind, size)]``: the kernel's parameters, from its compiled signature."""
        return signature(self.lib, entry + "_signature")

    def launch(self, launch, args=None):
        """Run ``launch`` (a ``plan.Launch``, or a ``plan.MultiLaunch`` with its ``args``),
        refusing arguments not typed as the kernel's parameters."""
        fn, parameters = self._by_name[launch.name]
        args = launch.args if args is None else args
        assert len(args) == len(parameters), f"{len(args)} args, kernel has {len(parameters)}"
        pointers, alive = (ctypes.c_void_p * len(args))(), []
        for i, (arg, (kind, size)) in enumerate(zip(args, parameters)):
            dtype = np.asarray(arg).dtype
            assert (dtype.kind, dtype.itemsize) == (NUMPY_KINDS[kind], size), \
                f"argument {i} packed as {dtype}, kernel has a {size}-byte {kind!r}"
            assert kind != "V" or dtype in rule_args.DTYPES.values(), f"argument {i}: {dtype}"
            pointers[i], keep = argument_bytes(arg)
            alive.append(keep)
        fn(launch.grid, launch.block, pointers)

    def step(self, rule, step, param, grad, square_avg, momentum_buffer=None, grad_avg=None,
             master_param=None, multiprocessors=2, lr_device=0, extras=PLAIN):
        """One step on host arrays, planned exactly as fastrms.cuda.backend.update plans it
        (``lr_device``, ``extras.device_amp``: addresses of host memory the kernel reads, or 0)."""
        buffers = (param, grad, square_avg, momentum_buffer, grad_avg, master_param)
        addresses = tuple(None if b is None else b.ctypes.data for b in buffers)
        launch = plan.plan(param.dtype, addresses, param.size, rule, step, multiprocessors,
                           lr_device=lr_device, extras=extras)
        self.launch(launch)
        return launch

    def step8(self, rule, step, param, grad, square_avg, momentum_buffer=None, grad_avg=None,
              master_param=None, multiprocessors=2, extras=PLAIN):
        """One 8-bit step on host arrays (state buffers: ``fastrms.eight_bit.Codes``), planned
        as fastrms.cuda.backend.update8 plans it."""
        addresses = [param.ctypes.data, grad.ctypes.data]
        for c in (square_avg, momentum_buffer, grad_avg):
            addresses += [0, 0] if c is None else [c.codes.ctypes.data, c.scales.ctypes.data]
        addresses.append(0 if master_param is None else master_param.ctypes.data)
        launch = plan8.plan8(param.dtype, addresses, param.size, rule, step, multiprocessors,
                             extras)
        self.launch(launch)
        return launch

    def step_many(self, rule, step, params, grads, square_avgs, momentum_buffers=None,
                  grad_avgs=None, master_params=None, multiprocessors=2, chunk=plan.CHUNK,
                  lr_device=0, extras=PLAIN):
        """One step on lists of host arrays, planned and packed as fastrms.cuda.backend.update_many
        does it (the tables stay in host memory, where the emulated kernel reads them; so do the
        lr and AMP values, as for ``step``). Returns the plan (None when every tensor is empty:
        nothing launched)."""
        columns = (params, grads, square_avgs, momentum_buffers, grad_avgs, master_params)
        table = np.array([[0 if c is None else c[j].ctypes.data for c in columns]
                          for j in range(len(params))], dtype=np.int64)
        sizes = np.array([p.size for p in params], dtype=np.int64)
        launch = plan.multi_plan(params[0].dtype, table, sizes, rule, step, multiprocessors, chunk,
                                 extras=extras)
        if launch is not None:
            self.launch(launch, plan.multi_kernel_args(launch.descriptors.ctypes.data,
                                                       launch.n_tensors, launch.n_chunks,
                                                       launch.rule_args, lr_device,
                                                       extras.device_amp))
        return launch


def signature(lib, name):
    """``[(kind, size)]`` of a host-built kernel's parameters, read from ``lib``'s function
    ``name`` (``cuda_host.h``'s signature report)."""
    fn = getattr(lib, name)
    fn.restype = ctypes.c_int
    kinds = ctypes.create_string_buffer(MAX_PARAMETERS)
    sizes = (ctypes.c_ulonglong * MAX_PARAMETERS)()
    count = fn(kinds, sizes, MAX_PARAMETERS)
    assert 0 <= count <= MAX_PARAMETERS, name
    return [(kinds.raw[i:i + 1].decode(), sizes[i]) for i in range(count)]
