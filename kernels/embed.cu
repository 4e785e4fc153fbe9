/* embed.cu — token + position embedding: out(T, C) = wte[ids[t]] + wpe[pos[t]].
 * Launch: one 256-thread block per token t; the threads stride over C, 16 bytes
 * at a time when C and every pointer allow it. The sum is taken in fp32. */
#include "common.cuh"

template <typename T, bool VEC>
__global__ void embed_kernel(T *out, const int32_t *ids, const int32_t *pos, const T *wte,
                             const T *wpe, int C)
{
    const int t = blockIdx.x;
    const T *a = wte + (size_t)ids[t] * C, *p = wpe + (size_t)pos[t] * C;
    T *o = out + (size_t)t * C;
    if (VEC) {
        typedef Pack16<T> P;
        for (int i = threadIdx.x; i < C / P::N; i += blockDim.x) {
            P x = ((const P *)a)[i], y = ((const P *)p)[i], z;
#pragma unroll
            for (int j = 0; j < P::N; j++) z.v[j] = embed_sum(x.v[j], y.v[j]);
            ((P *)o)[i] = z;
        }
    } else {
        for (int c = threadIdx.x; c < C; c += blockDim.x)
            o[c] = embed_sum(a[c], p[c]);
    }
}

extern "C" cudaError_t embed_cuda(void *out, const int32_t *ids, const int32_t *pos,
                                  const void *wte, const void *wpe, int T, int C, int dtype,
                                  cudaStream_t stream)
{
    if (T <= 0 || C <= 0) return cudaSuccess;
    DISPATCH_DTYPE(dtype, {
        const bool vec = C % Pack16<scalar_t>::N == 0 && aligned16(out) && aligned16(wte) &&
                         aligned16(wpe);
        if (vec)
            embed_kernel<scalar_t, true><<<T, 256, 0, stream>>>(
                (scalar_t *)out, ids, pos, (const scalar_t *)wte, (const scalar_t *)wpe, C);
        else
            embed_kernel<scalar_t, false><<<T, 256, 0, stream>>>(
                (scalar_t *)out, ids, pos, (const scalar_t *)wte, (const scalar_t *)wpe, C);
    });
    return cudaGetLastError();
}
