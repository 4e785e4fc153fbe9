/* flash_common.cuh — what the FLASH backend's two prefill kernels share
 * (flash_attention.cu: mma.sync, any sm_80+; flash_attention_sm90a.cu: wgmma):
 * the launch parameters and the small PTX wrappers for cp.async and ex2.
 * Everything is in an anonymous namespace: each .cu file gets its own copy. */
#ifndef GPT2_KERNELS_FLASH_COMMON_CUH
#define GPT2_KERNELS_FLASH_COMMON_CUH

#include <cuda_runtime.h>
#include <stdint.h>

namespace {

constexpr float kLog2e = 1.4426950408889634f;

/* One prefill launch: shapes in kernels.h's FLASH section. */
struct FlashParams {
    void *out;
    const void *q;
    const void *k_cache;
    const void *v_cache;
    const int32_t *query_start_loc;
    const int32_t *seq_lens;
    const int32_t *block_tables;
    int q_stride, bt_stride, seq_begin, H, bs_shift;   /* block_size = 1 << bs_shift */
    float scale_log2;                                  /* scale * log2(e) */
    /* the TMA kernel's tile order (flash_attention_sm90a.cu, ws_tile): sched bit 0 = one
     * linear grid in longest-first order by sections of `group` (sequence, head) pairs,
     * bit 1 = q tiles aligned to the sequence's end, bit 2 = a persistent grid, bit 3 =
     * tiles drawn from tile_counter (two ints, zero between launches); num_seqs and n_qt
     * (q tiles of the longest query) size the linear grid. Zero (the other kernels): grid
     * (q tiles, sequences, heads), tiles aligned to the start. */
    int sched, num_seqs, n_qt, group;
    int q_tma;   /* the TMA kernel: its launcher encoded a tensor map of q (Q loaded by TMA) */
    int *tile_counter;
};

__device__ __forceinline__ uint32_t smem_addr(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}
/* 16-byte async copy; src_bytes = 0 zero-fills the destination (rows past the keys) */
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ float fast_exp2(float x) {   /* MUFU.EX2; exp2(-inf) = 0 */
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

}  // namespace

#endif /* GPT2_KERNELS_FLASH_COMMON_CUH */
