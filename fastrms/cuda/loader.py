"""Compiling ``rmsprop.cu``: the source CuPy compiles, its options, and one compiled instance per
device and name (``kernel()``), through ``cupy.RawModule`` on first use.

CuPy keeps each compiled module in its disk cache, keyed by the source string, the options and the
name, so a process that has compiled an instance before loads it from disk. Launch planning (names,
geometry, arguments) is ``plan``'s; launching is ``backend``'s.

``python -m fastrms.cuda.loader PATH`` writes ``source()`` to PATH: the CMake build compiles that
file, so that nvcc, the PTX checks and the host emulation see exactly what CuPy compiles.
"""

import functools
import sys
from importlib import resources
from pathlib import Path

from . import rule_args

# CuPy adds -ftz=true and the device's -arch itself. --fmad=false: the NumPy reference rounds every
# product and sum, so the kernel may not fuse them (docs/design.md §4).
OPTIONS = ("-std=c++17", "--fmad=false")


@functools.lru_cache(maxsize=1)
def source():
    """What CuPy compiles: rmsprop.cu's text (package data), then the static_asserts that check
    its ``RuleArgs`` against the NumPy dtypes of ``rule_args`` (``rule_args.layout_check``)."""
    text = resources.files(__package__).joinpath("rmsprop.cu").read_text(encoding="utf-8")
    return text + rule_args.layout_check()


@functools.lru_cache(maxsize=None)
def kernel(device_id, name, options=OPTIONS):
    """The compiled instance ``name`` on device ``device_id`` (compiled on first use), built with
    ``options`` (a tuple): ``OPTIONS`` for the step; the benchmark's roofline adds its own define
    (``fastrms.bench.gpu_roofline``)."""
    import cupy

    with cupy.cuda.Device(device_id):
        module = cupy.RawModule(code=source(), options=options, name_expressions=(name,))
        return module.get_function(name)


@functools.lru_cache(maxsize=None)
def multiprocessors(device_id):
    """The multiprocessor count of device ``device_id`` (the grid cap is per multiprocessor)."""
    import cupy

    return cupy.cuda.Device(device_id).attributes["MultiProcessorCount"]


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(source(), encoding="utf-8")
