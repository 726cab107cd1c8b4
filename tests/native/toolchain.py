"""Finding the CUDA toolchain, and building CMakeLists.txt once per test session.

Callers skip (or, in CI, fail) through ``tests/conftest.skip_or_fail`` with the reason returned
here when something is missing.
"""

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

from filelock import FileLock

ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = Path(os.environ.get("FASTRMS_NATIVE_BUILD", ROOT / "build" / "native"))
HOST_LIBRARY = "libfastrms_host_kernels.so"


def missing_tools():
    """Why the native build cannot run here, or None."""
    missing = [tool for tool in ("cmake", "nvcc", "g++") if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} on the PATH"
    if cuda_include_dir() is None:
        return "CUDA headers (cuda_fp16.h) not found; set CUDA_PATH"
    return None


@functools.lru_cache(maxsize=1)
def cuda_include_dir():
    """The CUDA toolkit's include directory (cuda_fp16.h lives there)."""
    candidates = [os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:  # nvcc may be a wrapper script, so also ask it where its toolkit is
        candidates.append(str(Path(nvcc).resolve().parents[1]))
        out = subprocess.run([nvcc, "--dryrun", "--version"], capture_output=True, text=True)
        for line in (out.stdout + out.stderr).splitlines():
            if "TOP=" in line:
                candidates.append(line.split("TOP=", 1)[1].strip())
    for root in filter(None, candidates):
        include = Path(root) / "include"
        if (include / "cuda_fp16.h").is_file():
            return include
    return None


@functools.lru_cache(maxsize=1)
def configure():
    """Configure CMakeLists.txt into ``BUILD_DIR``; ``(ok, log)``. The build runs this Python
    (with NumPy) to write the source CuPy compiles (``fastrms.cuda.loader``)."""
    return _run(["cmake", "-S", str(ROOT), "-B", str(BUILD_DIR), "-DCMAKE_BUILD_TYPE=Release",
                 f"-DPython3_EXECUTABLE={sys.executable}"])


@functools.lru_cache(maxsize=None)
def build(*targets):
    """Build ``targets``, one job at a time (never two nvcc runs at once); ``(ok, log)``.

    Incremental: ``BUILD_DIR`` persists between sessions, so an unchanged tree builds in seconds.
    Under a file lock: pytest-xdist's workers share ``BUILD_DIR``, and the second one to get
    here finds the build done.
    """
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with FileLock(BUILD_DIR / "pytest-build.lock"):
        ok, log = configure()
        if not ok:
            return ok, log
        return _run(["cmake", "--build", str(BUILD_DIR), "--parallel", "1", "--target", *targets])


def _run(command):
    result = subprocess.run(command, capture_output=True, text=True)
    return result.returncode == 0, f"$ {' '.join(command)}\n{result.stdout}{result.stderr}"
