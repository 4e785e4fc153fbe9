/* cache.cu — reshape_and_cache: writes this step's K and V rows into the paged
 * cache. k, v: (T, H*D) with row stride kv_stride elements; caches:
 * (num_blocks, H, block_size, D); slot s -> block s / block_size, offset
 * s % block_size; a negative slot is padding and skipped.
 * Launch: one 128-thread block per token; threads stride over the H*D values of
 * K and V, copied as raw 16-byte units when D, kv_stride and the pointers allow
 * (the op is a pure copy, so it is dtype-agnostic: only the element size matters). */
#include "common.cuh"
#include "launch.cuh"

template <typename U>   /* U: the copy unit (uint4, or the 2- or 4-byte element) */
__global__ void reshape_and_cache_kernel(const U *k, const U *v, int stride_u, U *k_cache,
                                         U *v_cache, const int32_t *slot_mapping, int H,
                                         int D_u, int block_size)
{
    pdl_launch_dependents();
    pdl_wait();
    const int t = blockIdx.x;
    const int32_t slot = slot_mapping[t];
    if (slot < 0) return;
    const size_t blk = (size_t)(slot / block_size), off = (size_t)(slot % block_size);
    const U *ks = k + (size_t)t * stride_u, *vs = v + (size_t)t * stride_u;
    for (int i = threadIdx.x; i < H * D_u; i += blockDim.x) {
        const int h = i / D_u, d = i - h * D_u;
        const size_t dst = ((blk * H + h) * block_size + off) * D_u + d;
        k_cache[dst] = ks[i];
        v_cache[dst] = vs[i];
    }
}

extern "C" cudaError_t reshape_and_cache_cuda(const void *k, const void *v, int kv_stride,
                                              void *k_cache, void *v_cache,
                                              const int32_t *slot_mapping, int T, int H, int D,
                                              int block_size, int dtype, cudaStream_t stream,
                                              int pdl)
{
    if (T <= 0 || H <= 0 || D <= 0) return cudaSuccess;
    if (block_size <= 0 || (dtype != DTYPE_F32 && dtype != DTYPE_F16 && dtype != DTYPE_BF16))
        return cudaErrorInvalidValue;
    const size_t es = dtype == DTYPE_F32 ? 4 : 2;
    const bool vec = (D * es) % 16 == 0 && (kv_stride * es) % 16 == 0 && aligned16(k) &&
                     aligned16(v) && aligned16(k_cache) && aligned16(v_cache);
    if (vec) {
        const int per = (int)(16 / es);
        return launch_kernel(reshape_and_cache_kernel<uint4>, dim3(T), dim3(128), 0, stream, pdl,
                             1, (const uint4 *)k, (const uint4 *)v, kv_stride / per,
                             (uint4 *)k_cache, (uint4 *)v_cache, slot_mapping, H, D / per,
                             block_size);
    }
    if (es == 4)
        return launch_kernel(reshape_and_cache_kernel<uint32_t>, dim3(T), dim3(128), 0, stream,
                             pdl, 1, (const uint32_t *)k, (const uint32_t *)v, kv_stride,
                             (uint32_t *)k_cache, (uint32_t *)v_cache, slot_mapping, H, D,
                             block_size);
    return launch_kernel(reshape_and_cache_kernel<uint16_t>, dim3(T), dim3(128), 0, stream, pdl,
                         1, (const uint16_t *)k, (const uint16_t *)v, kv_stride,
                         (uint16_t *)k_cache, (uint16_t *)v_cache, slot_mapping, H, D,
                         block_size);
}
