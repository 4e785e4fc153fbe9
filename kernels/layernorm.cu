/* layernorm.cu — out(T, C) = (in - mean) * rstd * w + bias, per row.
 * Launch: one warp per row, 4 rows (warps) per 128-thread block. Statistics are
 * fp32 and two-pass (mean, then the mean of squared deviations, so no
 * cancellation). Two kernels:
 *   layernorm_reg_kernel<T, NP>  16-byte loads, the row held in registers (NP packs
 *     of 16 bytes per lane, C <= 32 * NP * 16 bytes): one read of the row, and w and
 *     bias are loaded before the programmatic-launch wait (they are weights, never
 *     written by the previous kernel), so the dependent path is one L2 round trip;
 *   layernorm_kernel<T, VEC>     any C: the row is re-read from L1/L2 for each pass
 *     (16-byte loads when C and every pointer allow it). */
#include "common.cuh"
#include "launch.cuh"

#define LN_ROWS_PER_BLOCK 4

template <typename T, bool VEC>
__global__ void layernorm_kernel(T *out, const T *in, const T *w, const T *bias, int T_,
                                 int C, float eps)
{
    pdl_launch_dependents();
    pdl_wait();
    const int row = blockIdx.x * LN_ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= T_) return;                      /* whole warp leaves together */
    const T *x = in + (size_t)row * C;
    T *y = out + (size_t)row * C;
    typedef Pack16<T> P;

    float sum = 0.0f;
    if (VEC) {
        for (int i = lane; i < C / P::N; i += 32) {
            P p = ((const P *)x)[i];
#pragma unroll
            for (int j = 0; j < P::N; j++) sum += to_f32(p.v[j]);
        }
    } else {
        for (int c = lane; c < C; c += 32) sum += to_f32(x[c]);
    }
    const float mean = warp_sum(sum) / (float)C;

    float sq = 0.0f;
    if (VEC) {
        for (int i = lane; i < C / P::N; i += 32) {
            P p = ((const P *)x)[i];
#pragma unroll
            for (int j = 0; j < P::N; j++) { float d = to_f32(p.v[j]) - mean; sq += d * d; }
        }
    } else {
        for (int c = lane; c < C; c += 32) { float d = to_f32(x[c]) - mean; sq += d * d; }
    }
    const float rstd = rsqrtf(warp_sum(sq) / (float)C + eps);

    if (VEC) {
        for (int i = lane; i < C / P::N; i += 32) {
            P p = ((const P *)x)[i], g = ((const P *)w)[i], b = ((const P *)bias)[i], o;
#pragma unroll
            for (int j = 0; j < P::N; j++)
                o.v[j] = from_f32<T>((to_f32(p.v[j]) - mean) * rstd * to_f32(g.v[j]) +
                                     to_f32(b.v[j]));
            ((P *)y)[i] = o;
        }
    } else {
        for (int c = lane; c < C; c += 32)
            y[c] = from_f32<T>((to_f32(x[c]) - mean) * rstd * to_f32(w[c]) + to_f32(bias[c]));
    }
}

template <typename T, int NP>
__global__ void layernorm_reg_kernel(T *out, const T *in, const T *w, const T *bias, int T_,
                                     int C, float eps)
{
    typedef Pack16<T> P;
    const int row = blockIdx.x * LN_ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    const int np = C / P::N;                    /* packs in a row */
    P g[NP], bb[NP], xv[NP];
#pragma unroll
    for (int k = 0; k < NP; k++) {
        const int i = lane + 32 * k;
        if (i < np) { g[k] = ((const P *)w)[i]; bb[k] = ((const P *)bias)[i]; }
    }
    pdl_launch_dependents();
    pdl_wait();
    if (row >= T_) return;                      /* whole warp leaves together */
    const P *x = (const P *)(in + (size_t)row * C);
    P *y = (P *)(out + (size_t)row * C);
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < NP; k++) {
        const int i = lane + 32 * k;
        if (i < np) {
            xv[k] = x[i];
#pragma unroll
            for (int j = 0; j < P::N; j++) sum += to_f32(xv[k].v[j]);
        }
    }
    const float mean = warp_sum(sum) / (float)C;
    float sq = 0.0f;
#pragma unroll
    for (int k = 0; k < NP; k++)
        if (lane + 32 * k < np) {
#pragma unroll
            for (int j = 0; j < P::N; j++) { float d = to_f32(xv[k].v[j]) - mean; sq += d * d; }
        }
    const float rstd = rsqrtf(warp_sum(sq) / (float)C + eps);
#pragma unroll
    for (int k = 0; k < NP; k++) {
        const int i = lane + 32 * k;
        if (i < np) {
            P o;
#pragma unroll
            for (int j = 0; j < P::N; j++)
                o.v[j] = from_f32<T>((to_f32(xv[k].v[j]) - mean) * rstd * to_f32(g[k].v[j]) +
                                     to_f32(bb[k].v[j]));
            y[i] = o;
        }
    }
}

/* the register kernel for rows of np 16-byte packs (NP = packs per lane), or NULL */
template <typename T>
static void (*layernorm_reg_for(int np))(T *, const T *, const T *, const T *, int, int, float)
{
    if (np <= 32) return layernorm_reg_kernel<T, 1>;
    if (np <= 64) return layernorm_reg_kernel<T, 2>;
    if (np <= 96) return layernorm_reg_kernel<T, 3>;
    if (np <= 128) return layernorm_reg_kernel<T, 4>;
    if (np <= 256) return layernorm_reg_kernel<T, 8>;
    return NULL;
}

extern "C" cudaError_t layernorm_cuda(void *out, const void *in, const void *w, const void *bias,
                                      int T, int C, float eps, int dtype, cudaStream_t stream,
                                      int pdl)
{
    if (T <= 0 || C <= 0) return cudaSuccess;
    const unsigned int blocks = ceil_div((size_t)T, LN_ROWS_PER_BLOCK);
    DISPATCH_DTYPE(dtype, {
        const bool vec = C % Pack16<scalar_t>::N == 0 && aligned16(out) && aligned16(in) &&
                         aligned16(w) && aligned16(bias);
        auto reg = vec ? layernorm_reg_for<scalar_t>(C / Pack16<scalar_t>::N) : NULL;
        if (reg)
            return launch_kernel(reg, dim3(blocks), dim3(32 * LN_ROWS_PER_BLOCK), 0, stream, pdl,
                                 1, (scalar_t *)out, (const scalar_t *)in, (const scalar_t *)w,
                                 (const scalar_t *)bias, T, C, eps);
        return launch_kernel(vec ? layernorm_kernel<scalar_t, true> : layernorm_kernel<scalar_t, false>,
                             dim3(blocks), dim3(32 * LN_ROWS_PER_BLOCK), 0, stream, pdl, 1,
                             (scalar_t *)out, (const scalar_t *)in, (const scalar_t *)w,
                             (const scalar_t *)bias, T, C, eps);
    });
    return cudaSuccess;
}
