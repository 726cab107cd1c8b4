// fastrms/cuda/rmsprop.cu compiled for the host (cuda_host.h), as the loader joins it (rmsprop.cu
// and the RuleArgs layout check: rmsprop_source.cu, written by the CMake build from
// fastrms.cuda.loader.source()). Two C entry points per kernel instance, for ctypes:
//   fastrms_host_<kernel>_<dtype>_<has momentum buffer><has grad_avg>(grid, block, params)
//     launches it with params as cuLaunchKernel takes them (params[i] points to argument i's bytes:
//     tests/native/emulation.py points them where CuPy does, at the NumPy values the plan holds);
//   fastrms_host_<...>_signature(kinds, sizes, capacity): its parameters' kinds and sizes, which
//     emulation.py checks the arguments against (a mistyped argument is refused).
// <kernel> is "single" (rmsprop_kernel) or "multi" (rmsprop_multi_kernel; its tables are host
// memory here); "eight_<dtype>_<flags>" is rmsprop8_kernel with one lane per block. Nothing here spells a kernel parameter: the kernels' own signatures say them.
#include "cuda_host.h"

#include "rmsprop_source.cu"

#define HOST_ENTRY FASTRMS_HOST_ENTRY  // cuda_host.h: the launch and signature entries

#define HOST_BOTH(NAME, P, M, A)                                    \
    HOST_ENTRY(single_##NAME, fastrms::rmsprop_kernel<P, M, A>)     \
    HOST_ENTRY(multi_##NAME, fastrms::rmsprop_multi_kernel<P, M, A>)

#define HOST_ENTRIES(NAME, P)                 \
    HOST_BOTH(NAME##_00, P, false, false)     \
    HOST_BOTH(NAME##_10, P, true, false)      \
    HOST_BOTH(NAME##_01, P, false, true)      \
    HOST_BOTH(NAME##_11, P, true, true)

HOST_ENTRIES(float32, float)
HOST_ENTRIES(float64, double)
HOST_ENTRIES(float16, __half)
HOST_ENTRIES(bfloat16, __nv_bfloat16)

// The 8-bit kernel (one thread per block of codes here: LANES = 1), "eight_<dtype>_<flags>".
#define HOST_ENTRIES8(NAME, P)                                                    \
    HOST_ENTRY(eight_##NAME##_00, (fastrms::rmsprop8_kernel<P, false, false, 1>)) \
    HOST_ENTRY(eight_##NAME##_10, (fastrms::rmsprop8_kernel<P, true, false, 1>))  \
    HOST_ENTRY(eight_##NAME##_01, (fastrms::rmsprop8_kernel<P, false, true, 1>))  \
    HOST_ENTRY(eight_##NAME##_11, (fastrms::rmsprop8_kernel<P, true, true, 1>))

HOST_ENTRIES8(float32, float)
HOST_ENTRIES8(float16, __half)
HOST_ENTRIES8(bfloat16, __nv_bfloat16)
