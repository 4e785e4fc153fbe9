/* gemv.cu — the matmuls of small decode batches (M <= 4 rows), fp16/bf16:
 *     out(M, N) = act(norm(in)(M, K) @ w + bias [+ out])
 * where norm is an optional layernorm of each input row (the model's ln_1 /
 * ln_2 / ln_f folded into the matmul that reads it) and w is (K, N) (Conv1D) or
 * (N, K) (lm_head = wte); the qkv projection can also write its K/V columns to
 * the paged cache (reshape_and_cache folded into the epilogue). At M = 1..4 a
 * matmul is one pass over the weights, and a decode step is ~50 of them: what
 * costs is latency, so each kernel
 *   1. loads (or L2-prefetches) its weights BEFORE pdl_wait(): they depend on
 *      no earlier kernel, so with programmatic dependent launch (launch.cuh) the
 *      weight stream overlaps the previous kernel;
 *   2. then stages its input rows in shared memory as fp32 (with a layernorm:
 *      whole rows, statistics in fp32 two-pass over shared memory, every warp
 *      summing a strided share, the value rounded to the storage type as the
 *      unfused layernorm would store it);
 *   3. reduces split-K partials inside a thread-block cluster through
 *      distributed shared memory (no global partials, atomics or second kernel):
 *      ranks 1.. store theirs into rank 0's shared memory, arrive on its mbarrier
 *      and exit (their SM slots free for the next kernel's blocks); rank 0 sums
 *      in rank order, so results do not depend on scheduling (clusters need
 *      sm_90: on older GPUs the host asks for no split, ks = 1).
 *
 * gemv_kn (w (K, N)): grid (N / 64, ks), cluster (1, ks, 1), 256 threads. Block
 * (x, y) owns columns [64x, 64x + 64) and rows [y * kps, (y + 1) * kps) of w.
 * Thread t owns 8 consecutive columns (t % 8) and every 32nd row of the slice
 * from t / 8: one uint4 of w per row (a warp reads 4 rows x 128 contiguous
 * bytes). The first GEMV_PF1 (M = 1) or GEMV_PF rows of each thread are held in
 * registers across the wait, the rest prefetched to L2. The K splits aim at
 * GEMV_BLOCKS_PER_SM (1) blocks per SM: fewer, longer blocks with more loads each
 * in flight beat two per SM at every gpt2 / gpt2-xl shape (bench_gemv.py).
 * Row-lanes are summed by shuffles, then across warps in shared memory, then
 * across the cluster by block rank 0.
 *
 * gemv_nk (w (N, K)): each warp computes whole dot products w[n] . x[m] for rows
 * n = warp, warp + total warps, ...; lanes stride K in 16-byte chunks, two rows
 * and U chunks of each at a time (U = GEMV_NK_UNROLL1 at M = 1, else
 * GEMV_NK_UNROLL); the first two rows of each warp are prefetched to L2 before
 * the wait. */
#include <cooperative_groups.h>

#include "common.cuh"
#include "launch.cuh"
#include "mbarrier.cuh"

namespace cg = cooperative_groups;

#define GEMV_THREADS 256
#define GEMV_WARPS (GEMV_THREADS / 32)
#define GEMV_COLS 64
#define GEMV_LANES (GEMV_THREADS / 8)   /* row-lanes of gemv_kn */
/* Tuning knobs: benchmarks/bench_gemv.py --variant "GEMV_PF1=12;GEMV_BLOCKS_PER_SM=2"
 * builds others beside the default and times them in the same run (docs/performance_notes.md,
 * tenth session, has the table that chose these). */
#ifndef GEMV_PF1
#define GEMV_PF1 16            /* rows per thread held in registers across the wait, M = 1 */
#endif
#ifndef GEMV_PF
#define GEMV_PF 12             /* the same, M = 2..4 */
#endif
#ifndef GEMV_UNROLL
#define GEMV_UNROLL 4          /* rows per thread loaded together after those */
#endif
#ifndef GEMV_BLOCKS_PER_SM
#define GEMV_BLOCKS_PER_SM 1   /* gemv_kn's K splits aim at this many blocks per SM in all */
#endif
#ifndef GEMV_NK_UNROLL1
#define GEMV_NK_UNROLL1 4      /* gemv_nk: 16-byte chunks per lane and row loaded together, M = 1 */
#endif
#ifndef GEMV_NK_UNROLL
#define GEMV_NK_UNROLL 2       /* the same, M = 2..4 (4 costs M = 4 half its speed: registers) */
#endif
#ifndef GEMV_NK_BLOCKS_PER_SM
#define GEMV_NK_BLOCKS_PER_SM 4
#endif

namespace {

__device__ __forceinline__ __attribute__((unused)) uint32_t shared_addr(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* out[m, n] = act(v + bias[n] (+ out[m, n])); the qkv K/V columns also go to the cache */
template <typename T>
__device__ __forceinline__ void gemv_store(const GemvArgs &a, int m, int n, float v)
{
    T *o = reinterpret_cast<T *>(a.out) + (size_t)m * a.N + n;
    if (a.bias) v += to_f32(reinterpret_cast<const T *>(a.bias)[n]);
    if (a.accumulate) v += to_f32(*o);
    const T r = from_f32<T>(act_apply(v, a.act));
    *o = r;
    if (a.k_cache) {
        const int C = a.kv_heads * a.head_size, j = n - C;
        const int32_t slot = j >= 0 ? a.slot_mapping[m] : -1;
        if (slot >= 0) {
            const int is_v = j >= C, jj = j - (is_v ? C : 0);
            const int h = jj / a.head_size, d = jj - h * a.head_size;
            const size_t blk = (size_t)(slot / a.block_size), off = (size_t)(slot % a.block_size);
            T *cache = reinterpret_cast<T *>(is_v ? a.v_cache : a.k_cache);
            cache[((blk * a.kv_heads + h) * a.block_size + off) * a.head_size + d] = r;
        }
    }
}

/* Stages the input as fp32 in xs and returns its layout through (xoff, xld):
 * value (m, kb + i) of the normalized input is xs[m * xld + xoff + i].
 * With a layernorm xs holds whole rows (M, K) (the statistics need them), else
 * only this block's slice (M, len). Ends with __syncthreads. */
template <typename T, int M>
__device__ void stage_input(const GemvArgs &a, float *xs, int kb, int len, int &xoff, int &xld)
{
    __shared__ float stats[2 * M];
    const T *in = reinterpret_cast<const T *>(a.in);
    const int t = threadIdx.x, warp = t >> 5, lane = t & 31;
    if (!a.ln_w) {
        xoff = 0;
        xld = len;
        for (int idx = t; idx < M * len; idx += GEMV_THREADS) {
            const int m = idx / len, k = kb + idx - m * len;
            xs[idx] = to_f32(in[(size_t)m * a.K + k]);
        }
        __syncthreads();
        return;
    }
    xoff = kb;
    xld = a.K;
    const int n = M * a.K;
    if ((a.K & 7) == 0 && ((uintptr_t)in & 15) == 0) {
        for (int c = t; c < n / 8; c += GEMV_THREADS) {
            float f[8];
            unpack8(ldg16(in + (size_t)c * 8), f, T());
            float4 *dst = reinterpret_cast<float4 *>(xs + (size_t)c * 8);
            dst[0] = make_float4(f[0], f[1], f[2], f[3]);
            dst[1] = make_float4(f[4], f[5], f[6], f[7]);
        }
    } else {
        for (int idx = t; idx < n; idx += GEMV_THREADS) xs[idx] = to_f32(in[idx]);
    }
    __syncthreads();
    {   /* two passes, each: every thread a strided partial per row, warps, then the block */
        __shared__ float red[GEMV_WARPS][M];
        float s[M];
#pragma unroll
        for (int m = 0; m < M; m++) {
            s[m] = 0.0f;
            for (int c = t; c < a.K; c += GEMV_THREADS) s[m] += xs[(size_t)m * a.K + c];
            s[m] = warp_sum(s[m]);
        }
        if (lane == 0)
#pragma unroll
            for (int m = 0; m < M; m++) red[warp][m] = s[m];
        __syncthreads();
        float mean[M];
#pragma unroll
        for (int m = 0; m < M; m++) {
            float tot = 0.0f;
#pragma unroll
            for (int w = 0; w < GEMV_WARPS; w++) tot += red[w][m];
            mean[m] = tot / (float)a.K;
            s[m] = 0.0f;
            for (int c = t; c < a.K; c += GEMV_THREADS) {
                const float d = xs[(size_t)m * a.K + c] - mean[m];
                s[m] += d * d;
            }
            s[m] = warp_sum(s[m]);
        }
        __syncthreads();                 /* every warp has read red's sums */
        if (lane == 0)
#pragma unroll
            for (int m = 0; m < M; m++) red[warp][m] = s[m];
        __syncthreads();
        if (t < M) {
            float tot = 0.0f;
#pragma unroll
            for (int w = 0; w < GEMV_WARPS; w++) tot += red[w][t];
            stats[2 * t] = mean[t];
            stats[2 * t + 1] = rsqrtf(tot / (float)a.K + a.eps);
        }
    }
    __syncthreads();
    const T *g = reinterpret_cast<const T *>(a.ln_w), *b = reinterpret_cast<const T *>(a.ln_b);
    for (int idx = t; idx < M * len; idx += GEMV_THREADS) {
        const int m = idx / len, k = kb + idx - m * len;
        float *p = xs + (size_t)m * a.K + k;
        const float v = (*p - stats[2 * m]) * stats[2 * m + 1] * to_f32(g[k]) + to_f32(b[k]);
        *p = to_f32(from_f32<T>(v));   /* what the unfused layernorm would have stored */
    }
    __syncthreads();
}

/* acc[m][0..7] += x[m][k] * w row (8 columns) */
template <typename T, int M>
__device__ __forceinline__ void fma_row(float (&acc)[M][8], const uint4 &wv, const float *xs,
                                        int k, int xld)
{
    float wf[8];
    unpack8(wv, wf, T());
#pragma unroll
    for (int m = 0; m < M; m++) {
        const float xv = xs[m * xld + k];
#pragma unroll
        for (int j = 0; j < 8; j++) acc[m][j] = fmaf(xv, wf[j], acc[m][j]);
    }
}

template <typename T, int M>
__global__ void __launch_bounds__(GEMV_THREADS)
gemv_kn_kernel(const GemvArgs a, int kps)
{
    extern __shared__ __align__(16) float xs[];
    __shared__ float red[GEMV_WARPS * M * GEMV_COLS];
    __shared__ float part[GEMV_MAX_SPLIT * M * GEMV_COLS];  /* rank 0: every rank's partial */
    __shared__ __align__(8) uint64_t part_bar;             /* rank 0: the other ranks' arrivals */
    constexpr int PF = M == 1 ? GEMV_PF1 : GEMV_PF;
    pdl_launch_dependents();
    const int t = threadIdx.x, group = t & 7, lane = t >> 3, warp = t >> 5;
    const int col0 = blockIdx.x * GEMV_COLS;
    const int kb = blockIdx.y * kps, ke = min(a.K, kb + kps), len = max(ke - kb, 0);
    const T *w = reinterpret_cast<const T *>(a.w);
    const T *wcol = w + (size_t)kb * a.N + col0 + group * 8;   /* row kb, my 8 columns */

    /* 1. weights: PF rows into registers, the rest of the slice toward L2 */
    uint4 wv[PF];
#pragma unroll
    for (int u = 0; u < PF; u++) {
        const int i = lane + u * GEMV_LANES;
        wv[u] = i < len ? ldg16(wcol + (size_t)i * a.N) : make_uint4(0u, 0u, 0u, 0u);
    }
    if (group == 0)
        for (int i = lane + PF * GEMV_LANES; i < len; i += GEMV_LANES)
            prefetch_l2(w + (size_t)(kb + i) * a.N + col0);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (gridDim.y > 1) {        /* rank 0's barrier is ready before any rank stores to it */
        if (t == 0) {
            mbar_init(shared_addr(&part_bar), gridDim.y - 1);
            mbar_fence_init();
        }
        cluster_arrive();
    }
#endif
    pdl_wait();

    /* 2. the input rows */
    int xoff, xld;
    stage_input<T, M>(a, xs, kb, len, xoff, xld);

    float acc[M][8];
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int j = 0; j < 8; j++) acc[m][j] = 0.0f;
#pragma unroll
    for (int u = 0; u < PF; u++) {
        const int i = lane + u * GEMV_LANES;
        if (i < len) fma_row<T, M>(acc, wv[u], xs, xoff + i, xld);
    }
    for (int i0 = lane + PF * GEMV_LANES; i0 < len; i0 += GEMV_LANES * GEMV_UNROLL) {
        uint4 v[GEMV_UNROLL];
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            const int i = i0 + u * GEMV_LANES;
            v[u] = i < len ? ldg16(wcol + (size_t)i * a.N) : make_uint4(0u, 0u, 0u, 0u);
        }
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            const int i = i0 + u * GEMV_LANES;
            if (i < len) fma_row<T, M>(acc, v[u], xs, xoff + i, xld);
        }
    }

    /* 3. reduce: the 4 row-lanes of a warp (bits 3, 4 of the lane id), the warps, the cluster */
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int j = 0; j < 8; j++) {
            float v = acc[m][j];
            v += __shfl_xor_sync(0xffffffffu, v, 8);
            v += __shfl_xor_sync(0xffffffffu, v, 16);
            acc[m][j] = v;
        }
    if ((t & 31) < 8) {
#pragma unroll
        for (int m = 0; m < M; m++)
#pragma unroll
            for (int j = 0; j < 8; j++) red[(warp * M + m) * GEMV_COLS + group * 8 + j] = acc[m][j];
    }
    __syncthreads();
    float s = 0.0f;
    const int m = t / GEMV_COLS, c = t % GEMV_COLS;    /* M * 64 <= 256 threads: one each */
    if (t < M * GEMV_COLS) {
#pragma unroll
        for (int wp = 0; wp < GEMV_WARPS; wp++) s += red[(wp * M + m) * GEMV_COLS + c];
    }
    if (gridDim.y == 1) {
        if (t < M * GEMV_COLS) gemv_store<T>(a, m, col0 + c, s);
        return;
    }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    /* ranks 1.. store into rank 0's part[rank] and leave (their SM slots free for the
     * next kernel); rank 0 waits for their arrivals, then sums in rank order */
    const uint32_t rank = cg::this_cluster().block_rank();
    cluster_wait();
    if (rank != 0) {
        if (t < M * GEMV_COLS)
            st_cluster_f32(cluster_map(shared_addr(&part[(rank * M) * GEMV_COLS + t]), 0), s);
        __syncthreads();
        if (t == 0) mbar_arrive_cluster(cluster_map(shared_addr(&part_bar), 0));
        return;
    }
    if (t < M * GEMV_COLS) {
        mbar_wait(shared_addr(&part_bar), 0, true);
        float tot = 0.0f;
        tot += s;
        for (unsigned r = 1; r < gridDim.y; r++) tot += part[(r * M) * GEMV_COLS + t];
        gemv_store<T>(a, m, col0 + c, tot);
    }
#else
    (void)part;
    (void)part_bar;
    __trap();                           /* no clusters before sm_90: launched with ks = 1 only */
#endif
}

template <typename T, int M>
__global__ void __launch_bounds__(GEMV_THREADS)
gemv_nk_kernel(const GemvArgs a)
{
    extern __shared__ __align__(16) float xs[];       /* (M, K) */
    constexpr int U = M == 1 ? GEMV_NK_UNROLL1 : GEMV_NK_UNROLL;
    pdl_launch_dependents();
    const T *w = reinterpret_cast<const T *>(a.w);
    const int lane = threadIdx.x & 31;
    const int gwarp = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    const int nwarps = gridDim.x * GEMV_WARPS, chunks = a.K / 8;
    const size_t row_bytes = (size_t)a.K * sizeof(T);
    /* my first two rows toward L2 (a 128-byte line per lane) */
    for (int r = 0; r < 2; r++) {
        const int n = gwarp + r * nwarps;
        if (n < a.N)
            for (size_t off = (size_t)lane * 128; off < row_bytes; off += 32 * 128)
                prefetch_l2(reinterpret_cast<const char *>(w + (size_t)n * a.K) + off);
    }
    pdl_wait();
    int xoff, xld;
    stage_input<T, M>(a, xs, 0, a.K, xoff, xld);
    for (int n = gwarp; n < a.N; n += 2 * nwarps) {
        const int n2 = n + nwarps;                       /* a second row in flight */
        const bool two = n2 < a.N;
        const uint4 *r1 = reinterpret_cast<const uint4 *>(w + (size_t)n * a.K);
        const uint4 *r2 = reinterpret_cast<const uint4 *>(w + (size_t)(two ? n2 : n) * a.K);
        float s1[M], s2[M];
#pragma unroll
        for (int m = 0; m < M; m++) s1[m] = s2[m] = 0.0f;
        for (int c0 = lane; c0 < chunks; c0 += 32 * U) {
            uint4 v1[U], v2[U];                  /* every load of the step in flight */
#pragma unroll
            for (int h = 0; h < U; h++) {
                const int c = c0 + 32 * h;
                v1[h] = c < chunks ? __ldg(r1 + c) : make_uint4(0u, 0u, 0u, 0u);
                v2[h] = c < chunks ? __ldg(r2 + c) : make_uint4(0u, 0u, 0u, 0u);
            }
#pragma unroll
            for (int h = 0; h < U; h++) {
                const int c = c0 + 32 * h;
                if (c >= chunks) break;
                float f1[8], f2[8];
                unpack8(v1[h], f1, T());
                unpack8(v2[h], f2, T());
#pragma unroll
                for (int m = 0; m < M; m++) {
                    const float4 xa = *reinterpret_cast<const float4 *>(&xs[m * xld + c * 8]);
                    const float4 xb = *reinterpret_cast<const float4 *>(&xs[m * xld + c * 8 + 4]);
                    const float x8[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
#pragma unroll
                    for (int j = 0; j < 8; j++) {
                        s1[m] = fmaf(x8[j], f1[j], s1[m]);
                        s2[m] = fmaf(x8[j], f2[j], s2[m]);
                    }
                }
            }
        }
#pragma unroll
        for (int m = 0; m < M; m++) {
            const float v1 = warp_sum(s1[m]), v2 = warp_sum(s2[m]);
            if (lane == 0) {
                gemv_store<T>(a, m, n, v1);
                if (two) gemv_store<T>(a, m, n2, v2);
            }
        }
    }
}

/* K splits of gemv_kn: about GEMV_BLOCKS_PER_SM blocks per SM in all, each row-lane with at
 * least one row, at most one cluster (GEMV_MAX_SPLIT; 1 without clusters, before
 * sm_90), and the staged slice
 * within GEMV_MAX_STAGE floats. 0: the shape does not fit. */
int kn_splits(const GemvArgs &a)
{
    const int tiles = a.N / GEMV_COLS, sms = a.num_sms > 0 ? a.num_sms : 132;
    const int max_split = a.clusters ? GEMV_MAX_SPLIT : 1;
    int ks = (GEMV_BLOCKS_PER_SM * sms + tiles - 1) / tiles;
    if (ks > a.K / GEMV_LANES) ks = a.K / GEMV_LANES;
    if (ks > max_split) ks = max_split;
    if (ks < 1) ks = 1;
    if (a.ln_w) return (size_t)a.M * a.K <= GEMV_MAX_STAGE ? ks : 0;
    while (ks < max_split && (size_t)a.M * ((a.K + ks - 1) / ks) > GEMV_MAX_STAGE) ks++;
    return (size_t)a.M * ((a.K + ks - 1) / ks) <= GEMV_MAX_STAGE ? ks : 0;
}

template <typename T, int M>
cudaError_t launch_m(const GemvArgs &a, int w_nk, cudaStream_t stream)
{
    if (w_nk) {
        const int sms = a.num_sms > 0 ? a.num_sms : 132;
        const int blocks = min(GEMV_NK_BLOCKS_PER_SM * sms, (a.N + GEMV_WARPS - 1) / GEMV_WARPS);
        return launch_kernel(gemv_nk_kernel<T, M>, dim3(blocks), dim3(GEMV_THREADS),
                             (size_t)M * a.K * sizeof(float), stream, a.pdl, 1, a);
    }
    const int ks = kn_splits(a), kps = (a.K + ks - 1) / ks;
    const size_t smem = (size_t)M * (a.ln_w ? a.K : kps) * sizeof(float);
    if (smem > 16 * 1024) {   /* up to 32 KB staged beside ~4 KB * M static: opt in past 48 KB */
        const cudaError_t e = cudaFuncSetAttribute(gemv_kn_kernel<T, M>,
                                                   cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                   (int)smem);
        if (e != cudaSuccess) return e;
    }
    return launch_kernel(gemv_kn_kernel<T, M>, dim3(a.N / GEMV_COLS, ks), dim3(GEMV_THREADS),
                         smem, stream, a.pdl, ks, a, kps);
}

template <typename T>
cudaError_t launch(const GemvArgs &a, int w_nk, cudaStream_t stream)
{
    switch (a.M) {
    case 1: return launch_m<T, 1>(a, w_nk, stream);
    case 2: return launch_m<T, 2>(a, w_nk, stream);
    case 3: return launch_m<T, 3>(a, w_nk, stream);
    case 4: return launch_m<T, 4>(a, w_nk, stream);
    default: return cudaErrorInvalidValue;
    }
}

}  // namespace

extern "C" int gemv_supported(const GemvArgs *a, int w_nk, int dtype)
{
    if (dtype != DTYPE_F16 && dtype != DTYPE_BF16) return 0;
    if (a->M < 1 || a->M > GEMV_MAX_M || a->K < 1 || a->N < 1 || !aligned16(a->w)) return 0;
    if (a->ln_w && (!a->ln_b || a->eps < 0.0f)) return 0;
    if (a->k_cache && (w_nk || !a->v_cache || !a->slot_mapping || a->kv_heads < 1 ||
                       a->head_size < 1 || a->block_size < 1 ||
                       a->N != 3 * a->kv_heads * a->head_size))
        return 0;
    if (w_nk) return a->K % 8 == 0 && !a->k_cache && (size_t)a->M * a->K <= GEMV_MAX_STAGE;
    return a->N % GEMV_COLS == 0 && kn_splits(*a) > 0;
}

extern "C" cudaError_t gemv_cuda(const GemvArgs *a, int w_nk, int dtype, cudaStream_t stream)
{
    if (!gemv_supported(a, w_nk, dtype)) return cudaErrorInvalidValue;
    if (dtype == DTYPE_F16) return launch<__half>(*a, w_nk, stream);
    return launch<__nv_bfloat16>(*a, w_nk, stream);
}

/* the preferred shared-memory carveout of the M = 1 (N, K) kernel (the lm_head of a batch-1
 * step), so that it can overlap kernels that ask for the same (decode_layer.cu) */
extern "C" cudaError_t gemv_nk_prefer_carveout(int dtype, int percent)
{
    if (dtype == DTYPE_F16)
        return cudaFuncSetAttribute(gemv_nk_kernel<__half, 1>,
                                    cudaFuncAttributePreferredSharedMemoryCarveout, percent);
    return cudaFuncSetAttribute(gemv_nk_kernel<__nv_bfloat16, 1>,
                                cudaFuncAttributePreferredSharedMemoryCarveout, percent);
}
