/* launch.cuh — programmatic dependent launch (PDL, sm_90+) for the kernels of
 * the decode path, and the launcher that sets it.
 *
 * A decode step is ~100 small kernels whose launch latencies add up to more
 * than the bytes they move. A kernel launched with the programmatic-serialization
 * attribute may start while the kernel before it on the stream still runs: it
 * does whatever does not depend on that kernel (prefetch its weights), then
 * waits in pdl_wait() until the previous grid has completed and its memory is
 * visible. Every kernel of ours calls pdl_launch_dependents() first, so the next
 * one's launch overlaps this one's execution.
 *
 * The rule that keeps it correct: a kernel launched with pdl != 0 must call
 * pdl_wait() before it reads anything an earlier kernel wrote and before it
 * writes anything an earlier kernel reads. Kernels that never call pdl_wait()
 * (cuBLAS, the sampler) are launched without the attribute and serialize as
 * usual. On pre-sm_90 builds both calls compile to nothing and the backend
 * never asks for the attribute. */
#ifndef GPT2_KERNELS_LAUNCH_CUH
#define GPT2_KERNELS_LAUNCH_CUH

#include <cuda_runtime.h>

__device__ __forceinline__ void pdl_launch_dependents()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/* nanoseconds, the same clock on every SM (traces and watchdogs) */
__device__ __forceinline__ unsigned long long globaltimer()
{
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

/* Which block of a launch finishes a group of n blocks (the split-KV merges: the
 * last split to finish merges every split's partial). Each block publishes its
 * writes, then draws a ticket; the one drawing n-1 gets true, after an acquire fence
 * (the group's writes are visible to it), and resets the ticket to 0, so the next
 * launch and every graph replay start from zero. Called by every thread of a block;
 * ticket: device memory, zero before the first launch. */
__device__ __forceinline__ bool last_block_of(int *ticket, int n)
{
    __shared__ int s_last;
    __threadfence();                      /* this block's writes, device-wide, before the ticket */
    __syncthreads();
    if (threadIdx.x == 0) {
        const int last = atomicAdd(ticket, 1) == n - 1;
        if (last) *ticket = 0;            /* every other block of the group has drawn */
        s_last = last;
    }
    __syncthreads();
    if (!s_last) return false;
    __threadfence();                      /* acquire: the other blocks' writes */
    return true;
}

/* L2 prefetch of the 128-byte line holding p (no register result, no wait). */
__device__ __forceinline__ void prefetch_l2(const void *p)
{
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

/* kernel<<<grid, block, smem, stream>>>(args...), with programmatic stream
 * serialization when pdl != 0 and a (1, cluster_y, 1) thread-block cluster when
 * cluster_y > 1 (grid.y must be a multiple of it). */
template <typename... Params, typename... Args>
static inline cudaError_t launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block,
                                        size_t smem, cudaStream_t stream, int pdl,
                                        int cluster_y, Args... args)
{
    cudaLaunchAttribute attrs[2];
    unsigned n = 0;
    if (pdl) {
        attrs[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attrs[n].val.programmaticStreamSerializationAllowed = 1;
        n++;
    }
    if (cluster_y > 1) {
        attrs[n].id = cudaLaunchAttributeClusterDimension;
        attrs[n].val.clusterDim.x = 1;
        attrs[n].val.clusterDim.y = (unsigned)cluster_y;
        attrs[n].val.clusterDim.z = 1;
        n++;
    }
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cfg.attrs = n ? attrs : nullptr;
    cfg.numAttrs = n;
    cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, args...);
    return e != cudaSuccess ? e : cudaGetLastError();
}

#endif /* GPT2_KERNELS_LAUNCH_CUH */
