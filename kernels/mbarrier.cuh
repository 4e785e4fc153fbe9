/* mbarrier.cuh — shared-memory mbarriers, the async-proxy fence and cluster shared memory
 * (sm_90+): the FLASH TMA prefill's rings (flash_attention_sm90a.cu) and the split-K
 * GEMV's cluster reduction (gemv.cu). Below sm_90 the bodies are traps: a
 * unit built for several architectures compiles them everywhere, and its launcher must
 * only pick a kernel that uses them on compute capability 9.0 or later.
 *
 * An mbarrier (8 bytes of shared memory) counts arrivals and, for bulk copies,
 * transaction bytes; a phase completes when both reach zero, then the next phase starts
 * with the init count. try_wait.parity(P) returns true once the phase of parity P has
 * completed, i.e. while the current phase has parity !P: a fresh barrier is in phase 0,
 * so waiting on parity 1 passes at once (the "previous" phase counts as complete) and
 * waiting on parity 0 blocks until the first phase completes.
 * Everything is in an anonymous namespace: each .cu file gets its own copy. */
#ifndef GPT2_KERNELS_MBARRIER_CUH
#define GPT2_KERNELS_MBARRIER_CUH

#include <stdint.h>

namespace {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define GPT2_SM90_ASM(...) __trap()
#else
#define GPT2_SM90_ASM(...) asm volatile(__VA_ARGS__)
#endif

/* makes this thread's generic-proxy accesses to shared memory (cp.async writes, or the
 * reads of a buffer about to be refilled) ordered with the async proxy's (wgmma operand
 * reads, bulk copies); a barrier then publishes them to the other threads */
__device__ __forceinline__ void fence_proxy_async() {
    GPT2_SM90_ASM("fence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
    GPT2_SM90_ASM("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
/* makes the inits visible to the other threads and to the async proxy (TMA) */
__device__ __forceinline__ void mbar_fence_init() {
    GPT2_SM90_ASM("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
/* one arrival (release): this thread's earlier reads of the guarded buffer are done */
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
    GPT2_SM90_ASM("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
/* one arrival, and bytes more to come from the TMA copies completing on this phase */
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
    GPT2_SM90_ASM("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar),
                  "r"(bytes) : "memory");
}
/* the try_wait.parity loop of mbar_wait, SEM its ordering qualifiers */
#define GPT2_MBAR_TRY_WAIT(SEM)                                                          \
    "{\n.reg .pred p;\n"                                                                 \
    "mbarrier.try_wait.parity" SEM ".shared::cta.b64 p, [%1], %2;\n"                     \
    "selp.u32 %0, 1, 0, p;\n}\n"
/* blocks until the phase of this parity has completed (acquire: the TMA's writes, or the
 * consumers' reads, guarded by that phase are then ordered before what follows). With
 * cluster, the acquire is at cluster scope: other blocks' writes released by their
 * arrivals (mbar_arrive_cluster) are visible. */
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity, bool cluster = false) {
    uint32_t done = 0;
    do {
        if (cluster)
            GPT2_SM90_ASM(GPT2_MBAR_TRY_WAIT(".acquire.cluster")
                          : "=r"(done) : "r"(bar), "r"(parity) : "memory");
        else
            GPT2_SM90_ASM(GPT2_MBAR_TRY_WAIT("") : "=r"(done) : "r"(bar), "r"(parity) : "memory");
    } while (!done);
}
/* the cluster-scope side (sm_90+): a block of a thread-block cluster arrives on, or
 * stores to, another block's shared memory at the same offset (the address of this
 * block's copy of the variable, mapped to block `rank` of the cluster) */
__device__ __forceinline__ uint32_t cluster_map(uint32_t addr, uint32_t rank) {
    uint32_t r = 0;
    GPT2_SM90_ASM("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(addr), "r"(rank));
    return r;
}
__device__ __forceinline__ void st_cluster_f32(uint32_t cluster_addr, float v) {
    GPT2_SM90_ASM("st.shared::cluster.f32 [%0], %1;\n" ::"r"(cluster_addr), "f"(v) : "memory");
}
/* one arrival on a barrier of another block, releasing at cluster scope what happens
 * before it (a __syncthreads orders the other threads' remote stores before it too) */
__device__ __forceinline__ void mbar_arrive_cluster(uint32_t cluster_bar) {
    GPT2_SM90_ASM("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];\n"
                  ::"r"(cluster_bar) : "memory");
}
/* the cluster barrier split in two: every thread of every block of the cluster arrives
 * (release), then waits (acquire) for all of them, with other work in between */
__device__ __forceinline__ void cluster_arrive() {
    GPT2_SM90_ASM("barrier.cluster.arrive.release;\n" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() {
    GPT2_SM90_ASM("barrier.cluster.wait.acquire;\n" ::: "memory");
}

}  // namespace

#endif
