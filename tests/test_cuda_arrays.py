"""GPU buffers as CuPy arrays (fastrms.cuda.arrays) and their checks, without a device.

CuPy builds arrays over device memory it is told about without touching a device, so these
tests describe fake device addresses that are never dereferenced.
"""

import numpy as np
import pytest

cupy = pytest.importorskip("cupy")

from fastrms import overlaps, validate  # noqa: E402
from fastrms._buffers import Buffers  # noqa: E402
from fastrms._spec import Rule  # noqa: E402
from fastrms.cuda import arrays, backend  # noqa: E402
import cases  # noqa: E402

BASE = 0x7F00_0000_0000  # a made-up device address


def fake(offset_bytes, n, dtype=np.float32, device_id=0):
    dtype = np.dtype(dtype)
    return arrays.wrap(BASE + offset_bytes, (n,), (dtype.itemsize,), dtype, device_id, owner=None)


def test_wrap_describes_the_memory_it_is_given():
    a = arrays.wrap(BASE, (3, 4), (16, 4), np.float32, 1, owner=None)
    assert a.data.ptr == BASE and a.shape == (3, 4) and a.flags.c_contiguous
    assert a.device.id == 1 and a.nbytes == 48
    empty = fake(0, 0)
    assert empty.size == 0


def test_as_cupy_passes_cupy_arrays_through_with_their_device():
    a = fake(0, 10, device_id=0)
    same, place = arrays.as_cupy(a, "param")
    assert same is a and place == "cuda:0"


def test_read_only_cuda_array_interface_is_refused_for_written_buffers():
    class ReadOnly:
        __cuda_array_interface__ = dict(shape=(4,), typestr="<f4", data=(BASE, True), version=3,
                                        strides=None, stream=None)

    with pytest.raises(ValueError, match="square_avg is read-only"):
        arrays.as_cupy(ReadOnly(), "square_avg")


def test_torch_dtypes_map_to_numpy_including_bfloat16():
    torch = pytest.importorskip("torch")
    assert arrays.torch_dtype_to_numpy(torch.float16) == np.float16
    assert arrays.torch_dtype_to_numpy(torch.float64) == np.float64
    if cases.bfloat16 is not None:
        assert arrays.torch_dtype_to_numpy(torch.bfloat16) == np.dtype(cases.bfloat16)


def test_torch_tensors_are_wrapped_from_their_own_metadata():
    torch = pytest.importorskip("torch")
    if cases.bfloat16 is None:
        pytest.skip("ml_dtypes not installed")

    class CudaTensorLike:  # what from_torch reads of a torch CUDA tensor (none exists here)
        dtype, shape, device = torch.bfloat16, torch.Size([3, 5]), torch.device("cuda", 2)

        def stride(self):
            return (5, 1)

        def data_ptr(self):
            return BASE + 64

    a = arrays.from_torch(CudaTensorLike())
    assert isinstance(a, arrays.TorchCudaArray)
    assert a.dtype == np.dtype(cases.bfloat16) and a.shape == (3, 5) and a.strides == (10, 2)
    assert a.data.ptr == BASE + 64 and a.device.id == 2 and a.flags.c_contiguous


def test_torch_arrays_keep_their_type_through_views():
    a = arrays.wrap(BASE, (2, 8), (32, 4), np.float32, 0, owner=None, cls=arrays.TorchCudaArray)
    assert isinstance(a.reshape(-1), arrays.TorchCudaArray)  # backend reshapes nothing, but may


def test_may_share_memory_is_byte_range_overlap():
    a = fake(0, 10)  # bytes [0, 40)
    assert overlaps._byte_ranges_overlap(a, fake(36, 10))
    assert not overlaps._byte_ranges_overlap(a, fake(40, 10))
    assert overlaps._byte_ranges_overlap(fake(8, 2), a)


def check_single(backend, rule, arrays):
    """fastrms.validate's checks of one buffer set."""
    validate.check_set(backend, rule, Buffers(*arrays))


def test_checks_accept_cupy_buffers_and_refuse_overlap_and_wrong_dtypes():
    rule = Rule(momentum=0.9)
    good = [fake(0, 100), fake(400, 100), fake(800, 100), fake(1200, 100), None]
    check_single(backend, rule, good)  # CuPy arrays have no writeable flag: no AttributeError
    overlapping = [fake(0, 100), fake(400, 100), fake(796, 100), fake(1200, 100), None]
    with pytest.raises(ValueError, match="grad and square_avg overlap"):
        check_single(backend, rule, overlapping)
    half_state = [fake(0, 100, np.float16), fake(200, 100, np.float16), fake(400, 100, np.float16),
                  fake(800, 100, np.float16), None]
    with pytest.raises(TypeError, match="square_avg has dtype float16, expected float32"):
        check_single(backend, rule, half_state)
    with pytest.raises(TypeError, match="does not support"):
        check_single(backend, Rule(), [fake(0, 4, np.int32), fake(16, 4, np.int32),
                                         fake(32, 4, np.int32), None, None])


def test_launch_streams_are_cupy_streams_as_given_or_torch_streams_converted():
    """``arrays.cupy_stream``: what ``backend.PreparedMany.launch`` is given as its stream."""
    class TorchLike:  # how a torch.cuda.Stream names its handle (both ways)
        cuda_stream = 1234

        def __cuda_stream__(self):
            return 0, 1234

    converted = arrays.cupy_stream(TorchLike(), 0)
    assert isinstance(converted, cupy.cuda.Stream | cupy.cuda.ExternalStream)
    assert converted.ptr == 1234
    assert arrays.cupy_stream(converted, 0) is converted
