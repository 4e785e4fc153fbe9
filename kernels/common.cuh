/* common.cuh — device helpers shared by the device-backend kernels: dtype
 * load/store as fp32, the dtype dispatch macro, 16-byte packs and block-wide
 * reductions. C++ only (included by the kernels/ .cu files, never by host C). */
#ifndef GPT2_KERNELS_COMMON_CUH
#define GPT2_KERNELS_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels.h"

/* ---- fp32 <-> storage type ---- */
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x)
{
    return __float2bfloat16_rn(x);
}

/* Runs `__VA_ARGS__` with `scalar_t` bound to the storage type of `dtype`;
 * an unknown dtype yields cudaErrorInvalidValue from the enclosing launcher. */
#define DISPATCH_DTYPE(dtype, ...)                                                   \
    do {                                                                             \
        switch (dtype) {                                                             \
        case DTYPE_F32: { typedef float scalar_t; __VA_ARGS__; } break;              \
        case DTYPE_F16: { typedef __half scalar_t; __VA_ARGS__; } break;             \
        case DTYPE_BF16: { typedef __nv_bfloat16 scalar_t; __VA_ARGS__; } break;     \
        default: return cudaErrorInvalidValue;                                       \
        }                                                                            \
    } while (0)

/* 16 bytes of T, for vectorized loads/stores: VEC = 4 floats or 8 halves. */
template <typename T> struct alignas(16) Pack16 {
    static constexpr int N = 16 / sizeof(T);
    T v[N];
};

/* 16-byte read-only load (weights: read once per step, never written) */
__device__ __forceinline__ uint4 ldg16(const void *p) { return __ldg(reinterpret_cast<const uint4 *>(p)); }

/* two packed fp16 / bf16 values as fp32 */
__device__ __forceinline__ float2 to_f32x2(__half2 x) { return __half22float2(x); }
__device__ __forceinline__ float2 to_f32x2(__nv_bfloat162 x) { return __bfloat1622float2(x); }
template <typename T> struct Pair;   /* T's two-value type */
template <> struct Pair<__half> { typedef __half2 type; };
template <> struct Pair<__nv_bfloat16> { typedef __nv_bfloat162 type; };

/* the 8 fp16 / bf16 values of a 16-byte pack as fp32 (the second argument picks the type) */
template <typename T> __device__ __forceinline__ void unpack8(const uint4 &u, float f[8], T)
{
    const typename Pair<T>::type *h = reinterpret_cast<const typename Pair<T>::type *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 p = to_f32x2(h[i]);
        f[2 * i] = p.x;
        f[2 * i + 1] = p.y;
    }
}

/* the activation of an ACT_CODE_* (kernels.h) on one fp32 value */
__device__ __forceinline__ float act_apply(float v, int act)
{
    switch (act) {
    case ACT_CODE_GELU_TANH: {
        const float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
        return 0.5f * v * (1.0f + tanhf(u));
    }
    case ACT_CODE_GELU_ERF: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case ACT_CODE_RELU: return v > 0.0f ? v : 0.0f;
    default: return v;
    }
}

/* One element of the token + position embedding, summed in fp32 and rounded to T
 * (embed.cu; the first decode layer builds its x the same way). */
template <typename T> __device__ __forceinline__ T embed_sum(T wte, T wpe)
{
    return from_f32<T>(to_f32(wte) + to_f32(wpe));
}

/* The id fed to the next step for a sampled token: a masked row's -1 becomes 0, an
 * id the embedding can read (that row's step is discarded by the host anyway). */
__device__ __forceinline__ int32_t fed_id(int32_t token) { return token > 0 ? token : 0; }

/* 1 when every pointer is 16-byte aligned (vectorized paths). */
static inline bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* ---- reductions (any blockDim.x that is a multiple of 32, <= 1024) ----
 * Each block_* helper uses `scratch` (>= 32 entries of shared memory) and
 * returns the result to every thread; it synchronizes the block twice, so all
 * threads must call it. */
__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
template <typename T> __device__ __forceinline__ T warp_sum(T v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename T, typename Op>
__device__ __forceinline__ T block_reduce(T v, T *scratch, T identity, Op op)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();                 /* scratch may still be read by a previous call */
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : identity;
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

struct OpMax { __device__ float operator()(float a, float b) const { return fmaxf(a, b); } };
struct OpSumD { __device__ double operator()(double a, double b) const { return a + b; } };
struct OpSumI { __device__ int operator()(int a, int b) const { return a + b; } };

/* (value, id) pairs ordered by value descending, then id ascending. */
struct ValId {
    float v;
    int id;
};
__device__ __forceinline__ bool valid_before(float av, int ai, float bv, int bi)
{
    return av > bv || (av == bv && ai < bi);
}
__device__ __forceinline__ ValId block_argmax(ValId x, ValId *scratch)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, x.v, o);
        int oi = __shfl_xor_sync(0xffffffffu, x.id, o);
        if (valid_before(ov, oi, x.v, x.id)) { x.v = ov; x.id = oi; }
    }
    __syncthreads();
    if (lane == 0) scratch[warp] = x;
    __syncthreads();
    if (lane < nwarps) x = scratch[lane];
    else { x.v = -INFINITY; x.id = 0x7fffffff; }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, x.v, o);
        int oi = __shfl_xor_sync(0xffffffffu, x.id, o);
        if (valid_before(ov, oi, x.v, x.id)) { x.v = ov; x.id = oi; }
    }
    return x;
}

static inline unsigned int ceil_div(size_t a, size_t b) { return (unsigned int)((a + b - 1) / b); }

#endif /* GPT2_KERNELS_COMMON_CUH */
