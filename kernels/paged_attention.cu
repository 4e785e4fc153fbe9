/* paged_attention.cu — vLLM-style attention over the paged KV cache, and
 * merge_attn_states.
 *
 * KV cache per layer, K and V alike: (num_blocks, H, block_size, D); a block
 * table row maps a sequence's logical block i to a physical block.
 * q and out are (T, H*D); q rows have stride q_stride elements (q lives in qkv).
 *
 * Kernels (templated on element type T and head size D):
 *   decode   one query token per sequence. Grid (H, num_decodes, partitions),
 *            128 threads. v1: one partition = the whole context, written straight
 *            to out. v2 (flash-decoding): partitions of 512 tokens (fewer when
 *            the grid would not fill the chip) write a
 *            normalised partial output + (max, sum) of their logits, and the
 *            last partition of a (head, sequence) to finish merges them through
 *            their log-sum-exp (a ticket per (sequence, head); no second kernel),
 *            from shared memory filled in one round trip. A v2 block reads its
 *            partition's block-table entries together with seq_lens.
 *            Every loop is bounded by the device seq_lens, so a graph captured
 *            with a grid sized from max_model_len replays correctly.
 *   prefill  causal attention for query chunks that attend to cached context:
 *            grid (query tiles of 16, H, prefill sequences); the block stages
 *            32-token K/V tiles in shared memory and 4 warps x 4 queries use them.
 *   merge_attn_states  vLLM semantics: out = a * w_a + b * w_b from two partial
 *            attentions and their natural-log LSEs (H, T).
 * Softmax is online, in fp32, in the log2 domain (q is pre-scaled by scale*log2 e).
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "kernels.h"
#include "launch.cuh"

namespace {

constexpr int kThreads = 128;            /* every kernel here: 4 warps */
constexpr int kWarps = kThreads / 32;
constexpr int kPartition = 512;          /* v2 partition size (tokens), at most */
constexpr int kMinPartition = 128;       /* ... and at least (small grids) */
constexpr int kV1MaxLen = 8192;          /* vLLM: v1 only up to this context */
/* Tuning knobs (build-time; benchmarks/bench_flash.py --variant rebuilds with others):
 * PAGED_DECODE_PREFETCH: which decode kernels load the next tokens' K/V before using
 * the current ones (twice the registers: fewer resident blocks): 0 none, 1 v1 and
 * v2, 2 v2 only; PAGED_DECODE_WAVES: v2 halves its
 * partitions while the grid has fewer than this many blocks per SM. */
#ifndef PAGED_DECODE_PREFETCH
#define PAGED_DECODE_PREFETCH 0   /* H200, bench_flash: 2 was 5-15% slower at B=8, 0-4% at B=1 */
#endif
#ifndef PAGED_DECODE_WAVES
#define PAGED_DECODE_WAVES 4
#endif
/* PAGED_DECODE_TOKENS: 16-byte K (and V) loads a decode thread keeps in flight per
 * iteration (tokens of its group times chunks of a row it holds); H200, bench_flash: 8
 * (121 registers) was 0.72-0.99x of 4 (64 registers) */
#ifndef PAGED_DECODE_TOKENS
#define PAGED_DECODE_TOKENS 4
#endif
/* PAGED_DECODE_STAGE_BT: v2 blocks load their partition's block-table entries into
 * shared memory together with seq_lens (1), instead of after it (0): one dependent
 * round trip fewer before the first K/V load. PAGED_DECODE_MERGE: the last partition
 * reads every partial (outputs, maxima, sums) into shared memory in one round trip
 * and merges there (1), or takes three passes over global memory (0). */
#ifndef PAGED_DECODE_STAGE_BT
#define PAGED_DECODE_STAGE_BT 1
#endif
#ifndef PAGED_DECODE_MERGE
#define PAGED_DECODE_MERGE 1
#endif
/* the one-round-trip merge stages max_parts x (D + 2) floats; above this it falls back */
constexpr size_t kMergeSmemMax = 8 * 1024;
constexpr float kLog2e = 1.4426950408889634f;

/* ---- element conversions ---- */
__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void from_f(float *p, float v) { *p = v; }
__device__ __forceinline__ void from_f(__half *p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void from_f(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

/* 16 bytes -> 16/sizeof(T) floats */
__device__ __forceinline__ void unpack(const uint4 &u, float *f, const float *)
{
    f[0] = __uint_as_float(u.x); f[1] = __uint_as_float(u.y);
    f[2] = __uint_as_float(u.z); f[3] = __uint_as_float(u.w);
}
__device__ __forceinline__ void unpack(const uint4 &u, float *f, const __half *)
{
    const __half2 *h = reinterpret_cast<const __half2 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __half22float2(h[i]);
        f[2 * i] = t.x; f[2 * i + 1] = t.y;
    }
}
__device__ __forceinline__ void unpack(const uint4 &u, float *f, const __nv_bfloat16 *)
{
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __bfloat1622float2(h[i]);
        f[2 * i] = t.x; f[2 * i + 1] = t.y;
    }
}
template <typename T>
__device__ __forceinline__ uint4 load16(const T *p)
{
    return __ldg(reinterpret_cast<const uint4 *>(p));
}

__device__ __forceinline__ float warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Decode thread geometry: a row of D elements is C chunks of 16 bytes; G lanes
 * (a power of two dividing C) share one token, each holding NV chunks, so one
 * load instruction of a group reads G*16 contiguous bytes. U tokens per group
 * per iteration keep 2*U*NV 16-byte loads (K and V) in flight per thread. */
template <typename T, int D>
struct DecodeShape {
    static constexpr int VEC = 16 / (int)sizeof(T);
    static constexpr int C = D / VEC;
    static constexpr int G = C % 32 == 0 ? 32 : C % 16 == 0 ? 16 : C % 8 == 0 ? 8
                           : C % 4 == 0 ? 4 : C % 2 == 0 ? 2 : 1;
    static constexpr int NV = C / G;
    static constexpr int U = NV >= PAGED_DECODE_TOKENS ? 1 : PAGED_DECODE_TOKENS / NV;
    static constexpr int E = NV * VEC;          /* floats of a row per thread */
    static constexpr int NGROUPS = kThreads / G;
    static_assert(D % VEC == 0, "head size must be a multiple of 16 bytes");
};

/* v2's merge, run by the last partition of a (head, sequence) to finish: every
 * block publishes its partial (out, max, sum), then takes a ticket; the block that
 * draws the last one (of the partitions holding keys) merges all of them by their
 * log-sum-exp and resets the ticket to 0 for the next launch (graph replays too).
 * vLLM runs this as a second kernel; here it saves that launch. Dynamic shared
 * memory: max_parts floats (the partition weights). */
template <typename T, int D>
__device__ __forceinline__ void decode_reduce_last(T *__restrict__ out,
                                                   const float *__restrict__ part_out,
                                                   const float *__restrict__ part_max,
                                                   const float *__restrict__ part_sum,
                                                   int *__restrict__ tickets, int64_t tok_q,
                                                   int H, int h, int s, int n, int max_parts)
{
    extern __shared__ float sw[];
    __shared__ float red[kWarps];
    const int tid = threadIdx.x;
    if (!last_block_of(tickets + (int64_t)s * H + h, n)) return;
    const int64_t base = ((int64_t)s * H + h) * max_parts;
    float mx = -INFINITY;
    for (int i = tid; i < n; i += kThreads) mx = fmaxf(mx, __ldcg(part_max + base + i));
    mx = warp_max(mx);
    if ((tid & 31) == 0) red[tid >> 5] = mx;
    __syncthreads();
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; w++) M = fmaxf(M, red[w]);
    __syncthreads();
    float sum = 0.f;
    for (int i = tid; i < n; i += kThreads) {
        const float pm = __ldcg(part_max + base + i);
        const float w = pm == -INFINITY ? 0.f : __ldcg(part_sum + base + i) * exp2f(pm - M);
        sw[i] = w;
        sum += w;
    }
    sum = warp_sum(sum);
    if ((tid & 31) == 0) red[tid >> 5] = sum;
    __syncthreads();
    float Ls = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; w++) Ls += red[w];
    const float inv = Ls > 0.f ? 1.f / Ls : 0.f;
    T *orow = out + tok_q * ((int64_t)H * D) + (int64_t)h * D;
    for (int d = tid; d < D; d += kThreads) {
        float v = 0.f;
        for (int i = 0; i < n; i++) v = fmaf(sw[i], __ldcg(part_out + (base + i) * D + d), v);
        from_f(orow + d, v * inv);
    }
}

/* decode_reduce_last in one round trip: the last block copies the n partial outputs
 * (n x D), maxima and sums into shared memory together, then each thread merges its
 * output dimensions from there (every thread recomputes the n weights: n is small).
 * Dynamic shared memory: max_parts x (D + 2) floats. */
template <typename T, int D>
__device__ __forceinline__ void decode_reduce_last_staged(T *__restrict__ out,
                                                          const float *__restrict__ part_out,
                                                          const float *__restrict__ part_max,
                                                          const float *__restrict__ part_sum,
                                                          int *__restrict__ tickets, int64_t tok_q,
                                                          int H, int h, int s, int n,
                                                          int max_parts)
{
    extern __shared__ float sw[];
    const int tid = threadIdx.x;
    if (!last_block_of(tickets + (int64_t)s * H + h, n)) return;
    const int64_t base = ((int64_t)s * H + h) * max_parts;
    float *so = sw, *sm = sw + (size_t)n * D, *sl = sm + n;
    static_assert(D % 4 == 0, "float4 copies");
    const float4 *src = reinterpret_cast<const float4 *>(part_out + base * D);
    float4 *dst = reinterpret_cast<float4 *>(so);
#pragma unroll 4
    for (int i = tid; i < n * (D / 4); i += kThreads) dst[i] = __ldcg(src + i);
    for (int i = tid; i < n; i += kThreads) {
        sm[i] = __ldcg(part_max + base + i);
        sl[i] = __ldcg(part_sum + base + i);
    }
    __syncthreads();
    float M = -INFINITY;
    for (int i = 0; i < n; i++) M = fmaxf(M, sm[i]);
    T *orow = out + tok_q * ((int64_t)H * D) + (int64_t)h * D;
    for (int d = tid; d < D; d += kThreads) {
        float v = 0.f, Ls = 0.f;
        for (int i = 0; i < n; i++) {
            const float w = sm[i] == -INFINITY ? 0.f : sl[i] * exp2f(sm[i] - M);
            Ls += w;
            v = fmaf(w, so[i * D + d], v);
        }
        from_f(orow + d, Ls > 0.f ? v / Ls : 0.f);
    }
}

/* One (head, sequence, partition) per block. partition_size == 0: v1. PREFETCH: the
 * K/V of the next group of tokens are loaded while the current group's are used (two
 * register buffers, so each thread keeps loads in flight through the math, at the
 * cost of registers = resident blocks per SM). The launch bound's 8 blocks per SM = at
 * most 64 registers: what the default geometry (4 tokens in flight, no prefetch) fits
 * in at power-of-two head sizes; the block-table staging would otherwise take D=128 to
 * 72 (7 blocks per SM). */
template <typename T, int D, bool PREFETCH>
__global__ void __launch_bounds__(kThreads, !PREFETCH && PAGED_DECODE_TOKENS <= 4 &&
                                                    (D & (D - 1)) == 0 ? 8 : 1)
paged_attention_decode_kernel(T *__restrict__ out, float *__restrict__ part_out,
                              float *__restrict__ part_max, float *__restrict__ part_sum,
                              int *__restrict__ tickets,
                              const T *__restrict__ q, int q_stride,
                              const T *__restrict__ k_cache, const T *__restrict__ v_cache,
                              const int32_t *__restrict__ block_tables, int bt_stride,
                              const int32_t *__restrict__ seq_lens,
                              const int32_t *__restrict__ query_start_loc, int H, int bs_log2,
                              float scale_log2, int partition_size, int max_parts,
                              int merge_staged)
{
    using S = DecodeShape<T, D>;
    constexpr int STEP = S::NGROUPS * S::U;      /* tokens per iteration of the block */
    __shared__ float sm_m[kWarps], sm_l[kWarps];
    __shared__ float sm_acc[kWarps][D];
    pdl_launch_dependents();
    pdl_wait();

    const int h = blockIdx.x, s = blockIdx.y, p = blockIdx.z;
    const int tid = threadIdx.x, g = tid / S::G, r = tid % S::G;
    const int lane = tid & 31, warp = tid >> 5;
    const int bs_mask = (1 << bs_log2) - 1;
    const int32_t *bt = block_tables + (int64_t)s * bt_stride;
    /* v2 with PAGED_DECODE_STAGE_BT: the partition's entries [b0, b0 + nbt) of the
     * block table, read before the context length is known (bounded by the row's
     * width, bt_stride; entries past the sequence's end are loaded, never used). */
    __shared__ int32_t s_bt[PAGED_DECODE_STAGE_BT ? kPartition : 1];
    const bool staged = PAGED_DECODE_STAGE_BT && partition_size > 0 &&
                        partition_size <= kPartition;
    const int b0 = staged ? (p * partition_size) >> bs_log2 : 0;
    if (staged) {
        const int nbt = max(1, partition_size >> bs_log2);
        for (int i = tid; i < nbt; i += kThreads)
            s_bt[i] = b0 + i < bt_stride ? __ldg(bt + b0 + i) : 0;
    }
    const int L = seq_lens[s];
    int start = 0, end = L;
    if (partition_size > 0) {
        start = p * partition_size;
        if (start >= L) return;           /* graph replay with a shorter context */
        end = min(L, start + partition_size);
    }
    const int64_t tok_q = query_start_loc[s];
    if (staged) __syncthreads();

    /* K/V chunks of this thread for the U tokens of group g at `base` */
    auto load = [&](int base, uint4 (&kr)[S::U][S::NV], uint4 (&vr)[S::U][S::NV]) {
#pragma unroll
        for (int u = 0; u < S::U; u++) {
            const int tok = base + g + u * S::NGROUPS;
            if (tok < end) {
                const int64_t phys = staged ? s_bt[(tok >> bs_log2) - b0] : bt[tok >> bs_log2];
                const int64_t row = ((phys * H + h) << bs_log2) + (tok & bs_mask);
                const T *kp = k_cache + row * D, *vp = v_cache + row * D;
#pragma unroll
                for (int j = 0; j < S::NV; j++) {
                    kr[u][j] = load16(kp + (r + j * S::G) * S::VEC);
                    vr[u][j] = load16(vp + (r + j * S::G) * S::VEC);
                }
            } else {
#pragma unroll
                for (int j = 0; j < S::NV; j++) kr[u][j] = vr[u][j] = make_uint4(0, 0, 0, 0);
            }
        }
    };
    uint4 kr[S::U][S::NV], vr[S::U][S::NV];
    if constexpr (PREFETCH) load(start, kr, vr);   /* in flight while q is read */

    float qv[S::E];
    const T *qrow = q + tok_q * q_stride + (int64_t)h * D;
#pragma unroll
    for (int j = 0; j < S::NV; j++)
#pragma unroll
        for (int e = 0; e < S::VEC; e++)
            qv[j * S::VEC + e] = to_f(qrow[(r + j * S::G) * S::VEC + e]) * scale_log2;

    float m = -INFINITY, l = 0.f, acc[S::E];
#pragma unroll
    for (int e = 0; e < S::E; e++) acc[e] = 0.f;

    for (int base = start; base < end; base += STEP) {
        uint4 kn[S::U][S::NV], vn[S::U][S::NV];
        if constexpr (PREFETCH) load(base + STEP, kn, vn);   /* past `end`: zeros, no read */
        else load(base, kr, vr);
        float sc[S::U];
        float mx = m;
#pragma unroll
        for (int u = 0; u < S::U; u++) {
            float dot = 0.f;
#pragma unroll
            for (int j = 0; j < S::NV; j++) {
                float kf[S::VEC];
                unpack(kr[u][j], kf, (const T *)nullptr);
#pragma unroll
                for (int e = 0; e < S::VEC; e++) dot = fmaf(qv[j * S::VEC + e], kf[e], dot);
            }
#pragma unroll
            for (int o = S::G / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
            sc[u] = base + g + u * S::NGROUPS < end ? dot : -INFINITY;
            mx = fmaxf(mx, sc[u]);
        }
        if (mx != -INFINITY) {           /* else: the group's tokens all past the end */
            const float alpha = exp2f(m - mx);
            l *= alpha;
#pragma unroll
            for (int e = 0; e < S::E; e++) acc[e] *= alpha;
#pragma unroll
            for (int u = 0; u < S::U; u++) {
                const float pu = exp2f(sc[u] - mx);
                l += pu;
#pragma unroll
                for (int j = 0; j < S::NV; j++) {
                    float vf[S::VEC];
                    unpack(vr[u][j], vf, (const T *)nullptr);
#pragma unroll
                    for (int e = 0; e < S::VEC; e++)
                        acc[j * S::VEC + e] = fmaf(pu, vf[e], acc[j * S::VEC + e]);
                }
            }
            m = mx;
        }
        if constexpr (PREFETCH) {
#pragma unroll
            for (int u = 0; u < S::U; u++)
#pragma unroll
                for (int j = 0; j < S::NV; j++) kr[u][j] = kn[u][j], vr[u][j] = vn[u][j];
        }
    }

    /* merge the groups of a warp (lanes with equal r), then the warps */
#pragma unroll
    for (int o = S::G; o < 32; o <<= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        const float l2 = __shfl_xor_sync(0xffffffffu, l, o);
        const float mx = fmaxf(m, m2);
        const float a1 = m == -INFINITY ? 0.f : exp2f(m - mx);
        const float a2 = m2 == -INFINITY ? 0.f : exp2f(m2 - mx);
        l = l * a1 + l2 * a2;
#pragma unroll
        for (int e = 0; e < S::E; e++) {
            const float o2 = __shfl_xor_sync(0xffffffffu, acc[e], o);
            acc[e] = acc[e] * a1 + o2 * a2;
        }
        m = mx;
    }
    if (lane < S::G) {
#pragma unroll
        for (int j = 0; j < S::NV; j++)
#pragma unroll
            for (int e = 0; e < S::VEC; e++)
                sm_acc[warp][(r + j * S::G) * S::VEC + e] = acc[j * S::VEC + e];
        if (lane == 0) { sm_m[warp] = m; sm_l[warp] = l; }
    }
    __syncthreads();
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; w++) M = fmaxf(M, sm_m[w]);
    float wgt[kWarps], Ls = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; w++) {
        wgt[w] = sm_m[w] == -INFINITY ? 0.f : exp2f(sm_m[w] - M);
        Ls += sm_l[w] * wgt[w];
    }
    const float inv = Ls > 0.f ? 1.f / Ls : 0.f;
    if (partition_size == 0) {
        T *orow = out + tok_q * ((int64_t)H * D) + (int64_t)h * D;
        for (int d = tid; d < D; d += kThreads) {
            float v = 0.f;
#pragma unroll
            for (int w = 0; w < kWarps; w++) v += sm_acc[w][d] * wgt[w];
            from_f(orow + d, v * inv);
        }
    } else {
        const int64_t idx = ((int64_t)s * H + h) * max_parts + p;
        for (int d = tid; d < D; d += kThreads) {
            float v = 0.f;
#pragma unroll
            for (int w = 0; w < kWarps; w++) v += sm_acc[w][d] * wgt[w];
            part_out[idx * D + d] = v * inv;
        }
        if (tid == 0) { part_max[idx] = M; part_sum[idx] = Ls; }
        const int n = min(max_parts, (L + partition_size - 1) / partition_size);
        if (merge_staged)
            decode_reduce_last_staged<T, D>(out, part_out, part_max, part_sum, tickets, tok_q, H,
                                            h, s, n, max_parts);
        else
            decode_reduce_last<T, D>(out, part_out, part_max, part_sum, tickets, tok_q, H, h, s,
                                     n, max_parts);
    }
}

/* Prefill / chunked prefill. Block = (16-query tile, head, prefill sequence);
 * warp w owns queries w*4 .. w*4+3 of the tile, lane k owns key k of each
 * 32-token K/V tile staged (as fp32, rows padded to D+1 against bank conflicts)
 * in shared memory. Query i of sequence s sits at position seq_len - q_len + i. */
constexpr int kQPW = 4;                   /* queries per warp */
constexpr int kQT = kWarps * kQPW;        /* queries per block */
constexpr int kKT = 32;                   /* keys per tile (one per lane) */

template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
paged_attention_prefill_kernel(T *__restrict__ out, const T *__restrict__ q, int q_stride,
                               const T *__restrict__ k_cache, const T *__restrict__ v_cache,
                               const int32_t *__restrict__ block_tables, int bt_stride,
                               const int32_t *__restrict__ seq_lens,
                               const int32_t *__restrict__ query_start_loc, int H, int bs_log2,
                               float scale_log2, int seq_begin)
{
    constexpr int VEC = 16 / (int)sizeof(T);
    constexpr int C = D / VEC;
    constexpr int NI = (D + 31) / 32;     /* output dims per lane */
    constexpr int DP = D + 1;
    __shared__ float sQ[kQT][D];
    __shared__ float sK[kKT][DP];
    __shared__ float sV[kKT][DP];
    __shared__ float sP[kWarps][kQPW][kKT];

    const int s = seq_begin + blockIdx.z, h = blockIdx.y;
    const int q0 = query_start_loc[s], q_len = query_start_loc[s + 1] - q0;
    const int qi0 = blockIdx.x * kQT;
    if (qi0 >= q_len) return;
    const int L = seq_lens[s];
    const int ctx0 = L - q_len;                     /* position of query 0 */
    const int n_q = min(kQT, q_len - qi0);
    const int kv_end = ctx0 + qi0 + n_q;            /* last query position + 1 */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int bs_mask = (1 << bs_log2) - 1;
    const int32_t *bt = block_tables + (int64_t)s * bt_stride;

    for (int i = tid; i < kQT * D; i += kThreads) {
        const int qi = i / D, d = i % D;
        sQ[qi][d] = qi < n_q ? to_f(q[(int64_t)(q0 + qi0 + qi) * q_stride + (int64_t)h * D + d]) *
                                   scale_log2
                             : 0.f;
    }
    float m[kQPW], l[kQPW], acc[kQPW][NI];
    int qpos[kQPW];
#pragma unroll
    for (int j = 0; j < kQPW; j++) {
        m[j] = -INFINITY; l[j] = 0.f;
        const int qi = warp * kQPW + j;
        qpos[j] = qi < n_q ? ctx0 + qi0 + qi : -1;  /* -1: no such query, masks every key */
#pragma unroll
        for (int i = 0; i < NI; i++) acc[j][i] = 0.f;
    }

    for (int kt = 0; kt < kv_end; kt += kKT) {
        __syncthreads();                            /* the last tile is consumed */
        for (int i = tid; i < kKT * C; i += kThreads) {
            const int t = i / C, c = i % C, pos = kt + t;
            float fk[VEC], fv[VEC];
            if (pos < kv_end) {
                const int64_t phys = bt[pos >> bs_log2];
                const int64_t row = ((phys * H + h) << bs_log2) + (pos & bs_mask);
                unpack(load16(k_cache + row * D + c * VEC), fk, (const T *)nullptr);
                unpack(load16(v_cache + row * D + c * VEC), fv, (const T *)nullptr);
            } else {
#pragma unroll
                for (int e = 0; e < VEC; e++) fk[e] = fv[e] = 0.f;
            }
#pragma unroll
            for (int e = 0; e < VEC; e++) { sK[t][c * VEC + e] = fk[e]; sV[t][c * VEC + e] = fv[e]; }
        }
        __syncthreads();

        float sc[kQPW];
#pragma unroll
        for (int j = 0; j < kQPW; j++) sc[j] = 0.f;
#pragma unroll 8
        for (int d = 0; d < D; d++) {
            const float kd = sK[lane][d];
#pragma unroll
            for (int j = 0; j < kQPW; j++) sc[j] = fmaf(sQ[warp * kQPW + j][d], kd, sc[j]);
        }
        const int kpos = kt + lane;
#pragma unroll
        for (int j = 0; j < kQPW; j++) {
            const float sj = kpos <= qpos[j] ? sc[j] : -INFINITY;
            const float mx = fmaxf(m[j], warp_max(sj));
            const float pj = mx == -INFINITY ? 0.f : exp2f(sj - mx);
            const float alpha = mx == -INFINITY ? 1.f : exp2f(m[j] - mx);
            l[j] = l[j] * alpha + warp_sum(pj);
#pragma unroll
            for (int i = 0; i < NI; i++) acc[j][i] *= alpha;
            m[j] = mx;
            sP[warp][j][lane] = pj;
        }
        __syncwarp();
#pragma unroll 4
        for (int k = 0; k < kKT; k++) {
#pragma unroll
            for (int i = 0; i < NI; i++) {
                const int d = lane + 32 * i;
                if (D % 32 == 0 || d < D) {
                    const float v = sV[k][d];
#pragma unroll
                    for (int j = 0; j < kQPW; j++) acc[j][i] = fmaf(sP[warp][j][k], v, acc[j][i]);
                }
            }
        }
        __syncwarp();
    }

#pragma unroll
    for (int j = 0; j < kQPW; j++) {
        const int qi = warp * kQPW + j;
        if (qi >= n_q) continue;
        const float inv = l[j] > 0.f ? 1.f / l[j] : 0.f;
        T *orow = out + (int64_t)(q0 + qi0 + qi) * ((int64_t)H * D) + (int64_t)h * D;
#pragma unroll
        for (int i = 0; i < NI; i++) {
            const int d = lane + 32 * i;
            if (D % 32 == 0 || d < D) from_f(orow + d, acc[j][i] * inv);
        }
    }
}

/* merge_attn_states: one thread per (t, h, d); lse layout (H, T), natural log. */
template <typename T>
__global__ void merge_attn_states_kernel(T *__restrict__ out, float *__restrict__ out_lse,
                                         const T *__restrict__ a, const float *__restrict__ lse_a,
                                         const T *__restrict__ b, const float *__restrict__ lse_b,
                                         int num_tokens, int H, int D)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t n = (int64_t)num_tokens * H * D;
    if (i >= n) return;
    const int d = (int)(i % D);
    const int64_t th = i / D;
    const int h = (int)(th % H), t = (int)(th / H);
    float pl = lse_a[(int64_t)h * num_tokens + t], sl = lse_b[(int64_t)h * num_tokens + t];
    pl = isinf(pl) ? -INFINITY : pl;     /* FlashAttention reports +inf for empty rows */
    sl = isinf(sl) ? -INFINITY : sl;
    const float mx = fmaxf(pl, sl);
    float ps, ss;
    if (mx == -INFINITY) { ps = 0.5f; ss = 0.5f; }   /* both empty: keep it finite */
    else {
        const float pe = expf(pl - mx), se = expf(sl - mx), tot = pe + se;
        ps = pe / tot; ss = se / tot;
        if (d == 0 && out_lse) out_lse[(int64_t)h * num_tokens + t] = logf(tot) + mx;
    }
    if (mx == -INFINITY && d == 0 && out_lse) out_lse[(int64_t)h * num_tokens + t] = -INFINITY;
    from_f(out + i, to_f(a[i]) * ps + to_f(b[i]) * ss);
}

int ilog2_exact(int x)
{
    if (x <= 0 || (x & (x - 1))) return -1;
    int k = 0;
    while ((1 << k) < x) k++;
    return k;
}

/* The partition weights, rounded up to whole 16-byte words: the compiler reads
 * sw[] with vector loads (compute-sanitizer flagged a 12-byte read past 3 floats). */
size_t reduce_smem_bytes(int max_parts) { return ((size_t)max_parts + 7) / 4 * 4 * sizeof(float); }

template <typename T, int D>
cudaError_t decode_launch(const PagedAttnArgs *a, int num_decodes, int max_seq_len, int version,
                          float *ws, size_t ws_floats, int *tickets, cudaStream_t stream, int pdl)
{
    const int bs_log2 = ilog2_exact(a->block_size);
    if (bs_log2 < 0) return cudaErrorInvalidValue;
    const float sl2 = a->scale * kLog2e;
    /* Partition size: vLLM's 512, halved (down to 128) while the grid would fill
     * fewer than PAGED_DECODE_WAVES blocks per SM and the workspace still fits, so a small
     * batch with a long context still spreads over the chip. */
    int P = kPartition;
    if (version != 1) {
        int dev = 0, sms = 132;
        if (cudaGetDevice(&dev) == cudaSuccess)
            cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
        const int64_t heads = (int64_t)num_decodes * a->num_heads;
        while (P > kMinPartition) {
            const int64_t parts = (max_seq_len + P - 1) / P;
            const int64_t half_parts = (max_seq_len + P / 2 - 1) / (P / 2);
            if (heads * parts >= PAGED_DECODE_WAVES * (int64_t)sms ||
                (size_t)(heads * half_parts) * (D + 2) > ws_floats)
                break;
            P /= 2;
        }
    }
    const int max_parts = (max_seq_len + P - 1) / P;
    if (version == 0)
        version = (max_seq_len <= kV1MaxLen &&
                   (max_parts <= 1 || (int64_t)num_decodes * a->num_heads > 512)) ? 1 : 2;
    const dim3 threads(kThreads);
    if (version == 1) {
        return launch_kernel(paged_attention_decode_kernel<T, D, PAGED_DECODE_PREFETCH == 1>,
                             dim3(a->num_heads, num_decodes, 1), threads, 0, stream, pdl, 1,
                             (T *)a->out, (float *)nullptr, (float *)nullptr, (float *)nullptr,
                             (int *)nullptr, (const T *)a->q, a->q_stride,
                             (const T *)a->k_cache, (const T *)a->v_cache, a->block_tables,
                             a->block_table_stride, a->seq_lens, a->query_start_loc,
                             a->num_heads, bs_log2, sl2, 0, 1, 0);
    }
    const size_t rows = (size_t)num_decodes * a->num_heads * (size_t)max_parts;
    const size_t staged_smem = (size_t)max_parts * (D + 2) * sizeof(float);
    const int merge_staged = PAGED_DECODE_MERGE && staged_smem <= kMergeSmemMax;
    const size_t smem = merge_staged ? staged_smem : reduce_smem_bytes(max_parts);
    if (max_parts < 1 || !ws || !tickets || rows * (D + 2) > ws_floats || smem > 48 * 1024)
        return cudaErrorInvalidValue;
    float *part_out = ws, *part_max = ws + rows * D, *part_sum = part_max + rows;
    return launch_kernel(paged_attention_decode_kernel<T, D, PAGED_DECODE_PREFETCH != 0>,
                         dim3(a->num_heads, num_decodes, max_parts), threads, smem, stream, pdl,
                         1, (T *)a->out, part_out, part_max, part_sum, tickets,
                         (const T *)a->q, a->q_stride, (const T *)a->k_cache,
                         (const T *)a->v_cache, a->block_tables, a->block_table_stride,
                         a->seq_lens, a->query_start_loc, a->num_heads, bs_log2, sl2, P,
                         max_parts, merge_staged);
}

template <typename T, int D>
cudaError_t prefill_launch(const PagedAttnArgs *a, int seq_begin, int num_prefills,
                           int max_query_len, cudaStream_t stream)
{
    const int bs_log2 = ilog2_exact(a->block_size);
    if (bs_log2 < 0) return cudaErrorInvalidValue;
    const dim3 grid((max_query_len + kQT - 1) / kQT, a->num_heads, num_prefills);
    paged_attention_prefill_kernel<T, D><<<grid, kThreads, 0, stream>>>(
        (T *)a->out, (const T *)a->q, a->q_stride, (const T *)a->k_cache,
        (const T *)a->v_cache, a->block_tables, a->block_table_stride, a->seq_lens,
        a->query_start_loc, a->num_heads, bs_log2, a->scale * kLog2e, seq_begin);
    return cudaGetLastError();
}

/* dtype x head size dispatch; F is a launch template called as F<T, D>(args...) */
#define PA_DISPATCH_D(T, D_, CALL)                         \
    switch (D_) {                                          \
    case 32: return CALL(T, 32);                           \
    case 64: return CALL(T, 64);                           \
    case 80: return CALL(T, 80);                           \
    case 96: return CALL(T, 96);                           \
    case 128: return CALL(T, 128);                         \
    default: return cudaErrorInvalidValue;                 \
    }
#define PA_DISPATCH(dtype, D_, CALL)                                    \
    switch (dtype) {                                                    \
    case 0: PA_DISPATCH_D(float, D_, CALL)                              \
    case 1: PA_DISPATCH_D(__half, D_, CALL)                             \
    case 2: PA_DISPATCH_D(__nv_bfloat16, D_, CALL)                      \
    default: return cudaErrorInvalidValue;                              \
    }

} /* namespace */

extern "C" int paged_attention_supports_head_size(int head_size)
{
    return head_size == 32 || head_size == 64 || head_size == 80 || head_size == 96 ||
           head_size == 128;
}

extern "C" size_t paged_attention_workspace_floats(int max_num_seqs, int num_heads,
                                                   int head_size, int max_model_len)
{
    /* room for the shortest partitions, so a small batch can always split finer */
    const size_t parts = (size_t)(max_model_len + kMinPartition - 1) / kMinPartition;
    return (size_t)max_num_seqs * num_heads * parts * (size_t)(head_size + 2);
}

extern "C" cudaError_t paged_attention_decode(const PagedAttnArgs *a, int num_decodes,
                                              int max_seq_len, int version, float *workspace,
                                              size_t workspace_floats, int *tickets,
                                              cudaStream_t stream, int pdl)
{
    if (num_decodes <= 0) return cudaSuccess;
    if (max_seq_len <= 0 || version < 0 || version > 2) return cudaErrorInvalidValue;
#define PA_DECODE(T, D) decode_launch<T, D>(a, num_decodes, max_seq_len, version, workspace, \
                                            workspace_floats, tickets, stream, pdl)
    PA_DISPATCH(a->dtype, a->head_size, PA_DECODE)
#undef PA_DECODE
}

extern "C" cudaError_t paged_attention_prefill(const PagedAttnArgs *a, int seq_begin,
                                               int num_prefills, int max_query_len,
                                               cudaStream_t stream)
{
    if (num_prefills <= 0 || max_query_len <= 0) return cudaSuccess;
#define PA_PREFILL(T, D) prefill_launch<T, D>(a, seq_begin, num_prefills, max_query_len, stream)
    PA_DISPATCH(a->dtype, a->head_size, PA_PREFILL)
#undef PA_PREFILL
}

extern "C" cudaError_t merge_attn_states(void *out, float *out_lse, const void *a,
                                         const float *lse_a, const void *b, const float *lse_b,
                                         int num_tokens, int num_heads, int head_size, int dtype,
                                         cudaStream_t stream)
{
    const int64_t n = (int64_t)num_tokens * num_heads * head_size;
    if (n <= 0) return cudaSuccess;
    const unsigned blocks = (unsigned)((n + 255) / 256);
    switch (dtype) {
    case 0:
        merge_attn_states_kernel<float><<<blocks, 256, 0, stream>>>(
            (float *)out, out_lse, (const float *)a, lse_a, (const float *)b, lse_b, num_tokens,
            num_heads, head_size);
        break;
    case 1:
        merge_attn_states_kernel<__half><<<blocks, 256, 0, stream>>>(
            (__half *)out, out_lse, (const __half *)a, lse_a, (const __half *)b, lse_b,
            num_tokens, num_heads, head_size);
        break;
    case 2:
        merge_attn_states_kernel<__nv_bfloat16><<<blocks, 256, 0, stream>>>(
            (__nv_bfloat16 *)out, out_lse, (const __nv_bfloat16 *)a, lse_a,
            (const __nv_bfloat16 *)b, lse_b, num_tokens, num_heads, head_size);
        break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}
