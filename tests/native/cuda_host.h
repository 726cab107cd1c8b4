// Runs CUDA kernel source on the host, for tests: maps the CUDA built-ins to plain C++.
//
// Include this, then the .cu file, and compile with g++ -ffp-contract=off (the device code is
// built with --fmad=false; the host compiler must not fuse either). The CUDA toolkit headers
// supply __half / __nv_bfloat16 with host conversions (round to nearest even) and leave
// __global__, __device__ and __host__ empty when the compiler is not nvcc.
//
// launch() runs every thread of every block one after another. That is a faithful schedule for
// kernels whose threads never communicate (no shared memory, no __syncthreads), like fastrms's.
#pragma once

#include <math.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <vector_types.h>

#ifdef __CUDACC__
#error "cuda_host.h emulates CUDA on the host; compile with a host compiler, not nvcc"
#endif

#define __launch_bounds__(...)

inline uint3 threadIdx;
inline uint3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;

namespace cuda_host {

// kernel<<<grid, block>>>(args...) with one-dimensional grid and block.
template <typename... Params, typename... Args>
void launch(unsigned grid, unsigned block, void (*kernel)(Params...), Args... args) {
    gridDim = dim3(grid);
    blockDim = dim3(block);
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx = make_uint3(b, 0, 0);
        for (unsigned t = 0; t < block; ++t) {
            threadIdx = make_uint3(t, 0, 0);
            kernel(args...);
        }
    }
}

}  // namespace cuda_host
