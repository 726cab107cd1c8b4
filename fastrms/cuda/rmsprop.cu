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
            CLAMP_VARIANCE, N_MODES };
enum { WD_NONE, WD_COUPLED, WD_DECOUPLED };
enum { CENTERED_NONE, CENTERED_EMA, CENTERED_LERP_FROM_AVG, CENTERED_LERP_FROM_GRAD };
enum { MOMENTUM_NONE, MOMENTUM_LR_OUTSIDE, MOMENTUM_LR_INSIDE, MOMENTUM_NESTEROV };
// Storage formats of a param and the rounding modes: fastrms/rounding.py's numbers.
enum Format { FLOAT, BFLOAT16, FLOAT16 };
enum Rounding { NEAREST, STOCHASTIC };
// The values at amp_device (fastrms._buffers.Extras.device_amp), float32.
enum Amp { FOUND_INF, GRAD_SCALE, CLIP_FACTOR };

// The rule as the kernels take it, one struct passed by value: the scalars k (cast once on the host
// to the compute type T) and the modes m, at fastrms/rule.py's positions. CuPy passes it as a NumPy
// structured array of size one (the driver copies sizeof(RuleArgs<T>) bytes from its data), built
// by fastrms/cuda/rule_args.py from one field list that mirrors this struct; static_asserts
// generated from that NumPy dtype follow this source wherever it is compiled, so a layout that
// disagrees fails the compile. A new scalar: its name in the enum above and its position in
// fastrms/rule.py (the array lengths follow), then its use in the rule. rounding and key say how a
// half param is written (key: rounding.step_key(seed, step)); float and double params ignore them.
template <typename T>
struct RuleArgs {
    T k[N_SCALARS];
    int m[N_MODES];
    int rounding;
    unsigned long long key;
};

// IEEE square roots (the compile options contain no fast-math flag).
__host__ __device__ __forceinline__ float root(float v) { return sqrtf(v); }
__host__ __device__ __forceinline__ double root(double v) { return sqrt(v); }

// One RMSProp step on one element, in the compute type T: fastrms/rule.py's rmsprop_element.
// MAY_CLAMP: whether m[CLAMP_VARIANCE] is read at all; only the 8-bit kernel sets it, and the
// float64 instances of the others have no register to spare for the branch (ptxas spills).
template <typename T, bool MAY_CLAMP = false>
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
    if (MAY_CLAMP && m[CLAMP_VARIANCE]) {  // the 8-bit step's: NaN stays NaN
        v = v < T(0) ? T(0) : v;
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

// Param dtype -> compute (and state) dtype, storage format (rounding.py's), and the conversions.
// Half types compute and keep state in float32; narrow rounds to nearest even.
template <typename P> struct Precision;
template <> struct Precision<float> {
    using T = float;
    static constexpr int format = FLOAT;
    __host__ __device__ __forceinline__ static T widen(float v) { return v; }
    __host__ __device__ __forceinline__ static float narrow(T v) { return v; }
};
template <> struct Precision<double> {
    using T = double;
    static constexpr int format = FLOAT;
    __host__ __device__ __forceinline__ static T widen(double v) { return v; }
    __host__ __device__ __forceinline__ static double narrow(T v) { return v; }
};
template <> struct Precision<__half> {
    using T = float;
    static constexpr int format = FLOAT16;
    __host__ __device__ __forceinline__ static T widen(__half v) { return __half2float(v); }
    __host__ __device__ __forceinline__ static __half narrow(T v) { return __float2half_rn(v); }
};
template <> struct Precision<__nv_bfloat16> {
    using T = float;
    static constexpr int format = BFLOAT16;
    __host__ __device__ __forceinline__ static T widen(__nv_bfloat16 v) { return __bfloat162float(v); }
    __host__ __device__ __forceinline__ static __nv_bfloat16 narrow(T v) { return __float2bfloat16_rn(v); }
};

// Stochastic rounding, fastrms/rounding.py line by line, in integers only (unsigned arithmetic
// wraps around as NumPy's uint32 and uint64 do). The generator: splitmix64's finaliser over a
// 64-bit counter.
__host__ __device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Uniform random bits for element `counter` (offset + index) under `key` (a step's step_key).
__host__ __device__ __forceinline__ unsigned random32(unsigned long long key,
                                                      unsigned long long counter) {
    return static_cast<unsigned>(mix64(key + counter * 0x9E3779B97F4A7C15ull) >> 32);
}

__host__ __device__ __forceinline__ unsigned min32(unsigned a, unsigned b) { return a < b ? a : b; }

// float32 bits b moved, with random bits r, to a value that FMT (BFLOAT16 or FLOAT16) represents
// exactly: random bits added below the kept bits, then truncated. NaN and inf are kept.
template <int FMT>
__host__ __device__ __forceinline__ unsigned stochastic_f32(unsigned b, unsigned r) {
    const unsigned sign = b & 0x80000000u;
    const unsigned a = b & 0x7FFFFFFFu;
    unsigned dropped;
    if constexpr (FMT == BFLOAT16) {
        dropped = 16u;
    } else {  // float16: 13 bits for normal results; below 2^-14 the spacing is 2^-24 (126 - e bits)
        const unsigned e = a >> 23;
        dropped = min32(126u - min32(e > 103u ? e : 103u, 113u), 23u);
    }
    const unsigned mask = (1u << dropped) - 1u;
    unsigned moved = (a + (r >> (32u - dropped))) & ~mask;
    if constexpr (FMT == FLOAT16) {
        // Below 2^-24 (e < 103) the implicit bit is dropped too: round up to 2^-24 with
        // probability a/2^-24, in integers: r < m * 2^(e - 94).
        const unsigned e = a >> 23;
        const unsigned m = (a & 0x7FFFFFu) | (e == 0u ? 0u : 0x800000u);
        const unsigned lshift = e > 94u ? e - 94u : 0u;
        const unsigned rshift = min32(e > 94u ? 0u : 94u - e, 31u);
        if (e < 103u) {  // rounding.py selects; a branch keeps C++'s shifts below 32 bits
            const unsigned threshold = (m << lshift) >> rshift;
            moved = r < threshold ? 0x33800000u : 0u;  // 2^-24 or 0
        }
    }
    return sign | (a >= 0x7F800000u ? a : moved);
}

// A float's bits, and back: the device's intrinsics, the host compilers' builtin elsewhere.
__host__ __device__ __forceinline__ unsigned bits_of(float v) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(v);
#else
    unsigned b;
    __builtin_memcpy(&b, &v, sizeof b);
    return b;
#endif
}
__host__ __device__ __forceinline__ float float_of(unsigned b) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(b);
#else
    float v;
    __builtin_memcpy(&v, &b, sizeof v);
    return v;
#endif
}

// x stored as a param of type P: to nearest even, or for half params with rounding STOCHASTIC,
// stochastically with element `counter`'s random bits (fastrms/reference.py: narrow).
// stochastic_f32 leaves a value that P holds exactly, so the nearest-even conversion is exact.
template <typename P>
__host__ __device__ __forceinline__ P rounded(typename Precision<P>::T x, int rounding,
                                              unsigned long long key, unsigned long long counter) {
    if constexpr (Precision<P>::format != FLOAT) {
        if (rounding == STOCHASTIC) {
            x = float_of(stochastic_f32<Precision<P>::format>(bits_of(x), random32(key, counter)));
        }
    } else {
        (void)rounding, (void)key, (void)counter;
    }
    return Precision<P>::narrow(x);
}

// The modes, hidden from the optimizer: element by element, the compiler would otherwise thread
// each uniform branch into the next element's copy of it (and hoist them out of the loops), cloning
// the loop bodies once per mode combination: 500k lines of PTX and a ptxas that runs for minutes.
// An empty asm statement emits no instruction and makes every copy a fresh, unknown value; the
// branches it leaves are uniform (every thread takes the same way) and cheap next to the memory
// traffic.
__host__ __device__ __forceinline__ int opaque(int v) {
    asm volatile("" : "+r"(v));
    return v;
}
struct Modes {
    int m[N_MODES];
};
__host__ __device__ __forceinline__ Modes opaque(const int (&m)[N_MODES]) {
    Modes fresh;
    for (int q = 0; q < N_MODES; ++q) {
        fresh.m[q] = opaque(m[q]);
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

// Element i of the buffers (index 0 at the pointers) takes the random bits of counter + i. With a
// master (master_param not null: float32 for half params) the rule runs on the master and the
// param receives its rounded copy, unread (fastrms/reference.py: evaluate).
template <typename P, bool HAS_MOMENTUM, bool HAS_GRAD_AVG>
struct Step {
    using T = typename Precision<P>::T;

    // One element at index i (the scalar path: heads, tails, unaligned views). Absent state
    // buffers are stood in for by g, as in fastrms/reference.py; the rule leaves them unused.
    template <typename I>
    __host__ __device__ __forceinline__ static void one(
        I i, P* __restrict__ param, const P* __restrict__ grad, T* __restrict__ square_avg,
        T* __restrict__ momentum_buffer, T* __restrict__ grad_avg, T* __restrict__ master_param,
        unsigned long long counter, const RuleArgs<T>& rule) {
        T x = master_param != nullptr ? master_param[i] : Precision<P>::widen(param[i]);
        const T g = Precision<P>::widen(grad[i]);
        T s = square_avg[i];
        T b = HAS_MOMENTUM ? momentum_buffer[i] : g;
        T a = HAS_GRAD_AVG ? grad_avg[i] : g;
        step_element(x, g, s, b, a, rule.k, opaque(rule.m).m);
        param[i] = rounded<P>(x, opaque(rule.rounding), rule.key, counter + i);
        square_avg[i] = s;
        if (HAS_MOMENTUM) momentum_buffer[i] = b;
        if (HAS_GRAD_AVG) grad_avg[i] = a;
        if (master_param != nullptr) master_param[i] = x;
    }

    // W elements from index i, every buffer 16-byte aligned there (the launcher guarantees it).
    template <typename I>
    __host__ __device__ __forceinline__ static void packed(
        I i, P* __restrict__ param, const P* __restrict__ grad, T* __restrict__ square_avg,
        T* __restrict__ momentum_buffer, T* __restrict__ grad_avg, T* __restrict__ master_param,
        unsigned long long counter, const RuleArgs<T>& rule) {
        constexpr int W = Vector<P>::width;
        using Params = Pack<P, W>;
        using States = Pack<T, W>;
        States xs;  // x in the compute type: the master's, or the param widened
        if (master_param != nullptr) {
            xs = *reinterpret_cast<const States*>(master_param + i);
        } else {
            const Params ps = *reinterpret_cast<const Params*>(param + i);
#pragma unroll
            for (int j = 0; j < W; ++j) xs.v[j] = Precision<P>::widen(ps.v[j]);
        }
        const Params gs = *reinterpret_cast<const Params*>(grad + i);
        States ss = *reinterpret_cast<const States*>(square_avg + i);
        States bs, as;
        if (HAS_MOMENTUM) bs = *reinterpret_cast<const States*>(momentum_buffer + i);
        if (HAS_GRAD_AVG) as = *reinterpret_cast<const States*>(grad_avg + i);
        Params ps;
#pragma unroll
        for (int j = 0; j < W; ++j) {
            const T g = Precision<P>::widen(gs.v[j]);
            T b = HAS_MOMENTUM ? bs.v[j] : g;
            T a = HAS_GRAD_AVG ? as.v[j] : g;
            step_element(xs.v[j], g, ss.v[j], b, a, rule.k, opaque(rule.m).m);
            ps.v[j] = rounded<P>(xs.v[j], opaque(rule.rounding), rule.key, counter + i + j);
            if (HAS_MOMENTUM) bs.v[j] = b;
            if (HAS_GRAD_AVG) as.v[j] = a;
        }
        *reinterpret_cast<Params*>(param + i) = ps;
        *reinterpret_cast<States*>(square_avg + i) = ss;
        if (HAS_MOMENTUM) *reinterpret_cast<States*>(momentum_buffer + i) = bs;
        if (HAS_GRAD_AVG) *reinterpret_cast<States*>(grad_avg + i) = as;
        if (master_param != nullptr) *reinterpret_cast<States*>(master_param + i) = xs;
    }
};

// Whether the AMP values at amp_device (null: none) report an inf or NaN in the grads: the step
// then writes nothing (every thread returns before its first store).
__host__ __device__ __forceinline__ bool found_inf(const float* __restrict__ amp_device) {
    return amp_device != nullptr && amp_device[FOUND_INF] != 0.0f;
}

// The rule with the values a capturable step keeps in device memory, each cast to T as the host
// casts it (fastrms/_spec.py: _scalars): the lr at lr_device (a CUDA graph replays the same
// arguments while an LR scheduler writes the lr there) and the grad scale and clip factor at
// amp_device (torch's GradScaler and clip_grad_norm_ on the device), so that a value read here
// and the same value passed by value give the same bits. Null pointers: the rule's own values.
// Read once per thread, before any element.
template <typename T>
__host__ __device__ __forceinline__ RuleArgs<T> with_device_values(
    RuleArgs<T> rule, const double* __restrict__ lr_device, const float* __restrict__ amp_device) {
    if (lr_device != nullptr) {
        rule.k[LR] = static_cast<T>(*lr_device);
    }
    if (amp_device != nullptr) {
        rule.k[GRAD_UNSCALE] = static_cast<T>(1.0 / static_cast<double>(amp_device[GRAD_SCALE]));
        rule.k[CLIP] = static_cast<T>(amp_device[CLIP_FACTOR]);
    }
    return rule;
}

constexpr int BLOCK = 256;  // threads per block; fastrms/cuda/plan.py launches exactly this many
// Launches count on 4 resident blocks per multiprocessor (plan.py: BLOCKS_PER_SM), so at most 64
// registers per thread: both kernels stay below that by themselves (tests/test_cuda_build.py
// checks). Told so (__launch_bounds__'s minimum blocks), ptxas schedules the double instances of
// the multi kernel up to the cap and spills; left alone, they take about 50.

// Elements [begin, end) of flat buffers, shared out among `threads` threads from `thread` on, in
// index type I. [vec_begin, vec_end) (a multiple of the vector width long, every buffer 16-byte
// aligned at vec_begin) takes the 128-bit path; the head [begin, vec_begin) and the tail
// [vec_end, end) take the scalar path. Unaligned views pass vec_begin = vec_end = end. Absent
// buffers are null; element i takes the random bits of counter + i. Both kernels below call this,
// so a list element is updated by the very code a single buffer is.
template <typename P, bool HAS_MOMENTUM, bool HAS_GRAD_AVG, typename I>
__host__ __device__ __forceinline__ void sweep(
    I thread, I threads, P* __restrict__ param, const P* __restrict__ grad,
    typename Precision<P>::T* __restrict__ square_avg,
    typename Precision<P>::T* __restrict__ momentum_buffer,
    typename Precision<P>::T* __restrict__ grad_avg,
    typename Precision<P>::T* __restrict__ master_param, I begin, I vec_begin, I vec_end, I end,
    unsigned long long counter, const RuleArgs<typename Precision<P>::T>& rule) {
    using S = Step<P, HAS_MOMENTUM, HAS_GRAD_AVG>;
    constexpr int W = Vector<P>::width;
    for (I i = vec_begin + thread * W; i < vec_end; i += threads * W) {
        S::packed(i, param, grad, square_avg, momentum_buffer, grad_avg, master_param, counter,
                  rule);
    }
    for (I i = begin + thread; i < vec_begin; i += threads) {
        S::one(i, param, grad, square_avg, momentum_buffer, grad_avg, master_param, counter, rule);
    }
    for (I i = vec_end + thread; i < end; i += threads) {
        S::one(i, param, grad, square_avg, momentum_buffer, grad_avg, master_param, counter, rule);
    }
}

// One step over elements [begin, end) of one set of buffers, grid-stride (see sweep); element i
// takes the random bits of offset + i. begin is 0 for whole buffers; a nonzero begin (with
// pointers offset to match) lets a test run indices past 2^32 on a small window.
template <typename P, bool HAS_MOMENTUM, bool HAS_GRAD_AVG>
__global__ void __launch_bounds__(BLOCK) rmsprop_kernel(
    P* __restrict__ param, const P* __restrict__ grad,
    typename Precision<P>::T* __restrict__ square_avg,
    typename Precision<P>::T* __restrict__ momentum_buffer,
    typename Precision<P>::T* __restrict__ grad_avg,
    typename Precision<P>::T* __restrict__ master_param,
    long long begin, long long vec_begin, long long vec_end, long long end,
    unsigned long long offset, const RuleArgs<typename Precision<P>::T> rule,
    const double* __restrict__ lr_device, const float* __restrict__ amp_device) {
    if (found_inf(amp_device)) return;
    const long long thread = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    const long long threads = static_cast<long long>(gridDim.x) * blockDim.x;
    const auto r = with_device_values(rule, lr_device, amp_device);
    sweep<P, HAS_MOMENTUM, HAS_GRAD_AVG, long long>(thread, threads, param, grad, square_avg,
                                                    momentum_buffer, grad_avg, master_param, begin,
                                                    vec_begin, vec_end, end, offset, r);
}

// The multi-tensor launch's tables (fastrms/cuda/plan.py: multi_plan builds them), int64 rows:
// tensors[j] = the data addresses of tensor j's param, grad, square_avg, momentum_buffer, grad_avg
// and master_param (0 where absent), then the counter of its element 0 (stochastic rounding);
// chunks[c] = (tensor, begin, vec_begin, vec_end, end), a piece of one tensor with its 128-bit
// span already worked out on the host (per tensor alignment, as sweep wants it).
enum Column {
    PARAM, GRAD, SQUARE_AVG, MOMENTUM_BUFFER, GRAD_AVG, MASTER_PARAM, COUNTER, N_COLUMNS
};
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
__global__ void __launch_bounds__(BLOCK) rmsprop_multi_kernel(
    const long long* __restrict__ tensors, const long long* __restrict__ chunks, long long n_chunks,
    const RuleArgs<typename Precision<P>::T> rule, const double* __restrict__ lr_device,
    const float* __restrict__ amp_device) {
    using T = typename Precision<P>::T;
    if (found_inf(amp_device)) return;
    const auto r = with_device_values(rule, lr_device, amp_device);
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
        T* master_param = row[MASTER_PARAM] != 0 ? address<T>(row[MASTER_PARAM]) + at : nullptr;
        const unsigned long long counter =  // uint64 bits in the table; wraps around as NumPy's
            static_cast<unsigned long long>(row[COUNTER]) + static_cast<unsigned long long>(at);
        sweep<P, HAS_MOMENTUM, HAS_GRAD_AVG, int>(
            static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x), param, grad, square_avg,
            momentum_buffer, grad_avg, master_param, 0, static_cast<int>(chunk[VEC_BEGIN] - at),
            static_cast<int>(chunk[VEC_END] - at), static_cast<int>(chunk[END] - at), counter, r);
    }
}

// ---- 8-bit state (fastrms/eight_bit.py, fastrms/quant8.py, fastrms/cpu/eight_bit.py) ----------
// Each state buffer is uint8 codes plus a float32 scale per block of CODE_BLOCK values. One step
// of a block: decode, the rule (with the variance clamp where centered), the param written, the
// new state kept in registers, then, once the block's largest magnitude is known, the new codes
// and scale. LANES threads share a block (lane l takes values l, l + LANES, ...), reduce their
// largest magnitude patterns with warp shuffles, and lane 0 writes the scale. The GPU build uses
// LANES = 32 (a warp per block, coalesced); the host emulation (tests/native/), which runs threads
// one after another, builds LANES = 1, whose thread does a whole block: every value and bit
// operation is the same, only the reduction's shuffles are not run there.
enum { CODE_BLOCK = 256 };  // quant8.BLOCK (an enum: NVRTC warns of unused constexpr variables)

// quant8.TABLES[UNSIGNED][c]: E5M3 from its bits (exponent field c / 8 + 96), c * 2^-33 below 8.
__host__ __device__ __forceinline__ float decode_unsigned(unsigned c) {
    return c >= 8u ? float_of((c << 20) + (96u << 23)) : static_cast<float>(c) * 0x1p-33f;
}
// quant8.TABLES[SIGNED][c]: (c - 127) * fl(1/127).
__host__ __device__ __forceinline__ float decode_signed(unsigned c) {
    return (static_cast<float>(c) - 127.0f) * (1.0f / 127.0f);
}
// quant8.inverse_of: fl(1/scale) from 2^-126 up, else 0 (NaN too).
__host__ __device__ __forceinline__ float inverse_of(float scale) {
    return scale >= 0x1p-126f ? 1.0f / scale : 0.0f;
}
// quant8.mix32 (lowbias32): the noise of the dithered code.
__host__ __device__ __forceinline__ unsigned mix32(unsigned x) {
    x = (x ^ (x >> 16)) * 0x7FEB352Du;
    x = (x ^ (x >> 15)) * 0x846CA68Bu;
    return x ^ (x >> 16);
}
// quant8.code_unsigned_dithered: min(|v * inverse|, 1) (NaN -> 1) rounded up or down with the
// noise mix32(bits): unbiased, so that EMA steps smaller than a code's spacing move it on average.
__host__ __device__ __forceinline__ unsigned char code_unsigned(float v, float inverse) {
    const unsigned bits = min32(bits_of(v * inverse) & 0x7FFFFFFFu, 0x3F800000u);
    const unsigned noise = mix32(bits);
    const unsigned normal = (bits - (96u << 23) + (noise >> 12)) >> 20;
    // Below 2^-30: the mantissa over 2^shift plus shift random bits (shift 21..31); below 2^-41, 0.
    const unsigned e = bits >> 23;
    const unsigned shift = e >= 96u ? 21u : (e <= 86u ? 31u : 117u - e);
    const unsigned small = (((bits & 0x7FFFFFu) | 0x800000u) + (noise >> (32u - shift))) >> shift;
    return static_cast<unsigned char>(bits >= (97u << 23) ? normal
                                      : bits >= (86u << 23) ? small : 0u);
}
// quant8.code_signed: v * inverse kept in [-1, 1] (NaN -> 1), then rint(127 w) + 127.
__host__ __device__ __forceinline__ unsigned char code_signed(float v, float inverse) {
    float w = v * inverse;
    w = w <= 1.0f ? w : 1.0f;
    w = w >= -1.0f ? w : -1.0f;
    return static_cast<unsigned char>(static_cast<unsigned>(rintf(w * 127.0f) + 127.0f));
}
__host__ __device__ __forceinline__ unsigned magnitude(float v) { return bits_of(v) & 0x7FFFFFFFu; }
__host__ __device__ __forceinline__ unsigned max32(unsigned a, unsigned b) { return a > b ? a : b; }

// The largest of the LANES lanes' values (LANES = 1: the value itself).
template <int LANES>
__host__ __device__ __forceinline__ unsigned lanes_max(unsigned v) {
#ifdef __CUDA_ARCH__
#pragma unroll
    for (int o = LANES / 2; o > 0; o /= 2) v = max32(v, __shfl_xor_sync(0xFFFFFFFFu, v, o));
#endif
    return v;
}

// One step over n values of one param with 8-bit state (absent buffers: null), grid-stride over
// the blocks, LANES threads each. Element i takes the random bits of offset + i.
// Registers: up to 67 (momentum + centered at sm_80+, 24 new values in flight), so 3 blocks of
// 256 threads are resident per multiprocessor, not 4; capped at 64, ptxas spills.
template <typename P, bool HAS_MOMENTUM, bool HAS_GRAD_AVG, int LANES>
__global__ void __launch_bounds__(BLOCK) rmsprop8_kernel(
    P* __restrict__ param, const P* __restrict__ grad, unsigned char* __restrict__ sq_codes,
    float* __restrict__ sq_scales, unsigned char* __restrict__ mb_codes,
    float* __restrict__ mb_scales, unsigned char* __restrict__ ga_codes,
    float* __restrict__ ga_scales, float* __restrict__ master_param, long long n,
    unsigned long long offset, const RuleArgs<float> rule, const float* __restrict__ amp_device) {
    constexpr int PER = CODE_BLOCK / LANES;
    if (found_inf(amp_device)) return;
    const auto r = with_device_values(rule, nullptr, amp_device);
    const int lane = static_cast<int>(threadIdx.x) % LANES;
    const long long groups = static_cast<long long>(gridDim.x) * (blockDim.x / LANES);
    const long long blocks = (n + CODE_BLOCK - 1) / CODE_BLOCK;
    for (long long j = static_cast<long long>(blockIdx.x) * (blockDim.x / LANES) + threadIdx.x / LANES;
         j < blocks; j += groups) {
        const float s_scale = sq_scales[j];
        const float b_scale = HAS_MOMENTUM ? mb_scales[j] : 0.0f;
        const float a_scale = HAS_GRAD_AVG ? ga_scales[j] : 0.0f;
        float s_new[PER], b_new[PER], a_new[PER];
        unsigned top_s = 0u, top_b = 0u, top_a = 0u;
        const long long first = j * CODE_BLOCK + lane;
#pragma unroll
        for (int q = 0; q < PER; ++q) {
            const long long i = first + static_cast<long long>(q) * LANES;
            if (i >= n) break;
            float x = master_param != nullptr ? master_param[i] : Precision<P>::widen(param[i]);
            const float g = Precision<P>::widen(grad[i]);
            float s = decode_unsigned(sq_codes[i]) * s_scale;
            float b = HAS_MOMENTUM ? decode_signed(mb_codes[i]) * b_scale : g;
            float a = HAS_GRAD_AVG ? decode_signed(ga_codes[i]) * a_scale : g;
            if (HAS_GRAD_AVG) s = s + a * a;  // the codes hold the variance: s = v + a^2
            rmsprop_element<float, true>(x, g, s, b, a, r.k, opaque(r.m).m);
            param[i] = rounded<P>(x, opaque(r.rounding), r.key, offset + i);
            if (master_param != nullptr) master_param[i] = x;
            if (HAS_GRAD_AVG) {
                s = s - a * a;
                s = s < 0.0f ? 0.0f : s;
            }
            s_new[q] = s;
            top_s = max32(top_s, magnitude(s));
            if (HAS_MOMENTUM) b_new[q] = b, top_b = max32(top_b, magnitude(b));
            if (HAS_GRAD_AVG) a_new[q] = a, top_a = max32(top_a, magnitude(a));
        }
        top_s = lanes_max<LANES>(top_s);  // every lane has read the old scales by now
        if (HAS_MOMENTUM) top_b = lanes_max<LANES>(top_b);
        if (HAS_GRAD_AVG) top_a = lanes_max<LANES>(top_a);
        if (lane == 0) {
            sq_scales[j] = float_of(top_s);
            if (HAS_MOMENTUM) mb_scales[j] = float_of(top_b);
            if (HAS_GRAD_AVG) ga_scales[j] = float_of(top_a);
        }
        const float s_inverse = inverse_of(float_of(top_s));
        const float b_inverse = inverse_of(float_of(top_b));
        const float a_inverse = inverse_of(float_of(top_a));
#pragma unroll
        for (int q = 0; q < PER; ++q) {
            const long long i = first + static_cast<long long>(q) * LANES;
            if (i >= n) break;
            sq_codes[i] = code_unsigned(s_new[q], s_inverse);
            if (HAS_MOMENTUM) mb_codes[i] = code_signed(b_new[q], b_inverse);
            if (HAS_GRAD_AVG) ga_codes[i] = code_signed(a_new[q], a_inverse);
        }
    }
}

}  // namespace fastrms

// Every instance, for builds that compile the whole source (CMake's nvcc check, the host
// emulation). CuPy instead names the one it needs (name_expressions), so it compiles only that.
#ifdef FASTRMS_INSTANTIATE_ALL
#define FASTRMS_INSTANCE(P, M, A)                                                          \
    template __global__ void fastrms::rmsprop_kernel<P, M, A>(                             \
        P*, const P*, fastrms::Precision<P>::T*, fastrms::Precision<P>::T*,                \
        fastrms::Precision<P>::T*, fastrms::Precision<P>::T*, long long, long long,        \
        long long, long long, unsigned long long,                                          \
        fastrms::RuleArgs<fastrms::Precision<P>::T>, const double*, const float*);
#define FASTRMS_MULTI_INSTANCE(P, M, A)                                                    \
    template __global__ void fastrms::rmsprop_multi_kernel<P, M, A>(                       \
        const long long*, const long long*, long long,                                     \
        fastrms::RuleArgs<fastrms::Precision<P>::T>, const double*, const float*);
#define FASTRMS_BOTH(P, M, A) FASTRMS_INSTANCE(P, M, A) FASTRMS_MULTI_INSTANCE(P, M, A)
#define FASTRMS_INSTANCES(P) FASTRMS_BOTH(P, false, false) FASTRMS_BOTH(P, true, false)             \
    FASTRMS_BOTH(P, false, true) FASTRMS_BOTH(P, true, true)
FASTRMS_INSTANCES(float)
FASTRMS_INSTANCES(double)
FASTRMS_INSTANCES(__half)
FASTRMS_INSTANCES(__nv_bfloat16)
// The 8-bit kernel: a warp per block on the GPU, one thread per block in the host emulation.
#ifdef __CUDACC__
#define FASTRMS_LANES 32
#else
#define FASTRMS_LANES 1
#endif
#define FASTRMS_INSTANCE8(P, M, A)                                                         \
    template __global__ void fastrms::rmsprop8_kernel<P, M, A, FASTRMS_LANES>(             \
        P*, const P*, unsigned char*, float*, unsigned char*, float*, unsigned char*,      \
        float*, float*, long long, unsigned long long, fastrms::RuleArgs<float>,           \
        const float*);
#define FASTRMS_INSTANCES8(P) FASTRMS_INSTANCE8(P, false, false) FASTRMS_INSTANCE8(P, true, false) \
    FASTRMS_INSTANCE8(P, false, true) FASTRMS_INSTANCE8(P, true, true)
FASTRMS_INSTANCES8(float)
FASTRMS_INSTANCES8(__half)
FASTRMS_INSTANCES8(__nv_bfloat16)
#undef FASTRMS_INSTANCES8
#undef FASTRMS_INSTANCE8
#undef FASTRMS_INSTANCES
#undef FASTRMS_BOTH
#undef FASTRMS_MULTI_INSTANCE
#undef FASTRMS_INSTANCE
#endif
