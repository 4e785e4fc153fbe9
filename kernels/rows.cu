/* rows.cu — small row and element-wise kernels of the device backend:
 * gather_rows (select the rows whose logits are needed), feed_tokens (the
 * previous step's sampled tokens into this step's inputs), upload_ints (a small step's
 * ints passed with the launch, then that feed), to_float (logits to
 * fp32 for the sampler) and gelu_erf (the activation cuBLASLt has no epilogue
 * for; applied in place after the GEMM). */
#include "common.cuh"
#include "launch.cuh"

/* out(n, C) = in[rows[i]]: one 128-thread block per output row; raw copy units */
template <typename U>
__global__ void gather_rows_kernel(U *out, const U *in, const int32_t *rows, int C_u)
{
    pdl_launch_dependents();
    pdl_wait();
    const U *src = in + (size_t)rows[blockIdx.x] * C_u;
    U *dst = out + (size_t)blockIdx.x * C_u;
    for (int i = threadIdx.x; i < C_u; i += blockDim.x) dst[i] = src[i];
}

extern "C" cudaError_t gather_rows_cuda(void *out, const void *in, const int32_t *rows, int n,
                                        int C, int dtype, cudaStream_t stream, int pdl)
{
    if (n <= 0 || C <= 0) return cudaSuccess;
    if (dtype != DTYPE_F32 && dtype != DTYPE_F16 && dtype != DTYPE_BF16)
        return cudaErrorInvalidValue;
    const size_t es = dtype == DTYPE_F32 ? 4 : 2;
    if ((C * es) % 16 == 0 && aligned16(out) && aligned16(in))
        return launch_kernel(gather_rows_kernel<uint4>, dim3(n), dim3(128), 0, stream, pdl, 1,
                             (uint4 *)out, (const uint4 *)in, rows, (int)(C * es / 16));
    if (es == 4)
        return launch_kernel(gather_rows_kernel<uint32_t>, dim3(n), dim3(128), 0, stream, pdl, 1,
                             (uint32_t *)out, (const uint32_t *)in, rows, C);
    return launch_kernel(gather_rows_kernel<uint16_t>, dim3(n), dim3(128), 0, stream, pdl, 1,
                         (uint16_t *)out, (const uint16_t *)in, rows, C);
}

/* ids[idx[i]] = fed_id(tokens[rows[i]]) (common.cuh) */
__global__ void feed_tokens_kernel(int32_t *ids, const int32_t *idx, const int32_t *rows,
                                   const int32_t *tokens, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) ids[idx[i]] = fed_id(tokens[rows[i]]);
}

extern "C" cudaError_t feed_tokens_cuda(int32_t *ids, const int32_t *idx, const int32_t *rows,
                                        const int32_t *tokens, int n, cudaStream_t stream)
{
    if (n <= 0) return cudaSuccess;
    feed_tokens_kernel<<<(n + 255) / 256, 256, 0, stream>>>(ids, idx, rows, tokens, n);
    return cudaGetLastError();
}

/* dst[0, n) = in.v[0, n) (the ints came with the launch), then the feed of
 * feed_tokens_kernel with its lists in in.v: one block, so the barrier orders each fed
 * id after the placeholder it replaces */
__global__ void __launch_bounds__(UPLOAD_THREADS)
upload_ints_kernel(int32_t *dst, const __grid_constant__ UploadInts in, int n, int ids_off,
                   int feed_idx_off, int feed_row_off, int n_feeds, const int32_t *tokens)
{
    for (int i = threadIdx.x; i < n; i += UPLOAD_THREADS) dst[i] = in.v[i];
    __syncthreads();
    for (int i = threadIdx.x; i < n_feeds; i += UPLOAD_THREADS)
        dst[ids_off + in.v[feed_idx_off + i]] = fed_id(tokens[in.v[feed_row_off + i]]);
}

extern "C" cudaError_t upload_ints_cuda(int32_t *dst, const UploadInts *in, int n, int ids_off,
                                        int feed_idx_off, int feed_row_off, int n_feeds,
                                        const int32_t *tokens, cudaStream_t stream)
{
    if (n <= 0) return cudaSuccess;
    if (n > UPLOAD_INLINE_INTS || (n_feeds > 0 && !tokens)) return cudaErrorInvalidValue;
    upload_ints_kernel<<<1, UPLOAD_THREADS, 0, stream>>>(dst, *in, n, ids_off, feed_idx_off,
                                                         feed_row_off, n_feeds, tokens);
    return cudaGetLastError();
}

/* out(rows, cols) = fp32(in(rows, ld)): grid-stride over the output, 256 threads
 * per block; ld > cols drops the padding columns of the lm_head's output */
template <typename T>
__global__ void to_float_kernel(float *out, const T *in, size_t n, int cols, int ld)
{
    pdl_launch_dependents();
    pdl_wait();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / (size_t)cols, c = i - r * (size_t)cols;
        out[i] = to_f32(in[r * (size_t)ld + c]);
    }
}

extern "C" cudaError_t to_float_cuda(float *out, const void *in, int rows, int cols, int ld,
                                     int dtype, cudaStream_t stream, int pdl)
{
    const size_t n = (size_t)rows * (size_t)cols;
    if (n == 0) return cudaSuccess;
    if (ld < cols) return cudaErrorInvalidValue;
    if (dtype == DTYPE_F32) {
        if ((const void *)out == in && ld == cols) return cudaSuccess;
        return cudaMemcpy2DAsync(out, (size_t)cols * 4, in, (size_t)ld * 4, (size_t)cols * 4,
                                 (size_t)rows, cudaMemcpyDeviceToDevice, stream);
    }
    const unsigned int blocks = ceil_div(n, 256) < 65535u ? ceil_div(n, 256) : 65535u;
    DISPATCH_DTYPE(dtype, {
        return launch_kernel(to_float_kernel<scalar_t>, dim3(blocks), dim3(256), 0, stream, pdl, 1,
                             out, (const scalar_t *)in, n, cols, ld);
    });
    return cudaSuccess;
}

/* x = 0.5 x (1 + erf(x / sqrt 2)) in place, fp32 math; grid-stride */
template <typename T>
__global__ void gelu_erf_kernel(T *x, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float v = to_f32(x[i]);
        x[i] = from_f32<T>(0.5f * v * (1.0f + erff(v * 0.70710678118654752f)));
    }
}

extern "C" cudaError_t gelu_erf_cuda(void *x, size_t n, int dtype, cudaStream_t stream)
{
    if (n == 0) return cudaSuccess;
    const unsigned int blocks = ceil_div(n, 256) < 65535u ? ceil_div(n, 256) : 65535u;
    DISPATCH_DTYPE(dtype, {
        gelu_erf_kernel<scalar_t><<<blocks, 256, 0, stream>>>((scalar_t *)x, n);
    });
    return cudaGetLastError();
}
