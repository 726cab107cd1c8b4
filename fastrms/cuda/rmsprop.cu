// fastrms: the fused RMSProp step as CUDA C++ (loaded by fastrms/cuda/loader.py via cupy.RawModule).
//
// Self-contained on purpose: CuPy's compile cache hashes the source string only, so a user header
// would go stale unseen. It includes nothing but the CUDA toolkit's half-precision headers. The
// loader compiles this file followed by the layout check of RuleArgs (static_asserts generated
// from fastrms/cuda/rule_args.py): one string, joined in Python, hashed by CuPy as a whole.
//
// The element function below spells fastrms/rule.py line by line (same names, same order). With
// the scalars cast once on the host (fastrms/_spec.py: Rule.scalars), no literals here, IEEE sqrt
// and division, and no fused multiply-add (--fmad=false), every operation rounds exactly as in
// the NumPy reference; the host-emulation tests (tests/native/) check that bit for bit.
//
// Instances: each kernel (one set of buffers: rmsprop_kernel; a list of them through a pointer
// table: rmsprop_multi_kernel) is a template on the param dtype and on the two structural flags (is
// there a momentum buffer, a grad average), which decide what is loaded and stored: 4 x 2 x 2 = 16
// per kernel. The remaining modes (maximize, weight decay form, centered form, eps placement, bias
// correction, momentum form) are uniform runtime arguments, and so is where the lr comes from (the
// rule, or device memory: with_lr): every thread takes the same branch, which costs a few
// predicated instructions in a kernel bound by memory traffic, whereas making them template
// parameters too would mean 384 mode combinations x 4 dtypes to compile and cache.

#include <cuda_fp16.h>
#include <cuda_bf16.h>

namespace fastrms {

// Positions in the scalar array k and the mode array m (RuleArgs below), and the values of each
// mode: the same numbers as fastrms/rule.py.
enum Scalar { LR, ALPHA, ONE_MINUS_ALPHA, EPS, WEIGHT_DECAY, MOMENTUM, LERP_WEIGHT, BIAS_CORRECTION,
              GRAD_UNSCALE, CLIP, N_SCALARS };
enum Mode { MAXIMIZE, WEIGHT_DECAY_MODE, CENTERED_MODE, EPS_IN_SQRT, BIAS_CORRECTED, MOMENTUM_MODE,
            N_MODES };
enum { WD_NONE, WD_COUPLED, WD_DECOUPLED };
enum { CENTERED_NONE, CENTERED_EMA, CENTERED_LERP_FROM_AVG, CENTERED_LERP_FROM_GRAD };
enum { MOMENTUM_NONE, MOMENTUM_LR_OUTSIDE, MOMENTUM_LR_INSIDE, MOMENTUM_NESTEROV };

// The rule as the kernels take it, one struct passed by value: the scalars k (cast once on the host
// to the compute type T) and the modes m, at fastrms/rule.py's positions. CuPy passes it as a NumPy
// structured array of size one (the driver copies sizeof(RuleArgs<T>) bytes from its data), built
// by fastrms/cuda/rule_args.py from one field list that mirrors this struct; static_asserts
// generated from that NumPy dtype follow this source wherever it is compiled, so a layout that
// disagrees fails the compile. A new scalar: its name in the enum above and its position in
// fastrms/rule.py (the array lengths follow), then its use in the rule.
template <typename T>
struct RuleArgs {
    T k[N_SCALARS];
    int m[N_MODES];
};

// IEEE square roots (the compile options contain no fast-math flag).
__host__ __device__ __forceinline__ float root(float v) { return sqrtf(v); }
__host__ __device__ __forceinline__ double root(double v) { return sqrt(v); }

// One RMSProp step on one element, in the compute type T: fastrms/rule.py's rmsprop_element.
template <typename T>
__host__ __device__ __forceinline__ void rmsprop_element(T& x, T g, T& s, T& b, T& a,
                                                         const T (&k)[N_SCALARS],
                                                         const int (&m)[N_MODES]) {
    const T lr = k[LR];
    // Loss scaling and clipping: both factors are 1 (exact, a no-op) unless the step sets them.
    g = g * k[GRAD_UNSCALE];
    g = g * k[CLIP];
    if (m[MAXIMIZE]) {
        g = -g;
    }
    if (m[WEIGHT_DECAY_MODE] == WD_COUPLED) {
        g = g + k[WEIGHT_DECAY] * x;
    } else if (m[WEIGHT_DECAY_MODE] == WD_DECOUPLED) {
        x = x - x * k[WEIGHT_DECAY] * lr;
    }

    s = k[ALPHA] * s + k[ONE_MINUS_ALPHA] * g * g;

    const int centered = m[CENTERED_MODE];
    if (centered == CENTERED_EMA) {
        a = k[ALPHA] * a + k[ONE_MINUS_ALPHA] * g;
    } else if (centered == CENTERED_LERP_FROM_AVG) {
        a = a + k[LERP_WEIGHT] * (g - a);
    } else if (centered == CENTERED_LERP_FROM_GRAD) {
        a = g - (g - a) * k[LERP_WEIGHT];
    }

    T v;
    if (m[BIAS_CORRECTED]) {
        const T c = k[BIAS_CORRECTION];
        v = s / c;
        if (centered != CENTERED_NONE) {
            v = v - (a / c) * (a / c);
        }
    } else if (centered != CENTERED_NONE) {
        v = s - a * a;
    } else {
        v = s;
    }

    T d;
    if (m[EPS_IN_SQRT]) {
        d = root(v + k[EPS]);
    } else {
        d = root(v) + k[EPS];
    }
    const T u = g / d;

    const int momentum = m[MOMENTUM_MODE];
    if (momentum == MOMENTUM_LR_OUTSIDE) {
        b = k[MOMENTUM] * b + u;
        x = x - lr * b;
    } else if (momentum == MOMENTUM_LR_INSIDE) {
        b = k[MOMENTUM] * b + lr * u;
        x = x - b;
    } else if (momentum == MOMENTUM_NESTEROV) {
        b = k[MOMENTUM] * b + lr * u;
        x = x - (lr * u + k[MOMENTUM] * b);
    } else {
        x = x - lr * u;
    }
}

// What Step applies to each element: the rule, or, where the benchmark compiles this source with
// -DFASTRMS_SAME_TRAFFIC (fastrms/bench/gpu_roofline.py), its roofline: the step's very loads,
// stores and launch, with one multiply-add per buffer in place of the rule.
template <typename T>
__host__ __device__ __forceinline__ void step_element(T& x, T g, T& s, T& b, T& a,
                                                      const T (&k)[N_SCALARS],
                                                      const int (&m)[N_MODES]) {
#ifdef FASTRMS_SAME_TRAFFIC
    const T c = k[ALPHA];
    x = x * c + g;
    s = s * c + g;
    b = b * c + g;
    a = a * c + g;
#else
    rmsprop_element(x, g, s, b, a, k, m);
#endif
}

// Param dtype -> compute (and state) dtype, with the conversions. Half types compute and keep
// state in float32 and round params back to nearest even.
template <typename P> struct Precision;
template <> struct Precision<float> {
    using T = float;
    __host__ __device__ __forceinline__ static T widen(float v) { return v; }
    __host__ __device__ __forceinline__ static float narrow(T v) { return v; }
};
template <> struct Precision<double> {
    using T = double;
    __host__ __device__ __forceinline__ static T widen(double v) { return v; }
    __host__ __device__ __forceinline__ static double narrow(T v) { return v; }
};
template <> struct Precision<__half> {
    using T = float;
    __host__ __device__ __forceinline__ static T widen(__half v) { return __half2float(v); }
    __host__ __device__ __forceinline__ static __half narrow(T v) { return __float2half_rn(v); }
};
template <> struct Precision<__nv_bfloat16> {
    using T = float;
    __host__ __device__ __forceinline__ static T widen(__nv_bfloat16 v) { return __bfloat162float(v); }
    __host__ __device__ __forceinline__ static __nv_bfloat16 narrow(T v) { return __float2bfloat16_rn(v); }
};

// The modes, hidden from the optimizer: element by element, the compiler would otherwise thread
// each uniform branch into the next element's copy of it (and hoist them out of the loops), cloning
// the loop bodies once per mode combination: 500k lines of PTX and a ptxas that runs for minutes.
// An empty asm statement emits no instruction and makes every copy a fresh, unknown value; the
// branches it leaves are uniform (every thread takes the same way) and cheap next to the memory
// traffic.
struct Modes {
    int m[N_MODES];
};
__host__ __device__ __forceinline__ Modes opaque(const int (&m)[N_MODES]) {
    Modes fresh;
    for (int q = 0; q < N_MODES; ++q) {
        int v = m[q];
        asm volatile("" : "+r"(v));
        fresh.m[q] = v;
    }
    return fresh;
}

// N consecutive elements moved as whole 16-byte words: one 128-bit load/store per 16 bytes.
template <typename E, int N>
struct alignas(16) Pack {
    E v[N];
};

// Elements per thread on the vector path: one 16-byte word of params (4 float, 2 double, 8 half).
// Launchers must use the same number (fastrms/cuda/plan.py: vector_width).
template <typename P> struct Vector { static constexpr int width = 16 / sizeof(P); };

template <typename P, bool HAS_MOMENTUM, bool HAS_GRAD_AVG>
struct Step {
    using T = typename Precision<P>::T;

    // One element at index i (the scalar path: heads, tails, unaligned views). Absent state
    // buffers are stood in for by g, as in fastrms/reference.py; the rule leaves them unused.
    template <typename I>
    __host__ __device__ __forceinline__ static void one(
        I i, P* __restrict__ param, const P* __restrict__ grad, T* __restrict__ square_avg,
        T* __restrict__ momentum_buffer, T* __restrict__ grad_avg,
        const T (&k)[N_SCALARS], const int (&m)[N_MODES]) {
        T x = Precision<P>::widen(param[i]);
        const T g = Precision<P>::widen(grad[i]);
        T s = square_avg[i];
        T b = HAS_MOMENTUM ? momentum_buffer[i] : g;
        T a = HAS_GRAD_AVG ? grad_avg[i] : g;
        step_element(x, g, s, b, a, k, opaque(m).m);
        param[i] = Precision<P>::narrow(x);
        square_avg[i] = s;
        if (HAS_MOMENTUM) momentum_buffer[i] = b;
        if (HAS_GRAD_AVG) grad_avg[i] = a;
    }

    // W elements from index i, every buffer 16-byte aligned there (the launcher guarantees it).
    template <typename I>
    __host__ __device__ __forceinline__ static void packed(
        I i, P* __restrict__ param, const P* __restrict__ grad, T* __restrict__ square_avg,
        T* __restrict__ momentum_buffer, T* __restrict__ grad_avg,
        const T (&k)[N_SCALARS], const int (&m)[N_MODES]) {
        constexpr int W = Vector<P>::width;
        using Params = Pack<P, W>;
        using States = Pack<T, W>;
        Params xs = *reinterpret_cast<const Params*>(param + i);
        const Params gs = *reinterpret_cast<const Params*>(grad + i);
        States ss = *reinterpret_cast<const States*>(square_avg + i);
        States bs, as;
        if (HAS_MOMENTUM) bs = *reinterpret_cast<const States*>(momentum_buffer + i);
        if (HAS_GRAD_AVG) as = *reinterpret_cast<const States*>(grad_avg + i);
#pragma unroll
        for (int j = 0; j < W; ++j) {
            T x = Precision<P>::widen(xs.v[j]);
            const T g = Precision<P>::widen(gs.v[j]);
            T b = HAS_MOMENTUM ? bs.v[j] : g;
            T a = HAS_GRAD_AVG ? as.v[j] : g;
            step_element(x, g, ss.v[j], b, a, k, opaque(m).m);
            xs.v[j] = Precision<P>::narrow(x);
            if (HAS_MOMENTUM) bs.v[j] = b;
            if (HAS_GRAD_AVG) as.v[j] = a;
        }
        *reinterpret_cast<Params*>(param + i) = xs;
        *reinterpret_cast<States*>(square_avg + i) = ss;
        if (HAS_MOMENTUM) *reinterpret_cast<States*>(momentum_buffer + i) = bs;
        if (HAS_GRAD_AVG) *reinterpret_cast<States*>(grad_avg + i) = as;
    }
};

// The rule with its lr read from device memory where lr_device is not null (capturable steps: a
// CUDA graph replays the same arguments while an LR scheduler writes the lr there), else as passed.
// Cast to T as the host casts Rule.lr (fastrms/_spec.py: _scalars, T(lr)), so that an lr read here
// and the same lr passed by value give the same bits. Read once per thread, before any element.
template <typename T>
__host__ __device__ __forceinline__ RuleArgs<T> with_lr(RuleArgs<T> rule,
                                                        const double* __restrict__ lr_device) {
    if (lr_device != nullptr) {
        rule.k[LR] = static_cast<T>(*lr_device);
    }
    return rule;
}

constexpr int BLOCK = 256;  // threads per block; fastrms/cuda/plan.py launches exactly this many
// Blocks resident per multiprocessor that launches count on (plan.py: BLOCKS_PER_SM): at most 64
// registers per thread. rmsprop_kernel stays below that by itself; the multi kernel is told.
constexpr int BLOCKS_PER_SM = 4;

// Elements [begin, end) of flat buffers, shared out among `threads` threads from `thread` on, in
// index type I. [vec_begin, vec_end) (a multiple of the vector width long, every buffer 16-byte
// aligned at vec_begin) takes the 128-bit path; the head [begin, vec_begin) and the tail
// [vec_end, end) take the scalar path. Unaligned views pass vec_begin = vec_end = end. Absent state
// buffers are null. Both kernels below call this, so a list element is updated by the very code a
// single buffer is.
template <typename P, bool HAS_MOMENTUM, bool HAS_GRAD_AVG, typename I>
__host__ __device__ __forceinline__ void sweep(
    I thread, I threads, P* __restrict__ param, const P* __restrict__ grad,
    typename Precision<P>::T* __restrict__ square_avg,
    typename Precision<P>::T* __restrict__ momentum_buffer,
    typename Precision<P>::T* __restrict__ grad_avg, I begin, I vec_begin, I vec_end, I end,
    const typename Precision<P>::T (&k)[N_SCALARS], const int (&m)[N_MODES]) {
    using S = Step<P, HAS_MOMENTUM, HAS_GRAD_AVG>;
    constexpr int W = Vector<P>::width;
    for (I i = vec_begin + thread * W; i < vec_end; i += threads * W) {
        S::packed(i, param, grad, square_avg, momentum_buffer, grad_avg, k, m);
    }
    for (I i = begin + thread; i < vec_begin; i += threads) {
        S::one(i, param, grad, square_avg, momentum_buffer, grad_avg, k, m);
    }
    for (I i = vec_end + thread; i < end; i += threads) {
        S::one(i, param, grad, square_avg, momentum_buffer, grad_avg, k, m);
    }
}

// One step over elements [begin, end) of one set of buffers, grid-stride (see sweep).
// begin is 0 for whole buffers; a nonzero begin (with pointers offset to match) lets a test run
// indices past 2^32 on a small window.
template <typename P, bool HAS_MOMENTUM, bool HAS_GRAD_AVG>
__global__ void __launch_bounds__(BLOCK) rmsprop_kernel(
    P* __restrict__ param, const P* __restrict__ grad,
    typename Precision<P>::T* __restrict__ square_avg,
    typename Precision<P>::T* __restrict__ momentum_buffer,
    typename Precision<P>::T* __restrict__ grad_avg,
    long long begin, long long vec_begin, long long vec_end, long long end,
    const RuleArgs<typename Precision<P>::T> rule, const double* __restrict__ lr_device) {
    const long long thread = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    const long long threads = static_cast<long long>(gridDim.x) * blockDim.x;
    const auto r = with_lr(rule, lr_device);
    sweep<P, HAS_MOMENTUM, HAS_GRAD_AVG, long long>(thread, threads, param, grad, square_avg,
                                                    momentum_buffer, grad_avg, begin, vec_begin,
                                                    vec_end, end, r.k, r.m);
}

// The multi-tensor launch's tables (fastrms/cuda/plan.py: multi_plan builds them), int64 rows:
// tensors[j] = the data addresses of tensor j's param, grad, square_avg, momentum_buffer, grad_avg
// (0 where absent); chunks[c] = (tensor, begin, vec_begin, vec_end, end), a piece of one tensor
// with its 128-bit span already worked out on the host (per tensor alignment, as sweep wants it).
enum Column { PARAM, GRAD, SQUARE_AVG, MOMENTUM_BUFFER, GRAD_AVG, N_COLUMNS };
enum ChunkField { TENSOR, BEGIN, VEC_BEGIN, VEC_END, END, N_CHUNK_FIELDS };

// A table entry as a pointer. Loaded from memory, it is a generic pointer to the compiler (ld.v4 /
// st.v4 rather than rmsprop_kernel's ld.global.v4; hints such as __builtin_assume(__isGlobal(p))
// or a cvta round trip are folded away by nvcc 13): still one 128-bit access per 16 bytes.
template <typename E>
__host__ __device__ __forceinline__ E* address(long long a) {
    return reinterpret_cast<E*>(static_cast<unsigned long long>(a));
}

// One step over a whole list of tensors in one launch (torch's multi_tensor_apply idea): block b
// takes chunks b, b + gridDim.x, ...; its threads share each chunk out as sweep does. Chunks are
// small (plan.py: CHUNK, 2^16 elements), so a list of one huge and many small tensors still
// spreads over every block; the grid is one resident wave, as for rmsprop_kernel.
template <typename P, bool HAS_MOMENTUM, bool HAS_GRAD_AVG>
__global__ void __launch_bounds__(BLOCK, BLOCKS_PER_SM) rmsprop_multi_kernel(
    const long long* __restrict__ tensors, const long long* __restrict__ chunks, long long n_chunks,
    const RuleArgs<typename Precision<P>::T> rule, const double* __restrict__ lr_device) {
    using T = typename Precision<P>::T;
    const auto r = with_lr(rule, lr_device);
    for (long long c = blockIdx.x; c < n_chunks; c += gridDim.x) {
        const long long* chunk = chunks + c * N_CHUNK_FIELDS;
        const long long* row = tensors + chunk[TENSOR] * N_COLUMNS;
        // 64-bit offsets move the pointers to the chunk's start; within a chunk (< 2^31 elements,
        // plan.py checks) int indices do, which saves the registers 64-bit ones would take.
        const long long at = chunk[BEGIN];
        P* param = address<P>(row[PARAM]) + at;
        const P* grad = address<const P>(row[GRAD]) + at;
        T* square_avg = address<T>(row[SQUARE_AVG]) + at;
        T* momentum_buffer = HAS_MOMENTUM ? address<T>(row[MOMENTUM_BUFFER]) + at : nullptr;
        T* grad_avg = HAS_GRAD_AVG ? address<T>(row[GRAD_AVG]) + at : nullptr;
        sweep<P, HAS_MOMENTUM, HAS_GRAD_AVG, int>(
            static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x), param, grad, square_avg,
            momentum_buffer, grad_avg, 0, static_cast<int>(chunk[VEC_BEGIN] - at),
            static_cast<int>(chunk[VEC_END] - at), static_cast<int>(chunk[END] - at), r.k, r.m);
    }
}

}  // namespace fastrms

// Every instance, for builds that compile the whole source (CMake's nvcc check, the host
// emulation). CuPy instead names the one it needs (name_expressions), so it compiles only that.
#ifdef FASTRMS_INSTANTIATE_ALL
#define FASTRMS_INSTANCE(P, M, A)                                                          \
    template __global__ void fastrms::rmsprop_kernel<P, M, A>(                             \
        P*, const P*, fastrms::Precision<P>::T*, fastrms::Precision<P>::T*,                \
        fastrms::Precision<P>::T*, long long, long long, long long, long long,             \
        fastrms::RuleArgs<fastrms::Precision<P>::T>, const double*);
#define FASTRMS_MULTI_INSTANCE(P, M, A)                                                    \
    template __global__ void fastrms::rmsprop_multi_kernel<P, M, A>(                       \
        const long long*, const long long*, long long,                                     \
        fastrms::RuleArgs<fastrms::Precision<P>::T>, const double*);
#define FASTRMS_BOTH(P, M, A) FASTRMS_INSTANCE(P, M, A) FASTRMS_MULTI_INSTANCE(P, M, A)
#define FASTRMS_INSTANCES(P) FASTRMS_BOTH(P, false, false) FASTRMS_BOTH(P, true, false)             \
    FASTRMS_BOTH(P, false, true) FASTRMS_BOTH(P, true, true)
FASTRMS_INSTANCES(float)
FASTRMS_INSTANCES(double)
FASTRMS_INSTANCES(__half)
FASTRMS_INSTANCES(__nv_bfloat16)
#undef FASTRMS_INSTANCES
#undef FASTRMS_BOTH
#undef FASTRMS_MULTI_INSTANCE
#undef FASTRMS_INSTANCE
#endif
