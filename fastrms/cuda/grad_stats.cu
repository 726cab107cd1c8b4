// fastrms: inspect_grads as CUDA C++ (loaded by fastrms/cuda/grad_stats.py via cupy.RawModule):
// the non-finite flag and the L2 norm of the unscaled grads, in the order fastrms/grad_stats.py
// writes down as the NumPy reference (docs/grad-stats.md), bit for bit.
//
// Self-contained on purpose, like rmsprop.cu: CuPy's compile cache hashes the source string only.
// grad_stats.py compiles this file followed by the layout check of GradTable (static_asserts
// generated from its NumPy dtype).
//
// No thread reads what another thread of the same launch writes: no shuffles, no shared memory,
// no atomics. Each launch's threads are independent and each result depends only on the order
// below, never on the grid: the host emulation (tests/native/), which runs the threads one after
// another, is faithful, and any grid gives the same bits. The launches, in stream order:
//   grad_lane_sums<T>   one thread per (chunk, lane): the lane's sum of squares over its chunk
//                       (one launch per dtype and table of up to MAX_BUFFERS buffers)
//   grad_chunk_partials one thread per chunk: its 32 lanes combined by the fixed tree
//   grad_tree_sums      one thread per group of 2^log_group values: their pairwise tree; a
//                       launch per level until one group is left
//   grad_finish         one thread: the last group's tree, then found_inf and the norm
// Grouping the pairwise tree by aligned powers of two computes exactly its sums: a level with an
// odd count appends 0.0, and x + 0.0 == x for the sums of squares here (never -0.0), so the tree
// over the count padded with zeros to any power of two has the same bits.
//
// Numerics: IEEE operations, each rounded once (--fmad=false: no multiply-add is fused). CuPy
// compiles with -ftz=true, which flushes float32 subnormals: an unscaled float32 value below
// 2^-126 counts as 0 here (the reference keeps it); float64 is not affected.

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace fastrms {

// The order's constants: fastrms/grad_stats.py's CHUNK and LANES (a test checks they agree).
constexpr long long GRAD_CHUNK = 4096;
constexpr int GRAD_LANES = 32;
constexpr int MAX_BUFFERS = 64;  // buffers per grad_lane_sums launch (the table goes by value)
constexpr int MAX_LOG_GROUP = 5;  // groups of up to 32 values per tree thread

// The buffers of one grad_lane_sums launch, by value (fastrms/cuda/grad_stats.py packs it as a
// NumPy structured array with C's layout). Buffer j: its data, its element count, and where its
// chunks go: partial first[j] + k for its chunk k, and launch-local chunks start[j] ..
// start[j + 1] - 1 (start[count]: the launch's chunks).
struct GradTable {
    long long address[MAX_BUFFERS];
    long long size[MAX_BUFFERS];
    long long first[MAX_BUFFERS];
    long long start[MAX_BUFFERS + 1];
    int count;
};

// Step 1: the unscaled value, float32 for half and float32 grads (widened exactly first).
__host__ __device__ __forceinline__ float widen(float g) { return g; }
__host__ __device__ __forceinline__ float widen(__half g) { return __half2float(g); }
__host__ __device__ __forceinline__ float widen(__nv_bfloat16 g) { return __bfloat162float(g); }

// Step 2: its square in float64 (exact for a float32 value).
template <typename T>
__host__ __device__ __forceinline__ double square(T g, float inv32, double) {
    const double v = widen(g) * inv32;
    return v * v;
}
__host__ __device__ __forceinline__ double square(double g, float, double inv64) {
    const double v = g * inv64;
    return v * v;
}

// Step 3, lanes: the sum of lane `lane` of chunk `k` of `g` (n elements), from 0.0, in order.
template <typename T>
__global__ void grad_lane_sums(GradTable table, float inv32, double inv64, double* lanes) {
    const long long total = table.start[table.count] * GRAD_LANES;
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    for (long long t = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
         t += stride) {
        const long long c = t / GRAD_LANES;
        const int lane = static_cast<int>(t % GRAD_LANES);
        int j = 0;
        while (table.start[j + 1] <= c) {
            ++j;
        }
        const long long k = c - table.start[j];
        const T* g = reinterpret_cast<const T*>(table.address[j]);
        const long long chunk_end = (k + 1) * GRAD_CHUNK;
        const long long end = table.size[j] < chunk_end ? table.size[j] : chunk_end;
        double sum = 0.0;
        for (long long i = k * GRAD_CHUNK + lane; i < end; i += GRAD_LANES) {
            sum = sum + square(g[i], inv32, inv64);
        }
        lanes[(table.first[j] + k) * GRAD_LANES + lane] = sum;
    }
}

// Step 3, tree: lane[l] += lane[l + w] for l < w, w = 16, 8, 4, 2, 1; the partial is lane 0.
__global__ void grad_chunk_partials(const double* lanes, long long chunks, double* partials) {
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    for (long long c = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; c < chunks;
         c += stride) {
        double lane[GRAD_LANES];
#pragma unroll
        for (int l = 0; l < GRAD_LANES; ++l) {
            lane[l] = lanes[c * GRAD_LANES + l];
        }
#pragma unroll
        for (int w = GRAD_LANES / 2; w >= 1; w /= 2) {
#pragma unroll
            for (int l = 0; l < w; ++l) {
                lane[l] = lane[l] + lane[l + w];
            }
        }
        partials[c] = lane[0];
    }
}

// Step 4 on values base .. base + 2^log_group - 1 of `in` (0.0 past n): the pairwise tree, leaf
// by leaf, keeping one pending left subtree per level (a binary counter): leaf j closes the
// subtrees of its trailing one bits, each left + right, as the tree adds them.
__host__ __device__ __forceinline__ double group_sum(const double* in, long long n, long long base,
                                                    int log_group) {
    double pending[MAX_LOG_GROUP + 1];
    const long long size = 1LL << log_group;
    for (long long j = 0; j < size; ++j) {
        double carry = base + j < n ? in[base + j] : 0.0;
        int level = 0;
        for (long long bits = j; bits & 1; bits >>= 1) {
            carry = pending[level] + carry;
            ++level;
        }
        pending[level] = carry;
    }
    return pending[log_group];
}

// Step 4, one level of groups: out[i] = the tree of in[i * 2^log_group ...].
__global__ void grad_tree_sums(const double* in, long long n, int log_group, double* out,
                               long long n_out) {
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_out;
         i += stride) {
        out[i] = group_sum(in, n, i << log_group, log_group);
    }
}

// Steps 4 (the last group) and 5: found_inf (1.0 or 0.0, as torch's GradScaler keeps it) and
// the norm (NaN as the one quiet NaN the host gives).
__global__ void grad_finish(const double* in, long long n, int log_group, float* found_inf,
                            double* norm) {
    if (blockIdx.x != 0 || threadIdx.x != 0) {
        return;
    }
    const double total = group_sum(in, n, 0, log_group);
    found_inf[0] = isfinite(total) ? 0.0f : 1.0f;
    if (isnan(total)) {
        const union {
            unsigned long long bits;
            double value;
        } quiet_nan = {0x7ff8000000000000ULL};
        norm[0] = quiet_nan.value;
    } else {
        norm[0] = sqrt(total);
    }
}

}  // namespace fastrms
