"""The last-level cache of each device, read from the machine: whether a row's buffers fit in it.

Where they do, a row's GB/s (and its roofline fraction) measure the cache, not memory; the table
marks such rows. On the CPU the size comes from sysfs (the highest data or unified cache level of
cpu0, times the number of distinct instances of it across CPUs: sockets or core complexes, each
with its own), else from ``getconf`` (glibc) or ``sysctl`` (macOS); on a GPU from CuPy's device
properties (the L2). Where none answers, the size is unknown (``None``): no row is called
cache-resident, and the table marks every fraction above 1 as unexplained instead.
"""

import glob
import os
import subprocess
from typing import NamedTuple, Optional

from ..dispatch import backend_info

SYSFS = "/sys/devices/system/cpu"
COMMANDS = (  # fallbacks, first positive answer wins
    ("getconf", "LEVEL4_CACHE_SIZE"), ("getconf", "LEVEL3_CACHE_SIZE"),
    ("getconf", "LEVEL2_CACHE_SIZE"), ("sysctl", "-n", "hw.l3cachesize"),
    ("sysctl", "-n", "hw.l2cachesize"),
)


class Cache(NamedTuple):
    bytes: Optional[int]  # None: unknown
    source: str  # where the size was read, or why it is unknown


def _read(path):
    with open(path) as f:
        return f.read().strip()


def _size(text):
    """sysfs's "307200K" (or "32M", "1G", "512") in bytes."""
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    return int(text[:-1] if scale > 1 else text) * scale


def from_sysfs(root=SYSFS):
    """The CPU's last-level cache from sysfs, or None where it cannot be read."""
    try:
        levels = {}
        for index in glob.glob(os.path.join(root, "cpu0", "cache", "index*")):
            if _read(os.path.join(index, "type")) != "Instruction":
                levels[int(_read(os.path.join(index, "level")))] = os.path.basename(index)
        if not levels:
            return None
        index = levels[max(levels)]
        size = _size(_read(os.path.join(root, "cpu0", "cache", index, "size")))
        shared = {_read(path) for path in glob.glob(os.path.join(root, "cpu[0-9]*", "cache", index,
                                                                 "shared_cpu_list"))}
    except (OSError, ValueError):
        return None
    instances = max(1, len(shared))
    times = f", {instances} instances" if instances > 1 else ""
    return Cache(size * instances, f"L{max(levels)} from {root}{times}")


def from_commands():
    """The first positive size one of ``COMMANDS`` prints, or None."""
    for command in COMMANDS:
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=5).stdout.strip()
            if int(out) > 0:
                return Cache(int(out), " ".join(command))
        except (OSError, ValueError, subprocess.SubprocessError):
            continue
    return None


def cpu():
    """The CPU's last-level cache: from sysfs, else ``COMMANDS``, else unknown."""
    return from_sysfs() or from_commands() or Cache(None, "no sysfs, getconf or sysctl answer")


def gpu():
    """The current CUDA device's L2, where the cupy backend is usable."""
    info = backend_info("cupy")
    if not info.usable:
        return Cache(None, info.reason)
    import cupy

    size = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id).get("l2CacheSize", 0)
    if size > 0:
        return Cache(size, "L2 from CUDA device properties")
    return Cache(None, "no L2 size in the CUDA device properties")


def last_level(devices):
    """{device: Cache} for each of ``devices`` ("cpu", "cuda")."""
    return {d: (cpu() if d == "cpu" else gpu()) for d in dict.fromkeys(devices)}


def mib(nbytes):
    return f"{nbytes / (1 << 20):.0f} MiB"
