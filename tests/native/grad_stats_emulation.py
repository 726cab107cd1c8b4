"""ctypes access to the host-emulated ``grad_stats.cu`` kernels (tests/native/grad_stats_host.cpp),
launched with exactly the launches ``fastrms.cuda.grad_stats.plan`` makes for the GPU, their
arguments passed as CuPy passes them to the driver (``emulation.argument_bytes``)."""

import ctypes

import numpy as np

from fastrms.cuda import grad_stats, plan
from native.emulation import NUMPY_KINDS, argument_bytes, signature

HOST_LIBRARY = "libfastrms_host_grad_stats.so"
TARGET = "fastrms_host_grad_stats"


def _entry_names():
    """Kernel name (as launches name it) -> the library's entry point."""
    names = {grad_stats.lane_sums_name(d): f"grad_lane_sums_{d.name}" for d in plan.CXX_TYPES}
    for name in (grad_stats.CHUNK_PARTIALS, grad_stats.TREE_SUMS, grad_stats.FINISH):
        names[name] = name.split("::")[1]
    return names


class HostGradStats:
    def __init__(self, path):
        self.lib = ctypes.CDLL(str(path))
        self._by_name = {name: (self._entry(entry), self._signature(entry))
                         for name, entry in _entry_names().items()}

    def _entry(self, entry):
        fn = getattr(self.lib, "fastrms_host_" + entry)
        fn.restype = None
        fn.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p)]
        return fn

    def _signature(self, entry):
        return signature(self.lib, f"fastrms_host_{entry}_signature")

    def launch(self, launch):
        """Run one ``grad_stats.Launch``, refusing arguments not typed as its parameters."""
        fn, parameters = self._by_name[launch.name]
        assert len(launch.args) == len(parameters), launch.name
        pointers, alive = (ctypes.c_void_p * len(launch.args))(), []
        for i, (arg, (kind, size)) in enumerate(zip(launch.args, parameters)):
            dtype = np.asarray(arg).dtype
            assert (dtype.kind, dtype.itemsize) == (NUMPY_KINDS[kind], size), \
                f"{launch.name} argument {i} packed as {dtype}, kernel has a {size}-byte {kind!r}"
            assert kind != "V" or dtype == grad_stats.TABLE, f"argument {i}: {dtype}"
            pointers[i], keep = argument_bytes(arg)
            alive.append(keep)
        fn(launch.grid, launch.block, pointers)

    def inspect(self, arrays, inv32, inv64, max_grid=2):
        """``(found_inf, norm, launches)``: the kernels run on host arrays, planned as
        ``fastrms.cuda.grad_stats.inspect`` plans them (``max_grid``: the grid cap; small, so that
        the threads loop)."""
        sizes = [a.size for a in arrays]
        chunks = grad_stats.chunk_counts(sizes)[1][-1]
        scratch = np.full(max(grad_stats.scratch_doubles(chunks), 1), np.nan)
        found_inf, norm = np.full((), np.nan, np.float32), np.full((), np.nan)
        launches = grad_stats.plan([a.dtype for a in arrays], [a.ctypes.data for a in arrays],
                                   sizes, inv32, inv64, scratch.ctypes.data, found_inf.ctypes.data,
                                   norm.ctypes.data, max_grid)
        for launch in launches:
            self.launch(launch)
        return found_inf, norm, launches
