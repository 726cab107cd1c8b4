// fastrms/cuda/rmsprop.cu compiled for the host (cuda_host.h), with one C entry point per kernel
// instance for ctypes: fastrms_host_<dtype>_<has momentum buffer><has grad_avg>(grid, block,
// then the kernel's own arguments in its order), and fastrms_host_multi_<...> likewise for the
// multi-tensor kernel (its tables are host memory here). tests/test_cuda_host_emulation.py calls these
// with the arguments fastrms/cuda/loader.py packs for the real launch.
#include "cuda_host.h"

#include "rmsprop.cu"

#define HOST_ENTRY(NAME, P, M, A)                                                                 \
    extern "C" void fastrms_host_##NAME(                                                          \
        unsigned grid, unsigned block, P* param, const P* grad, fastrms::Precision<P>::T* s,      \
        fastrms::Precision<P>::T* b, fastrms::Precision<P>::T* a, long long begin,                \
        long long vec_begin, long long vec_end, long long end, fastrms::Precision<P>::T k0,       \
        fastrms::Precision<P>::T k1, fastrms::Precision<P>::T k2, fastrms::Precision<P>::T k3,    \
        fastrms::Precision<P>::T k4, fastrms::Precision<P>::T k5, fastrms::Precision<P>::T k6,    \
        fastrms::Precision<P>::T k7, int m0, int m1, int m2, int m3, int m4, int m5) {            \
        cuda_host::launch(grid, block, fastrms::rmsprop_kernel<P, M, A>, param, grad, s, b, a,    \
                          begin, vec_begin, vec_end, end, k0, k1, k2, k3, k4, k5, k6, k7, m0, m1, \
                          m2, m3, m4, m5);                                                        \
    }

#define HOST_MULTI_ENTRY(NAME, P, M, A)                                                           \
    extern "C" void fastrms_host_multi_##NAME(                                                    \
        unsigned grid, unsigned block, const long long* tensors, const long long* chunks,         \
        long long n_chunks, fastrms::Precision<P>::T k0, fastrms::Precision<P>::T k1,             \
        fastrms::Precision<P>::T k2, fastrms::Precision<P>::T k3, fastrms::Precision<P>::T k4,    \
        fastrms::Precision<P>::T k5, fastrms::Precision<P>::T k6, fastrms::Precision<P>::T k7,    \
        int m0, int m1, int m2, int m3, int m4, int m5) {                                         \
        cuda_host::launch(grid, block, fastrms::rmsprop_multi_kernel<P, M, A>, tensors, chunks,   \
                          n_chunks, k0, k1, k2, k3, k4, k5, k6, k7, m0, m1, m2, m3, m4, m5);      \
    }

#define HOST_BOTH(NAME, P, M, A) HOST_ENTRY(NAME, P, M, A) HOST_MULTI_ENTRY(NAME, P, M, A)

#define HOST_ENTRIES(NAME, P)                 \
    HOST_BOTH(NAME##_00, P, false, false)     \
    HOST_BOTH(NAME##_10, P, true, false)      \
    HOST_BOTH(NAME##_01, P, false, true)      \
    HOST_BOTH(NAME##_11, P, true, true)

HOST_ENTRIES(float32, float)
HOST_ENTRIES(float64, double)
HOST_ENTRIES(float16, __half)
HOST_ENTRIES(bfloat16, __nv_bfloat16)
