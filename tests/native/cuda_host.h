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

#include <cstddef>
#include <cstring>
#include <type_traits>
#include <utility>

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

// Parameter i's value from params[i], as the driver's cuLaunchKernel takes it: sizeof(T) bytes
// copied from where params[i] points (CuPy points it at a NumPy scalar's or array's data).
template <typename T>
T parameter(const void* bytes) {
    static_assert(std::is_trivially_copyable<T>::value, "kernel parameters are copied as bytes");
    T value;
    std::memcpy(&value, bytes, sizeof(T));
    return value;
}

template <typename... Params, std::size_t... I>
void launch_copied(unsigned grid, unsigned block, void (*kernel)(Params...), void* const* params,
                   std::index_sequence<I...>) {
    launch(grid, block, kernel, parameter<Params>(params[I])...);
}

// kernel<<<grid, block>>> with its arguments as cuLaunchKernel's kernelParams: params[i] points to
// the bytes of parameter i. The kernel's own signature says how many bytes each one is.
template <typename... Params>
void launch_params(unsigned grid, unsigned block, void* const* params, void (*kernel)(Params...)) {
    launch_copied(grid, block, kernel, params, std::index_sequence_for<Params...>{});
}

// The kernel's parameters, for the caller to check its arguments against: kinds[i] is 'p'
// (pointer), 'i' / 'u' (signed / unsigned integer), 'f' (floating point) or 'V' (a struct), and
// sizes[i] its size in bytes (as NumPy's dtype.kind and itemsize). Returns the count, or -1 if
// there are more than `capacity`.
template <typename T>
constexpr char kind() {
    return std::is_pointer<T>::value          ? 'p'
           : std::is_floating_point<T>::value ? 'f'
           : std::is_integral<T>::value       ? (std::is_signed<T>::value ? 'i' : 'u')
                                              : 'V';
}

template <typename... Params>
int signature(char* kinds, unsigned long long* sizes, int capacity, void (*)(Params...)) {
    constexpr int count = sizeof...(Params);
    if (count > capacity) return -1;
    const char k[] = {kind<Params>()..., 0};
    const unsigned long long s[] = {sizeof(Params)..., 0};
    for (int i = 0; i < count; ++i) {
        kinds[i] = k[i];
        sizes[i] = s[i];
    }
    return count;
}

}  // namespace cuda_host

// The two C entries of one kernel for emulation.py: its launch, and its parameters' kinds and sizes.
#define FASTRMS_HOST_ENTRY(NAME, ...)                                                          \
    extern "C" void fastrms_host_##NAME(unsigned grid, unsigned block, void* const* params) {  \
        cuda_host::launch_params(grid, block, params, __VA_ARGS__);                            \
    }                                                                                          \
    extern "C" int fastrms_host_##NAME##_signature(char* kinds, unsigned long long* sizes,     \
                                                   int capacity) {                             \
        return cuda_host::signature(kinds, sizes, capacity, __VA_ARGS__);                      \
    }
