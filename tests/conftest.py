import os

import numpy as np
import pytest

# CI sets FASTRMS_REQUIRE_NATIVE=1: there a missing nvcc/toolchain is a failure, not a skip.
REQUIRE_NATIVE = os.environ.get("FASTRMS_REQUIRE_NATIVE") == "1"


def skip_or_fail(reason):
    """Skip where an optional tool is missing; fail instead in CI, which must have it."""
    if REQUIRE_NATIVE:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def require_cupy_device():
    """Skip, with the reason, unless the cupy backend is usable (CuPy installed, a device seen)."""
    from fastrms.dispatch import backend_info

    cupy = backend_info("cupy")
    if not cupy.usable:
        pytest.skip(f"cupy backend not usable here: {cupy.reason}")


def require_torch_cuda():
    """``torch``, or a skip unless torch sees a CUDA device and the cupy backend is usable."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    require_cupy_device()
    return torch


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def host_kernels():
    """rmsprop.cu compiled for the host (tests/native): the CUDA kernels, run on the CPU."""
    from native import toolchain
    from native.emulation import HostKernels

    reason = toolchain.missing_tools()
    if reason:
        skip_or_fail(f"host emulation of rmsprop.cu {reason}")
    ok, log = toolchain.build("fastrms_host_kernels")
    assert ok, log
    return HostKernels(toolchain.BUILD_DIR / toolchain.HOST_LIBRARY)
