/* gemv.cu — the matmuls of small decode batches (M <= 4 rows), fp16/bf16:
 *     out(M, N) = act(norm(in)(M, K) @ w + bias [+ out])
 * where norm is an optional layernorm of each input row (the model's ln_1 /
 * ln_2 / ln_f folded into the matmul that reads it) and w is (K, N) (Conv1D) or
 * (N, K) (lm_head = wte). At M = 1..4 a matmul is one pass over the weights:
 * cuBLASLt spends ~5 us (plus a split-K reduction kernel) on a 1-5 MB matrix and
 * the separate layernorm ~3.5 us; these kernels stream w with 16-byte loads from
 * every SM and do the reduction and the epilogue themselves.
 *
 * Both kernels first stage the block's slice of the input rows in shared memory
 * as fp32. With a layernorm, warp m < M computes row m's statistics over the
 * whole row (two passes, fp32, like layernorm.cu) and the staged value is
 * rounded to the storage type, as the unfused layernorm's output would be.
 *
 * gemv_kn (w (K, N)): grid (N / 64, ksplit), 256 threads. Block (x, y) owns
 * columns [64x, 64x + 64) and rows [y * kps, (y + 1) * kps) of w. Thread t owns 8
 * consecutive columns (t % 8) and every 32nd row of the slice from t / 8: one
 * uint4 of w per row, a warp reads 4 rows x 128 contiguous bytes, GEMV_UNROLL
 * rows in flight per thread. Row-lanes are summed by shuffles, then across warps
 * in shared memory. With ksplit > 1 each block writes fp32 partials; the last
 * block of a column tile (an atomic ticket per tile, reset by that block, so
 * graph replays start from zero) sums them in split order, so the result does
 * not depend on block scheduling, and applies the epilogue.
 *
 * gemv_nk (w (N, K)): each warp computes whole dot products w[n] . x[m] for rows
 * n = warp, warp + total warps, ...; lanes stride K in 16-byte chunks. */
#include "common.cuh"

#define GEMV_THREADS 256
#define GEMV_WARPS (GEMV_THREADS / 32)
#define GEMV_COLS 64
#define GEMV_LANES (GEMV_THREADS / 8)   /* row-lanes of gemv_kn */
#define GEMV_UNROLL 4

namespace {

__device__ __forceinline__ float gemv_act(float v, int act)
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

__device__ __forceinline__ void unpack8(const uint4 &u, float f[8], __half)
{
    const __half2 *h = reinterpret_cast<const __half2 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 p = __half22float2(h[i]);
        f[2 * i] = p.x;
        f[2 * i + 1] = p.y;
    }
}

__device__ __forceinline__ void unpack8(const uint4 &u, float f[8], __nv_bfloat16)
{
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 p = __bfloat1622float2(h[i]);
        f[2 * i] = p.x;
        f[2 * i + 1] = p.y;
    }
}

/* out[m, n] = act(v + bias[n] (+ out[m, n])) */
template <typename T>
__device__ __forceinline__ void gemv_store(const GemvArgs &a, int m, int n, float v)
{
    T *o = reinterpret_cast<T *>(a.out) + (size_t)m * a.N + n;
    if (a.bias) v += to_f32(reinterpret_cast<const T *>(a.bias)[n]);
    if (a.accumulate) v += to_f32(*o);
    *o = from_f32<T>(gemv_act(v, a.act));
}

/* xs[m * len + i] = norm(in[m])[k0 + i] for i < len, as fp32; the layernorm (when
 * a.ln_w) uses row statistics over all K columns. Ends with __syncthreads. */
template <typename T, int M>
__device__ void stage_input(const GemvArgs &a, float *xs, int k0, int len)
{
    __shared__ float stats[2 * M];
    const T *in = reinterpret_cast<const T *>(a.in);
    const int t = threadIdx.x, warp = t >> 5, lane = t & 31;
    if (a.ln_w) {
        if (warp < M) {
            const T *x = in + (size_t)warp * a.K;
            float s = 0.0f;
            for (int c = lane; c < a.K; c += 32) s += to_f32(x[c]);
            const float mean = warp_sum(s) / (float)a.K;
            float q = 0.0f;
            for (int c = lane; c < a.K; c += 32) { const float d = to_f32(x[c]) - mean; q += d * d; }
            const float rstd = rsqrtf(warp_sum(q) / (float)a.K + a.eps);
            if (lane == 0) { stats[2 * warp] = mean; stats[2 * warp + 1] = rstd; }
        }
        __syncthreads();
    }
    const T *g = reinterpret_cast<const T *>(a.ln_w), *b = reinterpret_cast<const T *>(a.ln_b);
    for (int idx = t; idx < M * len; idx += GEMV_THREADS) {
        const int m = idx / len, k = k0 + idx % len;
        float v = to_f32(in[(size_t)m * a.K + k]);
        if (g) {
            v = (v - stats[2 * m]) * stats[2 * m + 1] * to_f32(g[k]) + to_f32(b[k]);
            v = to_f32(from_f32<T>(v));   /* what the unfused layernorm would have stored */
        }
        xs[idx] = v;
    }
    __syncthreads();
}

template <typename T, int M>
__global__ void __launch_bounds__(GEMV_THREADS)
gemv_kn_kernel(const GemvArgs a, int kps, float *partial, unsigned *tickets)
{
    extern __shared__ __align__(16) float xs[];       /* (M, kps) */
    __shared__ float red[GEMV_WARPS * M * GEMV_COLS];
    __shared__ int is_last;
    const int t = threadIdx.x, group = t & 7, lane = t >> 3, warp = t >> 5;
    const int col0 = blockIdx.x * GEMV_COLS, n0 = col0 + group * 8;
    const int kb = blockIdx.y * kps, ke = min(a.K, kb + kps), len = max(ke - kb, 0);
    stage_input<T, M>(a, xs, kb, len);

    const T *w = reinterpret_cast<const T *>(a.w);
    float acc[M][8];
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int j = 0; j < 8; j++) acc[m][j] = 0.0f;
    for (int i0 = lane; i0 < len; i0 += GEMV_LANES * GEMV_UNROLL) {
        uint4 wv[GEMV_UNROLL];
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            const int i = i0 + u * GEMV_LANES;
            if (i < len) wv[u] = __ldg(reinterpret_cast<const uint4 *>(w + (size_t)(kb + i) * a.N + n0));
            else wv[u] = make_uint4(0u, 0u, 0u, 0u);
        }
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            const int i = i0 + u * GEMV_LANES;
            if (i >= len) break;
            float wf[8];
            unpack8(wv[u], wf, T());
#pragma unroll
            for (int m = 0; m < M; m++) {
                const float xv = xs[m * len + i];
#pragma unroll
                for (int j = 0; j < 8; j++) acc[m][j] = fmaf(xv, wf[j], acc[m][j]);
            }
        }
    }
    /* the 4 row-lanes of a warp (lanes t>>3 differ in bits 3, 4 of the lane id) */
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

    const int nsplit = gridDim.y;
    for (int idx = t; idx < M * GEMV_COLS; idx += GEMV_THREADS) {
        const int m = idx / GEMV_COLS, c = idx % GEMV_COLS;
        float s = 0.0f;
#pragma unroll
        for (int wp = 0; wp < GEMV_WARPS; wp++) s += red[(wp * M + m) * GEMV_COLS + c];
        if (nsplit == 1) gemv_store<T>(a, m, col0 + c, s);
        else partial[((size_t)blockIdx.y * M + m) * a.N + col0 + c] = s;
    }
    if (nsplit == 1) return;

    __threadfence();                 /* this block's partials visible before its ticket */
    __syncthreads();
    if (t == 0) is_last = atomicAdd(&tickets[blockIdx.x], 1u) == (unsigned)(nsplit - 1);
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    for (int idx = t; idx < M * GEMV_COLS; idx += GEMV_THREADS) {
        const int m = idx / GEMV_COLS, c = idx % GEMV_COLS;
        float s = 0.0f;
        for (int sp = 0; sp < nsplit; sp++)
            s += __ldcg(&partial[((size_t)sp * M + m) * a.N + col0 + c]);
        gemv_store<T>(a, m, col0 + c, s);
    }
    if (t == 0) tickets[blockIdx.x] = 0u;
}

template <typename T, int M>
__global__ void __launch_bounds__(GEMV_THREADS)
gemv_nk_kernel(const GemvArgs a)
{
    extern __shared__ __align__(16) float xs[];       /* (M, K) */
    stage_input<T, M>(a, xs, 0, a.K);
    const T *w = reinterpret_cast<const T *>(a.w);
    const int lane = threadIdx.x & 31;
    const int gwarp = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    const int nwarps = gridDim.x * GEMV_WARPS, chunks = a.K / 8;
    for (int n = gwarp; n < a.N; n += 2 * nwarps) {
        const int n2 = n + nwarps;                       /* a second row in flight */
        const bool two = n2 < a.N;
        const uint4 *r1 = reinterpret_cast<const uint4 *>(w + (size_t)n * a.K);
        const uint4 *r2 = reinterpret_cast<const uint4 *>(w + (size_t)(two ? n2 : n) * a.K);
        float s1[M], s2[M];
#pragma unroll
        for (int m = 0; m < M; m++) s1[m] = s2[m] = 0.0f;
        for (int c0 = lane; c0 < chunks; c0 += 32 * 2) {
            uint4 v[4];
            const int c1 = c0 + 32;
            v[0] = __ldg(r1 + c0);
            v[1] = __ldg(r2 + c0);
            if (c1 < chunks) { v[2] = __ldg(r1 + c1); v[3] = __ldg(r2 + c1); }
            else v[2] = v[3] = make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int c = h ? c1 : c0;
                if (c >= chunks) break;
                float f1[8], f2[8];
                unpack8(v[2 * h], f1, T());
                unpack8(v[2 * h + 1], f2, T());
#pragma unroll
                for (int m = 0; m < M; m++) {
                    const float4 xa = *reinterpret_cast<const float4 *>(&xs[m * a.K + c * 8]);
                    const float4 xb = *reinterpret_cast<const float4 *>(&xs[m * a.K + c * 8 + 4]);
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

int g_num_sms = 0;

int num_sms()
{
    if (g_num_sms > 0) return g_num_sms;
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0)
        n = 108;
    g_num_sms = n;
    return n;
}

/* Splits of K for gemv_kn: about two blocks per SM in all, each row-lane with at
 * least one row, and the staged slice within GEMV_MAX_STAGE floats. */
int kn_splits(const GemvArgs &a)
{
    const int tiles = a.N / GEMV_COLS;
    int ks = (2 * num_sms() + tiles - 1) / tiles;
    if (ks > a.K / GEMV_LANES) ks = a.K / GEMV_LANES;
    if (ks < 1) ks = 1;
    while (ks < GEMV_MAX_SPLIT && a.M * ((a.K + ks - 1) / ks) > GEMV_MAX_STAGE) ks++;
    return ks > GEMV_MAX_SPLIT ? GEMV_MAX_SPLIT : ks;
}

template <typename T, int M>
cudaError_t launch_m(const GemvArgs &a, int w_nk, float *partial, unsigned *tickets,
                     cudaStream_t stream)
{
    if (w_nk) {
        const int blocks = min(4 * num_sms(), (a.N + GEMV_WARPS - 1) / GEMV_WARPS);
        gemv_nk_kernel<T, M><<<blocks, GEMV_THREADS, (size_t)M * a.K * sizeof(float), stream>>>(a);
    } else {
        const int ks = kn_splits(a), kps = (a.K + ks - 1) / ks;
        const dim3 grid(a.N / GEMV_COLS, ks);
        gemv_kn_kernel<T, M><<<grid, GEMV_THREADS, (size_t)M * kps * sizeof(float), stream>>>(
            a, kps, partial, tickets);
    }
    return cudaGetLastError();
}

template <typename T>
cudaError_t launch(const GemvArgs &a, int w_nk, float *partial, unsigned *tickets,
                   cudaStream_t stream)
{
    switch (a.M) {
    case 1: return launch_m<T, 1>(a, w_nk, partial, tickets, stream);
    case 2: return launch_m<T, 2>(a, w_nk, partial, tickets, stream);
    case 3: return launch_m<T, 3>(a, w_nk, partial, tickets, stream);
    case 4: return launch_m<T, 4>(a, w_nk, partial, tickets, stream);
    default: return cudaErrorInvalidValue;
    }
}

}  // namespace

extern "C" int gemv_supported(const GemvArgs *a, int w_nk, int dtype)
{
    if (dtype != DTYPE_F16 && dtype != DTYPE_BF16) return 0;
    if (a->M < 1 || a->M > GEMV_MAX_M || a->K < 1 || a->N < 1 || !aligned16(a->w)) return 0;
    if (a->ln_w && (!a->ln_b || a->eps < 0.0f)) return 0;
    if (w_nk) return a->K % 8 == 0 && a->M * a->K <= GEMV_MAX_STAGE;
    /* K / GEMV_MAX_SPLIT rows per split must fit the staging buffer */
    return a->N % GEMV_COLS == 0 && a->N <= GEMV_MAX_N &&
           (size_t)a->M * ((a->K + GEMV_MAX_SPLIT - 1) / GEMV_MAX_SPLIT) <= GEMV_MAX_STAGE;
}

extern "C" cudaError_t gemv_cuda(const GemvArgs *a, int w_nk, int dtype, float *partial,
                                 unsigned *tickets, cudaStream_t stream)
{
    if (!gemv_supported(a, w_nk, dtype)) return cudaErrorInvalidValue;
    if (dtype == DTYPE_F16) return launch<__half>(*a, w_nk, partial, tickets, stream);
    return launch<__nv_bfloat16>(*a, w_nk, partial, tickets, stream);
}
