/* flash_attention_sm90a.cu — the FLASH backend's Hopper prefill kernels: causal flash
 * attention over the paged KV cache with warpgroup MMA (wgmma.mma_async, sm_90a only;
 * setup.py builds kernels/..._sm90a.cu files for that target alone). They serve the same
 * calls as the mma.sync prefill of flash_attention.cu, whose flash_attention_prefill
 * dispatches here on compute capability 9.0. GPT2_ENGINE_FLASH_WGMMA (read per call):
 * "0" keeps the mma.sync kernel (decided in flash_attention.cu), "legacy" runs the
 * cp.async kernel below, anything else (or unset) the TMA kernel. Not used for decode.
 *
 * flash_attention_sm90a_kernel<T, D, NWG, BN, ST, PP>: the default, warp-specialized
 *   one CTA per (q tile, sequence, head) in longest-first order, or one per SM taking
 *   such tiles in turn (persistent; ws_tile), (NWG+1)*128 threads. Warpgroup 0 is the
 *   producer: after setmaxnreg.dec leaves it 24-40 registers, its warp 0 alone issues
 *   the TMA loads (cp.async.bulk.tensor) of K and V tiles into a ring of ST slots each,
 *   one lane per (page, 64-column panel) box, each lane reading its block-table entry;
 *   its other warps exit. Warpgroups 1..NWG consume (setmaxnreg.inc): warpgroup c
 *   owns query rows [64c, 64c+64) of the block's BM = 64*NWG rows (Q by the producer's
 *   TMA: at D = 64 the next q tile's into a second buffer during this one, at D = 128
 *   into the one buffer once every consumer's last S GEMM of the tile has completed;
 *   FLASH_SM90_Q_TMA), and per key tile j issues
 *       S_j = Q K_j^T          m64nBNk16 x D/16, A = Q and B = K_j from shared memory
 *       O  += P_{j-1} V_{j-1}  m64nDk16 x BN/16, A = P from registers, B = V (transposed)
 *   waits for S_j only, runs the online softmax on it while P V runs, waits for P V,
 *   rescales O and packs the new P (softmax in fp32, log2 domain, ex2.approx; the
 *   score matrix never leaves registers). The softmax keeps a row's running max until
 *   the row's max passes it by 2^8 (FLASH_SM90_RESCALE_LOG2), so O is rescaled only
 *   on the tiles where a row of the warp moved it. At D = 64 the P V GEMM is N = 72:
 *   its B operand's second 64-column atom (LBO away) is a 2 KB panel of ones, so its
 *   last 8 columns are P's row sums and the softmax adds nothing up
 *   (FLASH_SM90_ROWSUM_MMA). With PP the consumers take turns issuing their GEMMs
 *   (named barriers 1..NWG; off by default: 3-4 warpgroups issuing freely were
 *   faster, measured).
 *   Synchronisation, all on mbarriers in shared memory (Q's full_q/empty_q[buffer] like
 *   K's): full_k/full_v[slot] (count 1:
 *   the producer's arrive.expect_tx of the tile's BN*D*2 bytes, then the TMA's
 *   complete_tx) and empty_k/empty_v[slot] (count 4*NWG: lane 0 of each consumer warp
 *   after the wgmma reading the slot has completed). Tile j uses slot j % ST for the
 *   (j/ST)-th time: consumers wait on full parity (j/ST)&1, the producer on empty
 *   parity ((j/ST)&1)^1 (the first use passes at once).
 *   Causal: key tiles past the block's last row are never loaded; a consumer computes
 *   the tiles up to its own last row's bound (none when its rows lie past q_len),
 *   masking element-wise on tiles that cross its diagonal, and for the block's later
 *   tiles only keeps the barrier counts (waits full, takes its ping-pong turn, releases
 *   the slot). Tile order (ws_tile): the q tiles are aligned to the sequence's end (the
 *   partial one is the lightest), and a linear grid runs the heaviest tile of every
 *   (sequence, head) of an L2-sized section first, the lightest last.
 *   Sequence ends: a tile's boxes past the sequence's last block re-read that block
 *   (the block table is never read past it); key rows past seq_len are masked in S,
 *   and in the last tile's V they are zeroed in shared memory before the last P V
 *   (they may hold anything; P = 0 would not cancel a NaN).
 *   TMA: the cache (num_blocks, H, block_size, D) is the 4-d tensor {D, block_size, H,
 *   blocks}, boxes {64, R, 1, 1} with R = min(block_size, BN) and 128B swizzle, built
 *   per call on the host (cuTensorMapEncodeTiled through cudaGetDriverEntryPoint*) and
 *   passed as __grid_constant__ parameters. Box (page p, panel n) of a tile lands at
 *   n*BN*128 + p*R*128 of the slot, i.e. rows p*R.. of panel n in the layout below
 *   (1024-aligned as long as R >= 8: block sizes 1..4 take the cp.async kernel).
 *
 * flash_attention_sm90a_cpasync_kernel<T, D, NWG, BN>: the earlier design, kept for
 *   block sizes below 8 and A/B runs. NWG*128 threads = NWG warpgroups; no producer
 *   warps: every thread issues cp.async for the next K/V tiles while the tensor cores
 *   work on the current ones (the same per-tile GEMM pipeline as above), with
 *   cp.async.wait + fence.proxy.async + __syncthreads once per key tile.
 *   Shared memory: Q (BM, D) once; K (BN, D) x 2 slots; V (BN, D) x 2 slots. K_{j+1}
 *   and V_j are loaded during iteration j, into the slots that held K_{j-1} and V_{j-2}
 *   (read by wgmma groups that every warpgroup waited for before the iteration's
 *   barrier). A warpgroup skips the tiles past its own last row.
 *
 * Shared memory tiles (dynamic, base rounded up to 1024 bytes, the 128-byte swizzle's
 *   period): every (rows, D) tile is D/64 panels of (rows, 64 elements): row r of a
 *   panel is 128 bytes at r*128, its 16-byte chunk c stored at chunk c ^ (r & 7) (the
 *   128B swizzle: the hardware XORs address bits 4-6 with bits 7-9, so bases are
 *   1024-aligned). Element (r, d) of a tile with ROWS rows is at byte
 *   (d/64)*ROWS*128 + r*128 + (((d%64)/8) ^ (r%8))*16 + (d%8)*2. TMA's 128B swizzle
 *   writes a box of 128-byte rows in exactly this pattern.
 *
 * wgmma shared-memory descriptors (64 bits): bits 0-13 start address >> 4,
 * 16-29 leading byte offset (LBO) >> 4, 32-45 stride byte offset (SBO) >> 4,
 * 62-63 swizzle mode (1 = 128B). Both layouts below are CUTLASS's canonical SW128 ones.
 *   K-major operand (Q as A: rows = query rows; K as B: rows = keys; contiguous in d):
 *     8-row core groups are SBO = 1024 bytes apart along M/N; one k16 step reads 32
 *     bytes of each 128-byte row, so LBO (the step between 16-byte K groups past the
 *     swizzle width) is unused (set to 1, i.e. 16 bytes); k-step kk starts at
 *     panel kk/4, byte (kk%4)*32 of the row (the hardware applies the XOR on top).
 *   MN-major operand (V as B with the transpose bit: K = keys run down the rows,
 *     N = d contiguous): the 64 d-values of a row are one 128-byte atom row, 8 rows
 *     of keys make the atom. SBO = 1024 = the step between 8-key groups (K); LBO =
 *     BN*128 = the step between 64-wide d panels (N, used when D = 128), or at D = 64
 *     the distance to the ones panel (N = 72: the row sums); k-step kk (keys
 *     16kk..16kk+15) starts at byte kk*16*128.
 * Register fragments (per warp q = warp % 4 of the warpgroup, lane = 4g + t):
 *   accumulator of m64nNk16: d[4i + 0,1] = (row 16q+g, cols 8i+2t, 8i+2t+1),
 *                            d[4i + 2,3] = (row 16q+g+8, same cols);
 *   A from registers (16-bit) for k-step kk: a0 = (row 16q+g, k 2t..2t+1),
 *     a1 = (row +8, k 2t..), a2 = (row, k 8+2t..), a3 = (row +8, k 8+2t..):
 *     exactly S's d[8kk .. 8kk+7] packed in pairs, so P needs no shuffles.
 *
 * Shapes (elements of T = __half or __nv_bfloat16): q (T_tokens, H*D) row stride
 * q_stride; out (T_tokens, H*D) contiguous; k/v caches (num_blocks, H, block_size, D);
 * block_tables (num_seqs, bt_stride); query_start_loc (num_seqs+1); seq_lens (num_seqs).
 */
#include <cuda.h>          /* CUtensorMap and its enums (types only: libcuda is not linked) */
#include <cudaTypedefs.h>  /* PFN_cuTensorMapEncodeTiled */
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "flash_common.cuh"
#include "kernels.h"
#include "mbarrier.cuh"

/* tuning knobs (bench_flash.py --variant) */
/* the TMA kernel's default schedule (ws_schedule_from_env): tiles drawn from the tile
 * counter when the caller passes one (FLASH_SM90_WS_DYNAMIC); without, a persistent grid
 * up to FLASH_SM90_PERSIST_MAX_Q query rows and one CTA per tile above */
#ifndef FLASH_SM90_PERSIST_MAX_Q
#define FLASH_SM90_PERSIST_MAX_Q 1024
#endif
#ifndef FLASH_SM90_WS_DYNAMIC
#define FLASH_SM90_WS_DYNAMIC 1
#endif
#ifndef FLASH_SM90_WS_SKIP
#define FLASH_SM90_WS_SKIP 1     /* 0: every consumer computes all of the block's key tiles */
#endif
/* the online softmax keeps a row's running max (log2 domain) until the row's max passes it
 * by more than this, so O is rescaled only on those tiles; -INFINITY: at every tile */
/* D = 64, TMA kernel: the P V GEMM is m64n72 against V and a panel of ones, so its
 * last 8 columns are P's row sums (no FADDs in the softmax); 0: summed in the softmax */
#ifndef FLASH_SM90_ROWSUM_MMA
#define FLASH_SM90_ROWSUM_MMA 1
#endif
#ifndef FLASH_SM90_RESCALE_LOG2
#define FLASH_SM90_RESCALE_LOG2 8.0f
#endif
/* TMA kernel: 1 = the producer loads the next q tile's Q by TMA into the second of two Q
 * buffers while the consumers work on this one, where two fit in shared memory (D = 64;
 * H200, bench_flash --ab: +6-8% at d=64 over the consumers' cp.async), 2 = also with one
 * buffer (the next Q loads once every consumer's last S GEMM of the tile is done), 0 =
 * each consumer loads its rows by cp.async when its tile starts. Either TMA form needs
 * the tiles aligned to the sequence's end (sched bit 1). */
#ifndef FLASH_SM90_Q_TMA
#define FLASH_SM90_Q_TMA 2   /* 2 vs 1 (D = 128, one buffer): B=16 S=1024 0.931x vs 0.913x */
#endif

#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "flash_attention_sm90a.cu uses wgmma: compile it for sm_90a only"
#endif

namespace {

__device__ __forceinline__ void wgmma_fence() {
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
/* Register fences: the compiler may not move reads or writes of these registers across
 * this point, which keeps them out of the window between a wgmma's issue and its wait. */
__device__ __forceinline__ void reg_fence(float &x) { asm volatile("" : "+f"(x)::"memory"); }
__device__ __forceinline__ void reg_fence(uint32_t &x) { asm volatile("" : "+r"(x)::"memory"); }
template <typename R, int N>
__device__ __forceinline__ void reg_fence(R (&x)[N]) {
#pragma unroll
    for (int i = 0; i < N; i++) reg_fence(x[i]);
}

/* 128B-swizzle shared-memory descriptor of a matrix starting at shared address addr */
__device__ __forceinline__ uint64_t sw128_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((addr & 0x3FFFF) >> 4) | ((uint64_t)(lbo >> 4) << 16) |
           ((uint64_t)(sbo >> 4) << 32) | (1ull << 62);
}

/* the descriptor of the matrix `bytes` further on in shared memory: the start-address
 * field (bits 0-13: address >> 4) takes the offset with no carry out of it, shared
 * addresses being below 256 KB; a loop's descriptors then cost one add each */
__device__ __forceinline__ uint64_t desc_advance(uint64_t desc, uint32_t bytes) {
    return desc + (bytes >> 4);
}

/* Byte offset of 16-byte chunk ch (0 .. D/8-1) of row r in a (ROWS, D) tile laid out
 * as D/64 swizzled panels (see the file comment). */
template <int ROWS>
__device__ __forceinline__ uint32_t tile_off(int r, int ch) {
    return (uint32_t)((ch >> 3) * (ROWS * 128) + r * 128 + (((ch & 7) ^ (r & 7)) << 4));
}

template <typename T> struct Pack;
template <> struct Pack<__half> {
    static __device__ __forceinline__ uint32_t two(float lo, float hi) {
        __half2 h = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&h);
    }
};
template <> struct Pack<__nv_bfloat16> {
    static __device__ __forceinline__ uint32_t two(float lo, float hi) {
        __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&h);
    }
};

/* ---- the online softmax both kernels run on a warpgroup's S tile ----
 * Accumulator layout of m64nBNk16 (see the top comment): this thread holds rows
 * qpos0 (sacc[4i], sacc[4i+1]) and qpos1 (sacc[4i+2], sacc[4i+3]) at key columns
 * n0 + 8i + 2*t4 (+1), each row spread over the 4 lanes of a quad. */

/* S_j (keys n0 ..) in place -> P_j in fp32; mx, l the running max and sum of the two
 * rows, alpha the factor that rescales the old O and l. The causal mask applies on
 * tiles crossing the warpgroup's diagonal (w_first_pos: its first row's position;
 * keys past the block's key range are past every valid row's position too). !SUMS: l
 * is left alone (the P V GEMM sums the rows, FLASH_SM90_ROWSUM_MMA). Returns whether a
 * row of this warp moved its max (O must be rescaled by alpha). */
template <int BN, bool SUMS = true>
__device__ __forceinline__ bool softmax_tile(float (&sacc)[BN / 2], float (&mx)[2], float (&l)[2],
                                             float (&alpha)[2], int n0, int w_first_pos,
                                             int qpos0, int qpos1, int t4, float scale_log2) {
    if (n0 + BN - 1 > w_first_pos) {
#pragma unroll
        for (int i = 0; i < BN / 8; i++) {
            const int col = n0 + 8 * i + 2 * t4;
            if (col > qpos0) sacc[4 * i + 0] = -INFINITY;
            if (col + 1 > qpos0) sacc[4 * i + 1] = -INFINITY;
            if (col > qpos1) sacc[4 * i + 2] = -INFINITY;
            if (col + 1 > qpos1) sacc[4 * i + 3] = -INFINITY;
        }
    }
    /* row maxima of the raw scores in 4 independent chains per row (a single chain is
     * BN/4 dependent steps), scaled once: scale_log2 > 0, so max(s) * scale rounds to
     * exactly max(s * scale) */
    float cm[2][4];
#pragma unroll
    for (int a = 0; a < 4; a++) cm[0][a] = cm[1][a] = -INFINITY;
#pragma unroll
    for (int i = 0; i < BN / 8; i++) {
        cm[0][i & 3] = fmaxf(cm[0][i & 3], fmaxf(sacc[4 * i], sacc[4 * i + 1]));
        cm[1][i & 3] = fmaxf(cm[1][i & 3], fmaxf(sacc[4 * i + 2], sacc[4 * i + 3]));
    }
    float mnew[2];
#pragma unroll
    for (int r = 0; r < 2; r++)
        mnew[r] = fmaxf(mx[r], fmaxf(fmaxf(cm[r][0], cm[r][1]), fmaxf(cm[r][2], cm[r][3])) *
                                   scale_log2);
    float base[2], cs[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
    bool moved = false;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        mnew[r] = fmaxf(mnew[r], __shfl_xor_sync(0xffffffffu, mnew[r], 1));
        mnew[r] = fmaxf(mnew[r], __shfl_xor_sync(0xffffffffu, mnew[r], 2));
        /* lazy rescale: the running max stays unless the row's max passed it by more than
         * FLASH_SM90_RESCALE_LOG2 (P <= 2^that then; O and l share the stale max, so
         * O / l is unchanged). mx = -inf (nothing seen yet) always moves, a fully
         * masked row (mnew = -inf) never */
        if (mnew[r] > mx[r] + (float)FLASH_SM90_RESCALE_LOG2) {
            alpha[r] = fast_exp2(mx[r] - mnew[r]);
            mx[r] = mnew[r];
            moved = true;
        } else {
            alpha[r] = 1.f;
        }
        base[r] = mx[r] == -INFINITY ? 0.f : mx[r];   /* fully masked row: no NaN */
    }
#pragma unroll
    for (int i = 0; i < BN / 8; i++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const float pe = fast_exp2(fmaf(sacc[4 * i + e], scale_log2, -base[e >> 1]));
            sacc[4 * i + e] = pe;
            if (SUMS) cs[e >> 1][(2 * i + (e & 1)) & 3] += pe;   /* row sums in 4 chains too */
        }
    }
    if (SUMS) {
#pragma unroll
        for (int r = 0; r < 2; r++)
            l[r] = l[r] * alpha[r] + ((cs[r][0] + cs[r][1]) + (cs[r][2] + cs[r][3]));
    }
    return __any_sync(0xffffffffu, moved);   /* does any row of this warp rescale O? */
}

/* after P_{j-1} V_{j-1} has landed: O to the new max where a row of the warp moved it
 * (rescale, warp-uniform), P_j packed as the A fragments of the next P V
 * (pa[4kk..4kk+3] = d[8kk..8kk+7] in pairs) */
template <typename T, int D, int BN>
__device__ __forceinline__ void rescale_pack(float (&oacc)[D / 2], uint32_t (&pa)[BN / 4],
                                             const float (&sacc)[BN / 2], const float (&alpha)[2],
                                             bool rescale) {
    if (rescale) {
#pragma unroll
        for (int i = 0; i < D / 8; i++) {
            oacc[4 * i + 0] *= alpha[0];
            oacc[4 * i + 1] *= alpha[0];
            oacc[4 * i + 2] *= alpha[1];
            oacc[4 * i + 3] *= alpha[1];
        }
    }
#pragma unroll
    for (int i = 0; i < BN / 4; i++) pa[i] = Pack<T>::two(sacc[2 * i], sacc[2 * i + 1]);
}

/* ---- wgmma m64nNk16, fp32 accumulators d[N/2] per thread ----
 * ss: D (+)= A(smem desc a) * B(smem desc b), both K-major; acc = 0 overwrites D.
 * rs: D += A(registers a[4]) * B(smem desc b), B MN-major (transpose bit set). */
/* the accumulators' operand lists in the asm text: %0..%31, %32..%63 */
#define FA90_R0_31 \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define FA90_R32_63 \
    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define FA90_ACC32 "{" FA90_R0_31 "}"
#define FA90_ACC36 "{" FA90_R0_31 ", %32, %33, %34, %35}"
#define FA90_ACC64 "{" FA90_R0_31 ", " FA90_R32_63 "}"
/* the accumulators as "+f" operands: four from d[i], 32 from d[b] */
#define FA90_O4(d, i) "+f"(d[i]), "+f"(d[(i) + 1]), "+f"(d[(i) + 2]), "+f"(d[(i) + 3])
#define FA90_O32(d, b) \
    FA90_O4(d, b), FA90_O4(d, (b) + 4), FA90_O4(d, (b) + 8), FA90_O4(d, (b) + 12), \
    FA90_O4(d, (b) + 16), FA90_O4(d, (b) + 20), FA90_O4(d, (b) + 24), FA90_O4(d, (b) + 28)
#define FA90_OUT32(d) FA90_O32(d, 0)
#define FA90_OUT36(d) FA90_O32(d, 0), FA90_O4(d, 32)
#define FA90_OUT64(d) FA90_O32(d, 0), FA90_O32(d, 32)

template <typename T, int N> struct Wgmma;
/* Wgmma<T, N> for T = __half / __nv_bfloat16, whose PTX type TY is "f16" / "bf16" */
#define FA90_WGMMA_64(T, TY) \
template <> struct Wgmma<T, 64> { \
    static __device__ __forceinline__ void ss(float *d, uint64_t a, uint64_t b, int acc) { \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n" \
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " FA90_ACC32 \
                     ", %32, %33, p, 1, 1, 0, 0;\n}\n" \
                     : FA90_OUT32(d) : "l"(a), "l"(b), "r"(acc)); \
    } \
    static __device__ __forceinline__ void rs(float *d, const uint32_t *a, uint64_t b) { \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n" \
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " FA90_ACC32 \
                     ", {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n" \
                     : FA90_OUT32(d) \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1)); \
    } \
};
#define FA90_WGMMA_128(T, TY) \
template <> struct Wgmma<T, 128> { \
    static __device__ __forceinline__ void ss(float *d, uint64_t a, uint64_t b, int acc) { \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n" \
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " " FA90_ACC64 \
                     ", %64, %65, p, 1, 1, 0, 0;\n}\n" \
                     : FA90_OUT64(d) : "l"(a), "l"(b), "r"(acc)); \
    } \
    static __device__ __forceinline__ void rs(float *d, const uint32_t *a, uint64_t b) { \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n" \
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " " FA90_ACC64 \
                     ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n" \
                     : FA90_OUT64(d) \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1)); \
    } \
};
/* m64n72k16 with A from registers: O (64 columns) plus 8 columns of P times ones, the row
 * sums (FLASH_SM90_ROWSUM_MMA at D = 64); rs only */
#define FA90_WGMMA_72(T, TY) \
template <> struct Wgmma<T, 72> { \
    static __device__ __forceinline__ void rs(float *d, const uint32_t *a, uint64_t b) { \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %41, 0;\n" \
                     "wgmma.mma_async.sync.aligned.m64n72k16.f32." TY "." TY " " FA90_ACC36 \
                     ", {%36, %37, %38, %39}, %40, p, 1, 1, 1;\n}\n" \
                     : FA90_OUT36(d) \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1)); \
    } \
};
FA90_WGMMA_64(__half, "f16")
FA90_WGMMA_64(__nv_bfloat16, "bf16")
FA90_WGMMA_128(__half, "f16")
FA90_WGMMA_128(__nv_bfloat16, "bf16")
#if FLASH_SM90_ROWSUM_MMA
FA90_WGMMA_72(__half, "f16")
FA90_WGMMA_72(__nv_bfloat16, "bf16")
#endif

/* ---- TMA, named barriers, register reallocation (the warp-specialized kernel only;
 * its mbarriers: mbarrier.cuh) ---- */
/* TMA: the box of the 4-d tensor map at coordinates (c0 innermost .. c3) into shared
 * memory at dst, completing its bytes on the mbarrier bar (async proxy) */
__device__ __forceinline__ void tma_load_4d(uint32_t dst, const CUtensorMap *map, int c0, int c1,
                                            int c2, int c3, uint32_t bar) {
    asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3, %4, %5}], [%6];\n"
                 ::"r"(dst), "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2),
                 "r"(c3), "r"(bar) : "memory");
}
/* the same for a 2-d tensor map (coordinates may be negative: those rows are zero-filled) */
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap *map, int c0, int c1,
                                            uint32_t bar) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3}], [%4];\n"
                 ::"r"(dst), "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
                 : "memory");
}
__device__ __forceinline__ void tma_prefetch_map(const CUtensorMap *map) {
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}
/* named barriers 1..15 (0 is __syncthreads): sync waits until `count` threads have
 * arrived (its own warps included); arrive adds the calling warps and goes on */
__device__ __forceinline__ void named_bar_sync(int id, int count) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void named_bar_arrive(int id, int count) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
/* per-warpgroup register budget (all four warps execute it, warp-uniform N) */
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}
__device__ __forceinline__ void st_shared_zero16(uint32_t addr) {
    asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(addr), "r"(0) : "memory");
}

/* ======================================================================
 * The cp.async kernel (GPT2_ENGINE_FLASH_WGMMA=legacy, block sizes below 8).
 * ====================================================================== */

/* cp.async of key rows [n0, n0+BN) of head h into a (BN, D) panel tile at shared
 * address dst, each row gathered through the block table; rows at or past kend are
 * zero-filled (never read from the cache: a zero V row times P = 0 stays finite). */
template <typename T, int D, int BN, int NT>
__device__ __forceinline__ void load_kv_tile(uint32_t dst, const T *cache, const int32_t *bt,
                                             int n0, int kend, int h, const FlashParams &p,
                                             int tid) {
    constexpr int CPR = D / 8;                 /* 16-byte chunks per row */
    constexpr int CHUNKS = BN * CPR;
    const int bmask = (1 << p.bs_shift) - 1;
    /* two chunks at a time: their block-table reads overlap, and the registers stay
     * few while every accumulator is pinned by the wgmma in flight (full unrolling
     * hoists all the reads and spills) */
#pragma unroll 2
    for (int i = 0; i < (CHUNKS + NT - 1) / NT; i++) {
        const int c = tid + i * NT;
        if (CHUNKS % NT != 0 && c >= CHUNKS) break;
        const int r = c / CPR, ch = c % CPR, pos = n0 + r;
        const T *src = cache;
        int bytes = 0;
        if (pos < kend) {
            const size_t blk = (size_t)bt[pos >> p.bs_shift];
            src = cache + (((blk * p.H + h) << p.bs_shift) + (pos & bmask)) * D + ch * 8;
            bytes = 16;
        }
        cp_async16(dst + tile_off<BN>(r, ch), src, bytes);
    }
}

template <typename T, int D, int NWG, int BN>
__global__ void __launch_bounds__(NWG * 128, 1)
flash_attention_sm90a_cpasync_kernel(const FlashParams p) {
    constexpr int NT = NWG * 128;
    constexpr int BM = 64 * NWG;
    constexpr int CPR = D / 8;
    constexpr uint32_t Q_BYTES = BM * D * 2, KV_BYTES = BN * D * 2;
    constexpr int SREG = BN / 2;    /* S accumulator floats per thread: 64 x BN / 128 */
    constexpr int OREG = D / 2;     /* O accumulator floats per thread */
    constexpr int PREG = BN / 4;    /* P as A fragments: 4 registers per 16 keys */
    static_assert(D == 64 || D == 128, "head size 64 or 128");
    static_assert(BN == 64 || BN == 128, "key tile of 64 or 128 (wgmma N of S)");
    static_assert((BM * CPR) % NT == 0, "Q chunks divide among the threads");

    extern __shared__ unsigned char smem_raw[];
    const uint32_t sbase = (smem_addr(smem_raw) + 1023u) & ~1023u;   /* swizzle period */
    const uint32_t sQ = sbase, sK = sQ + Q_BYTES, sV = sK + 2 * KV_BYTES;

    const int tid = threadIdx.x;
    /* warpgroup: query rows [64wg, 64wg+64); broadcast from lane 0 so that the compiler
     * sees it (and the per-warpgroup branches around wgmma) as warp-uniform */
    const int wg = __shfl_sync(0xffffffffu, tid >> 7, 0);
    const int wq = (tid >> 5) & 3;                 /* warp within the warpgroup: 16 rows */
    const int lane = tid & 31, g = lane >> 2, t4 = lane & 3;

    const int s = p.seq_begin + blockIdx.y;
    const int h = blockIdx.z;
    const int q0 = p.query_start_loc[s];
    const int q_len = p.query_start_loc[s + 1] - q0;
    const int n_qtiles = (q_len + BM - 1) / BM;
    if ((int)blockIdx.x >= n_qtiles) return;
    const int m0 = (n_qtiles - 1 - blockIdx.x) * BM;   /* heaviest tiles launch first */
    const int ctx = p.seq_lens[s] - q_len;              /* cached keys before this step's tokens */
    const int32_t *bt = p.block_tables + (size_t)s * p.bt_stride;
    const T *kc = reinterpret_cast<const T *>(p.k_cache);
    const T *vc = reinterpret_cast<const T *>(p.v_cache);

    /* keys of the block: up to the causal bound of its last row */
    const int kend = ctx + min(m0 + BM, q_len);
    const int n_tiles = (kend + BN - 1) / BN;
    /* this warpgroup's rows: tiles it needs (0 when all its rows are padding) */
    const int wrow = m0 + 64 * wg;
    const int w_first_pos = ctx + wrow;
    const int w_tiles = wrow < q_len ? (ctx + min(wrow + 64, q_len) - 1) / BN + 1 : 0;
    const int qpos0 = w_first_pos + 16 * wq + g, qpos1 = qpos0 + 8;   /* this thread's rows */

    /* prologue: Q (zero past q_len) and K tile 0 in one cp.async group */
    {
        const T *qb = reinterpret_cast<const T *>(p.q);
#pragma unroll
        for (int i = 0; i < BM * CPR / NT; i++) {
            const int c = tid + i * NT, r = c / CPR, ch = c % CPR, row = m0 + r;
            const T *src = qb;
            int bytes = 0;
            if (row < q_len) {
                src = qb + (size_t)(q0 + row) * p.q_stride + (size_t)h * D + ch * 8;
                bytes = 16;
            }
            cp_async16(sQ + tile_off<BM>(r, ch), src, bytes);
        }
        load_kv_tile<T, D, BN, NT>(sK, kc, bt, 0, kend, h, p, tid);
        cp_async_commit();
    }

    /* Q descriptors of this warpgroup's 64 rows, k-step kk adds panel kk/4 and 32 bytes
     * per step within it; K/V descriptors are built per tile from the slot base. */
    const uint32_t q_rows = sQ + 64 * wg * 128;

    float oacc[OREG], sacc[SREG];
    uint32_t pa[PREG];
#pragma unroll
    for (int i = 0; i < OREG; i++) oacc[i] = 0.f;
#pragma unroll
    for (int i = 0; i < SREG; i++) sacc[i] = 0.f;
#pragma unroll
    for (int i = 0; i < PREG; i++) pa[i] = 0u;
    float mx[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, alpha[2] = {1.f, 1.f};

    /* ---- the steps of one iteration, as lambdas so that each branch below holds a
     * whole wgmma pipeline (issue, commit, wait) and never shares one with another:
     * the compiler then keeps the groups asynchronous ---- */
    auto issue_s = [&](int j) {   /* S_j = Q K_j^T: D/16 k-steps of m64nBNk16 */
        const uint32_t kt = sK + (j & 1) * KV_BYTES;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            const uint32_t koff = (kk >> 2) * (BN * 128) + (kk & 3) * 32;
            const uint32_t qoff = (kk >> 2) * (BM * 128) + (kk & 3) * 32;
            Wgmma<T, BN>::ss(sacc, sw128_desc(q_rows + qoff, 16, 1024),
                             sw128_desc(kt + koff, 16, 1024), kk > 0);
        }
        wgmma_commit();
    };
    auto issue_pv = [&](int j) {   /* O += P_j V_j: BN/16 k-steps of m64nDk16 */
        const uint32_t vt = sV + (j & 1) * KV_BYTES;
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++)
            Wgmma<T, D>::rs(oacc, &pa[4 * kk], sw128_desc(vt + kk * 16 * 128, BN * 128, 1024));
        wgmma_commit();
    };
    /* next tiles' loads, issued while the tensor cores run: K_{j+1} into the slot of
     * K_{j-1}, V_j into the slot of V_{j-2} */
    auto load_next = [&](int j) {
        if (j + 1 < n_tiles)
            load_kv_tile<T, D, BN, NT>(sK + ((j + 1) & 1) * KV_BYTES, kc, bt, (j + 1) * BN, kend,
                                       h, p, tid);
        if (j < n_tiles)
            load_kv_tile<T, D, BN, NT>(sV + (j & 1) * KV_BYTES, vc, bt, j * BN, kend, h, p, tid);
        cp_async_commit();
    };
    bool moved = false;   /* the last softmax moved a row max of this warp: O rescales */
    auto softmax = [&](int j) {
        moved = softmax_tile<BN>(sacc, mx, l, alpha, j * BN, w_first_pos, qpos0, qpos1, t4,
                                 p.scale_log2);
    };
    auto rescale_pack_p = [&]() { rescale_pack<T, D, BN>(oacc, pa, sacc, alpha, moved); };

    /* Iteration j (0 .. n_tiles, the same count for every thread: one barrier each;
     * after it K_j and V_{j-1} have landed and every warpgroup is done with K_{j-1}
     * and V_{j-2}). This warpgroup, which needs tiles [0, w_tiles):
     *   j == 0           S_0, softmax
     *   0 < j < w_tiles  S_j and P_{j-1} V_{j-1}; softmax of S_j while P V runs
     *   j == w_tiles     P_{j-1} V_{j-1} only
     *   j >  w_tiles     loads only (its rows are done) */
    for (int j = 0; j <= n_tiles; j++) {
        cp_async_wait<0>();
        fence_proxy_async();
        __syncthreads();
        if (j < w_tiles && j > 0) {
            reg_fence(oacc);
            reg_fence(sacc);
            reg_fence(pa);
            wgmma_fence();
            issue_s(j);
            issue_pv(j - 1);
            load_next(j);
            wgmma_wait<1>();   /* S_j done, P V may still run */
            reg_fence(sacc);
            softmax(j);
            wgmma_wait<0>();
            reg_fence(oacc);
            reg_fence(pa);
            rescale_pack_p();
        } else if (j < w_tiles) {   /* j == 0 */
            reg_fence(sacc);
            wgmma_fence();
            issue_s(0);
            load_next(0);
            wgmma_wait<0>();
            reg_fence(sacc);
            softmax(0);
            rescale_pack_p();
        } else if (j == w_tiles && j > 0) {
            reg_fence(oacc);
            reg_fence(pa);
            wgmma_fence();
            issue_pv(j - 1);
            load_next(j);
            wgmma_wait<0>();
            reg_fence(oacc);
        } else {
            load_next(j);
        }
    }

    /* out = O / l, l summed over the quad; rows past q_len are never written */
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
        inv[r] = l[r] > 0.f ? 1.f / l[r] : 0.f;
    }
    T *ob = reinterpret_cast<T *>(p.out);
    const size_t ld = (size_t)p.H * D;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = wrow + 16 * wq + g + 8 * r;
        if (row >= q_len) continue;
        T *orow = ob + (size_t)(q0 + row) * ld + (size_t)h * D;
#pragma unroll
        for (int i = 0; i < D / 8; i++)
            *reinterpret_cast<uint32_t *>(orow + 8 * i + 2 * t4) =
                Pack<T>::two(oacc[4 * i + 2 * r] * inv[r], oacc[4 * i + 2 * r + 1] * inv[r]);
    }
}

/* ======================================================================
 * The warp-specialized TMA kernel (the default; see the file comment).
 * ====================================================================== */

/* A q tile of the TMA kernel: its sequence, head and first row, the sequence's query
 * range and cached context, and the key tiles it reads (up to its last row's bound). */
struct WsTile {
    int seq, h, m0, q0, q_len, seq_len, ctx, n_tiles;
};

/* q tile b of the launch's linear order (b < num_seqs * H * n_qt); false when it is
 * empty (a sequence with fewer tiles than the longest) or the input is invalid
 * (seq_len < q_len: skipped rather than hang). Tile t of a (sequence, head) pair is its
 * t-th heaviest (t = 0 holds its last rows).
 *   sched bit 0: longest-first. The pairs are cut into sections of p.group (sized on
 *     the host so that a section's K/V stays in L2) and a section's tiles go t = 0 for
 *     each of its pairs, then t = 1, ...: short tiles finish the launch instead of a
 *     long one starting at its end, and tiles that read the same K/V run close together.
 *     Without it: t fastest, then the sequence, then the head.
 *   sched bit 1: tiles aligned to the sequence's end, m0 = q_len - (t+1)*BM, so the one
 *     partial tile is the lightest (its rows before 0 are masked and never written),
 *     not the heaviest. Without it: aligned to the start.
 *   sched bit 2 (the host's choice of grid): persistent, one CTA per SM taking tiles
 *     b = blockIdx.x + k * gridDim.x; without it, one CTA per tile.
 *   sched bit 3: persistent, the tiles drawn in this order from p.tile_counter as the
 *     CTAs get free (as the hardware hands out CTAs, without a CTA's start-up per tile).
 *   The launcher's default is 15, or without a counter 7 for queries up to 1024 tokens
 *   and 3 above (ws_schedule_from_env). */
template <int BM, int BN>
__device__ __forceinline__ bool ws_tile(const FlashParams &p, int b, WsTile &w) {
    int t, seq, h;
    if (p.sched & 1) {
        const int pairs = p.num_seqs * p.H, span = p.group * p.n_qt;
        const int sec = b / span, r = b - sec * span;
        const int gs = min(p.group, pairs - sec * p.group);   /* the last section may be short */
        t = r / gs;
        const int pair = sec * p.group + (r - t * gs);
        seq = pair / p.H;
        h = pair - seq * p.H;
    } else {
        t = b % p.n_qt;
        const int sh = b / p.n_qt;
        seq = sh % p.num_seqs;
        h = sh / p.num_seqs;
    }
    w.seq = p.seq_begin + seq;
    w.h = h;
    w.q0 = p.query_start_loc[w.seq];
    w.q_len = p.query_start_loc[w.seq + 1] - w.q0;
    const int n_qtiles = (w.q_len + BM - 1) / BM;
    if (t >= n_qtiles) return false;
    w.m0 = (p.sched & 2) ? w.q_len - (t + 1) * BM : (n_qtiles - 1 - t) * BM;
    w.seq_len = p.seq_lens[w.seq];
    w.ctx = w.seq_len - w.q_len;                    /* cached keys before this step's tokens */
    /* keys of the tile: up to the causal bound of its last row; every consumer
     * warpgroup goes through all n_tiles (>= 1) tiles' barriers, computing its own */
    const int kend = w.ctx + min(w.m0 + BM, w.q_len);
    if (kend <= 0) return false;
    w.n_tiles = (kend + BN - 1) / BN;
    return true;
}

/* register budgets after setmaxnreg, producer warpgroup / each consumer warpgroup:
 * 128*P + NWG*128*C must not exceed the registers the CTA holds at launch. The producer
 * takes what the consumers leave (at 4 consumer warpgroups, 24: its loop spills 20 bytes,
 * one warp's stack traffic beside the TMA it issues) */
constexpr int ws_producer_regs(int nwg) { return nwg == 2 ? 40 : nwg == 3 ? 32 : 24; }
constexpr int ws_consumer_regs(int nwg) { return nwg == 2 ? 232 : nwg == 3 ? 160 : 112; }
/* the registers a thread holds at launch: __launch_bounds__(threads, 1) lets the compiler
 * take 65536 / threads, rounded down to the allocation granule of 8; setmaxnreg.inc waits
 * for registers that a setmaxnreg.dec of the CTA has released, so the budgets must fit
 * in this allocation (not in 65536: 384 threads hold 64512) or the consumers hang */
constexpr int ws_launch_regs(int nwg) { return (65536 / ((nwg + 1) * 128)) & ~7; }
/* the TMA kernel's P V GEMM also sums P's rows (8 columns more, against a panel of ones);
 * at D = 128 the 2 KB panel would not fit beside 3 stages */
constexpr bool ws_rowsum_mma(int d) { return FLASH_SM90_ROWSUM_MMA && d == 64; }
constexpr uint32_t ONES_BYTES = 16 * 128;   /* the ones: 16 rows (a k-step) of 128 bytes */
/* the TMA kernel's dynamic shared memory with QB Q buffers: QB Q tiles, ST K and ST V
 * tiles, the ones (RS), the 4*ST + 8 mbarriers, s_tile, + alignment of the base to 1024 */
constexpr size_t ws_smem_bytes(int D, int NWG, int BN, int ST, int QB) {
    return (size_t)(QB * 64 * NWG + 2 * ST * BN) * D * 2 + (ws_rowsum_mma(D) ? ONES_BYTES : 0) +
           (4 * ST + 8) * 8 + 8 + 1024;
}
constexpr size_t WS_SMEM_MAX = 227 * 1024;
/* Q buffers: two (the next tile's Q loads during this one) where they fit */
constexpr int ws_q_buffers(int D, int NWG, int BN, int ST) {
    return FLASH_SM90_Q_TMA && ws_smem_bytes(D, NWG, BN, ST, 2) <= WS_SMEM_MAX ? 2 : 1;
}
/* the CTA's registers under the budgets */
constexpr int ws_budget_regs(int nwg) {
    return 128 * ws_producer_regs(nwg) + nwg * 128 * ws_consumer_regs(nwg);
}

template <typename T, int D, int NWG, int BN, int ST, int PP>
__global__ void __launch_bounds__((NWG + 1) * 128, 1)
flash_attention_sm90a_kernel(const FlashParams p, const __grid_constant__ CUtensorMap tm_k,
                             const __grid_constant__ CUtensorMap tm_v,
                             const __grid_constant__ CUtensorMap tm_q) {
    constexpr int BM = 64 * NWG;
    constexpr int CPR = D / 8;
    constexpr int LOG2_BN = BN == 128 ? 7 : 6;
    constexpr uint32_t Q_BYTES = BM * D * 2, KV_BYTES = BN * D * 2;
    constexpr int SREG = BN / 2;    /* S accumulator floats per thread: 64 x BN / 128 */
    constexpr bool RS = ws_rowsum_mma(D);
    constexpr int ON = D + (RS ? 8 : 0);   /* N of the P V GEMM: O, then the row sums */
    constexpr int OREG = ON / 2;    /* O (and row sum) accumulator floats per thread */
    constexpr int PREG = BN / 4;    /* P as A fragments: 4 registers per 16 keys */
    static_assert(D == 64 || D == 128, "head size 64 or 128");
    static_assert(BN == 64 || BN == 128, "key tile of 64 or 128 (wgmma N of S)");
    static_assert(NWG >= 2 && NWG <= 4, "two to four consumer warpgroups");
    static_assert(ST >= 2, "at least two K/V stages");
    constexpr int QB = ws_q_buffers(D, NWG, BN, ST);
    static_assert(ws_budget_regs(NWG) <= (NWG + 1) * 128 * ws_launch_regs(NWG),
                  "register budgets exceed the launch's allocation");
    static_assert((64 * CPR) % 128 == 0, "Q chunks divide among a warpgroup");

    extern __shared__ unsigned char smem_raw[];
    const uint32_t sbase = (smem_addr(smem_raw) + 1023u) & ~1023u;   /* swizzle period */
    const uint32_t sQ = sbase, sK = sQ + QB * Q_BYTES, sV = sK + ST * KV_BYTES;
    /* RS: the ones after the V slots (1024-aligned; every row the same, so the swizzle
     * does not matter) */
    const uint32_t sOnes = sV + ST * KV_BYTES;
    /* mbarriers after the tiles: full_k[ST], full_v[ST] (TMA landed: 1 arrival + bytes),
     * empty_k[ST], empty_v[ST] (slot free: one arrival per consumer warp) */
    const uint32_t bars = sOnes + (RS ? ONES_BYTES : 0);
    auto full_k = [&](int s) { return bars + 8u * s; };
    auto full_v = [&](int s) { return bars + 8u * (ST + s); };
    auto empty_k = [&](int s) { return bars + 8u * (2 * ST + s); };
    auto empty_v = [&](int s) { return bars + 8u * (3 * ST + s); };
    /* the dynamic schedule's ring of two tile indices (sched bit 3): tile_full[i] (count 1:
     * the producer wrote s_tile[i]), tile_empty[i] (count 4*NWG: every consumer warp read
     * it); s_tile after the barriers */
    auto tile_full = [&](int i) { return bars + 8u * (4 * ST + i); };
    auto tile_empty = [&](int i) { return bars + 8u * (4 * ST + 2 + i); };
    /* Q by TMA (q_tma): full_q[i] (count 1 + Q_BYTES), empty_q[i] (count 4*NWG: every
     * consumer warp's last S GEMM of the tile in buffer i has completed); the CTA's k-th
     * q tile (of those it computes) takes buffer k % QB for the (k / QB)-th time */
    auto full_q = [&](int i) { return bars + 8u * (4 * ST + 4 + i); };
    auto empty_q = [&](int i) { return bars + 8u * (4 * ST + 6 + i); };
    volatile int *s_tile = reinterpret_cast<volatile int *>(
        smem_raw + (bars + 8u * (4 * ST + 8) - smem_addr(smem_raw)));
    /* rows of an end-aligned tile never pass q_len, so the box never reads past the
     * batch's last token (rows before token 0 are zero-filled) */
    const bool q_tma = (QB == 2 || FLASH_SM90_Q_TMA == 2) && p.q_tma && (p.sched & 2) != 0;

    const int tid = threadIdx.x;
    /* warpgroup 0 produces, 1..NWG consume; broadcast from lane 0 so that the compiler
     * sees it (and the branches around setmaxnreg and wgmma) as warp-uniform */
    const int wg = __shfl_sync(0xffffffffu, tid >> 7, 0);
    const int lane = tid & 31;

    if (tid == 0) {
        for (int s = 0; s < ST; s++) {
            mbar_init(full_k(s), 1);
            mbar_init(full_v(s), 1);
            mbar_init(empty_k(s), 4 * NWG);
            mbar_init(empty_v(s), 4 * NWG);
        }
        for (int i = 0; i < 2; i++) {
            mbar_init(tile_full(i), 1);
            mbar_init(tile_empty(i), 4 * NWG);
            mbar_init(full_q(i), 1);
            mbar_init(empty_q(i), 4 * NWG);
        }
        mbar_fence_init();
    }
    if (RS && tid < ONES_BYTES / 16) {   /* the ones, visible to wgmma after the barrier */
        asm volatile("st.shared.v4.b32 [%0], {%1, %1, %1, %1};\n" ::"r"(sOnes + 16 * tid),
                     "r"(Pack<T>::two(1.f, 1.f)) : "memory");
        fence_proxy_async();
    }
    __syncthreads();   /* the last CTA-wide barrier: the producer's idle warps leave below */

    /* The CTA's q tiles, in turn: the k-th is b = blockIdx.x + k * gridDim.x (one per CTA
     * unless the launch is persistent, ws_tile), or with sched bit 3 the next one drawn
     * from p.tile_counter by the producer, which passes it to the consumers through
     * s_tile. The K/V ring runs on across them: key tile j of a q tile is the CTA's
     * (jj+j)-th (jj: the key tiles of its earlier q tiles) and takes slot (jj+j) % ST for
     * the ((jj+j)/ST)-th time, for the producer and the consumers alike, so the producer
     * loads the next q tile's keys while the consumers finish this one. */
    const int n_items = p.num_seqs * p.H * p.n_qt;
    const bool dynamic = (p.sched & 8) != 0;
    auto static_tile = [&](int k) {
        const long long b = blockIdx.x + (long long)k * gridDim.x;
        return b < n_items ? (int)b : -1;
    };

    if (wg == 0) {
        /* ---- producer: warp 0 issues the TMA loads, one lane per (page, 64-column
         * panel) box of a tile: npg = BN / R pages of R = min(block_size, BN) rows ---- */
        setmaxnreg_dec<ws_producer_regs(NWG)>();
        if (tid >= 32) return;
        const int r_shift = min(p.bs_shift, LOG2_BN);
        const int page = lane & ((BN >> r_shift) - 1), panel = lane >> (LOG2_BN - r_shift);
        const bool active = panel < D / 64;
        const uint32_t dst_off = panel * (BN * 128) + (page << r_shift) * 128;
        if (lane == 0) {
            tma_prefetch_map(&tm_k);
            tma_prefetch_map(&tm_v);
            if (q_tma) tma_prefetch_map(&tm_q);
        }
        /* the CTA's k-th q tile, -1 after the last. Dynamic: lane 0 draws it and publishes
         * it in s_tile[k % 2]; a CTA drawing past the end counts itself out on
         * tile_counter[1], and the last one to do so leaves both counters zero for the
         * next launch (every CTA has drawn its last by then) */
        auto next_tile = [&](int k) {
            if (!dynamic) return static_tile(k);
            int b = 0;
            if (lane == 0) {
                b = atomicAdd(p.tile_counter, 1);
                if (b >= n_items) {
                    b = -1;
                    __threadfence();
                    if (atomicAdd(p.tile_counter + 1, 1) == (int)gridDim.x - 1) {
                        atomicExch(p.tile_counter, 0);
                        atomicExch(p.tile_counter + 1, 0);
                    }
                }
                mbar_wait(tile_empty(k & 1), ((k >> 1) & 1) ^ 1);
                s_tile[k & 1] = b;
                mbar_arrive(tile_full(k & 1));
            }
            return __shfl_sync(0xffffffffu, b, 0);
        };
        int jj = 0;
        unsigned qk = 0;   /* q tiles computed (Q buffer uses) */
        for (int k = 0;; k++) {
            const int b = next_tile(k);
            if (b < 0) break;
            WsTile w;
            if (!ws_tile<BM, BN>(p, b, w)) continue;
            if (q_tma) {   /* Q first: one box of (64 columns, BM rows) per panel */
                const int qb = qk % QB;
                mbar_wait(empty_q(qb), ((qk / QB) & 1) ^ 1);
                if (lane == 0) {
                    mbar_arrive_expect_tx(full_q(qb), Q_BYTES);
#pragma unroll
                    for (int n = 0; n < D / 64; n++)
                        tma_load_2d(sQ + qb * Q_BYTES + n * (BM * 128), &tm_q, w.h * D + n * 64,
                                    w.q0 + w.m0, full_q(qb));
                }
                __syncwarp();
            }
            qk++;
            const int32_t *bt = p.block_tables + (size_t)w.seq * p.bt_stride;
            const int last_blk = (w.seq_len - 1) >> p.bs_shift;   /* never read the table past it */
            /* physical block and row within it of this lane's box of tile j; boxes past the
             * sequence's last block re-read that block (finite data, masked or zeroed later) */
            auto box_of = [&](int j, int &row) {
                const int pos = j * BN + (page << r_shift);
                row = pos & ((1 << p.bs_shift) - 1);
                return active ? bt[min(pos >> p.bs_shift, last_blk)] : 0;
            };
            int row = 0, blk = box_of(0, row);
            for (int j = 0; j < w.n_tiles; j++) {
                const int slot = (jj + j) % ST;
                const uint32_t parity = (((jj + j) / ST) & 1) ^ 1;   /* use u waits for release u-1 */
                int row_next = 0, blk_next = 0;
                if (j + 1 < w.n_tiles) blk_next = box_of(j + 1, row_next);   /* in flight meanwhile */
                mbar_wait(empty_k(slot), parity);
                if (lane == 0) mbar_arrive_expect_tx(full_k(slot), KV_BYTES);
                __syncwarp();
                if (active)
                    tma_load_4d(sK + slot * KV_BYTES + dst_off, &tm_k, panel * 64, row, w.h, blk,
                                full_k(slot));
                mbar_wait(empty_v(slot), parity);
                if (lane == 0) mbar_arrive_expect_tx(full_v(slot), KV_BYTES);
                __syncwarp();
                if (active)
                    tma_load_4d(sV + slot * KV_BYTES + dst_off, &tm_v, panel * 64, row, w.h, blk,
                                full_v(slot));
                blk = blk_next;
                row = row_next;
            }
            jj += w.n_tiles;
        }
        return;
    }

    /* ---- consumers: warpgroup c owns query rows [64c, 64c+64) of the block ---- */
    setmaxnreg_inc<ws_consumer_regs(NWG)>();
    const int c = wg - 1;
    const int ct = tid & 127;                      /* thread within the warpgroup */
    const int wq = (tid >> 5) & 3;                 /* warp within the warpgroup: 16 rows */
    const int g = lane >> 2, t4 = lane & 3;
    const int bar_wg = 1 + NWG + c;                /* named barrier of this warpgroup alone */
    const uint32_t q_rows = sQ + 64 * c * 128;
    /* wgmma descriptors of this warpgroup's Q rows (buffer 0) and of K / V slot 0, built once */
    /* V's: the leading byte offset is the stride to the next 64 columns, D's second panel
     * at D = 128 and the ones at RS, where v_advance keeps it pointing at them */
    const uint64_t q_desc = sw128_desc(q_rows, 16, 1024), k_desc = sw128_desc(sK, 16, 1024),
                   v_desc = sw128_desc(sV, RS ? sOnes - sV : BN * 128, 1024);
    auto v_advance = [](uint64_t desc, uint32_t bytes) {
        return desc_advance(desc, bytes) - (RS ? (uint64_t)(bytes >> 4) << 16 : 0);
    };
    /* a slot is released per warp, once its wgmma reading the slot has completed */
    auto release = [&](uint32_t bar) {
        if (lane == 0) mbar_arrive(bar);
    };
    /* the CTA's k-th q tile, -1 after the last (dynamic: as the producer drew it) */
    auto next_tile = [&](int k) {
        if (!dynamic) return static_tile(k);
        mbar_wait(tile_full(k & 1), (k >> 1) & 1);
        const int b = s_tile[k & 1];
        __syncwarp();
        if (lane == 0) mbar_arrive(tile_empty(k & 1));
        return b;
    };
    int jj = 0;
    unsigned qk = 0;   /* q tiles computed (Q buffer uses) */
    for (int k = 0;; k++) {
        const int b = next_tile(k);
        if (b < 0) break;
        WsTile w;
        if (!ws_tile<BM, BN>(p, b, w)) continue;
        const int qb = qk % QB;
        const uint32_t qpar = (qk / QB) & 1;
        qk++;
        const uint64_t qd = desc_advance(q_desc, qb * Q_BYTES);
        const int q0 = w.q0, q_len = w.q_len, seq_len = w.seq_len, ctx = w.ctx, h = w.h;
        const int n_tiles = w.n_tiles;
        auto slot = [&](int j) { return (int)((unsigned)(jj + j) % ST); };   /* jj + j >= 0 */
        auto par = [&](int j) { return ((unsigned)(jj + j) / ST) & 1u; };
        const int wrow = w.m0 + 64 * c;
        const int w_first_pos = ctx + wrow;
        const int qpos0 = w_first_pos + 16 * wq + g, qpos1 = qpos0 + 8;   /* this thread's rows */
        /* key tiles this warpgroup needs: up to the causal bound of its last row below q_len
         * (none when all its rows lie outside [0, q_len)); tiles n_mine .. n_tiles-1 are
         * fully masked for it: it only waits for them and releases them (skip_tiles) */
        const int my_last = min(wrow + 63, q_len - 1);
        const int n_mine = !FLASH_SM90_WS_SKIP ? n_tiles
                         : my_last < max(wrow, 0) ? 0 : min(n_tiles, (ctx + my_last + BN) / BN);

        /* this warpgroup's 64 Q rows: by TMA (the producer's, usually landed already), or
         * (zero outside [0, q_len)) by cp.async, visible to its wgmma; the GEMMs of the q
         * tile before that read this buffer have all completed */
        if (q_tma) {
            mbar_wait(full_q(qb), qpar);
        } else {
            const T *qsrc = reinterpret_cast<const T *>(p.q);
#pragma unroll
            for (int i = 0; i < 64 * CPR / 128; i++) {
                const int cc = ct + i * 128, r = 64 * c + cc / CPR, ch = cc % CPR, qrow = w.m0 + r;
                const T *src = qsrc;
                int bytes = 0;
                if (qrow >= 0 && qrow < q_len) {
                    src = qsrc + (size_t)(q0 + qrow) * p.q_stride + (size_t)h * D + ch * 8;
                    bytes = 16;
                }
                cp_async16(sQ + qb * Q_BYTES + tile_off<BM>(r, ch), src, bytes);
            }
            cp_async_commit();
            cp_async_wait<0>();
            fence_proxy_async();
            named_bar_sync(bar_wg, 128);
        }
        /* ping-pong: warpgroup c issues its GEMMs of a tile after warpgroup c-1 has issued
         * its own (named barrier 1+c: 128 waiting + 128 arriving threads), so one
         * warpgroup's softmax runs under the other's GEMMs. The last warpgroup opens the
         * first round and skips its arrival after the last tile: every barrier then sees
         * exactly n_tiles arrivals, n_tiles syncs per q tile. */
        auto pp_sync = [&]() {
            if (PP) named_bar_sync(1 + c, 256);
        };
        auto pp_arrive = [&](int j) {
            if (PP && !(c == NWG - 1 && j == n_tiles - 1)) named_bar_arrive(1 + (c + 1) % NWG, 256);
        };
        if (PP && c == NWG - 1) named_bar_arrive(1, 256);

        float oacc[OREG], sacc[SREG];
        uint32_t pa[PREG];
#pragma unroll
        for (int i = 0; i < OREG; i++) oacc[i] = 0.f;
#pragma unroll
        for (int i = 0; i < SREG; i++) sacc[i] = 0.f;
#pragma unroll
        for (int i = 0; i < PREG; i++) pa[i] = 0u;
        float mx[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, alpha[2] = {1.f, 1.f};

        auto issue_s = [&](int j) {   /* S_j = Q K_j^T: D/16 k-steps of m64nBNk16 */
            const uint64_t kd = desc_advance(k_desc, slot(j) * KV_BYTES);
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
                const uint32_t koff = (kk >> 2) * (BN * 128) + (kk & 3) * 32;
                const uint32_t qoff = (kk >> 2) * (BM * 128) + (kk & 3) * 32;
                Wgmma<T, BN>::ss(sacc, desc_advance(qd, qoff), desc_advance(kd, koff), kk > 0);
            }
            wgmma_commit();
        };
        auto issue_pv = [&](int j) {   /* O += P_j V_j: BN/16 k-steps of m64nDk16 */
            const uint64_t vd = v_advance(v_desc, slot(j) * KV_BYTES);
#pragma unroll
            for (int kk = 0; kk < BN / 16; kk++)
                Wgmma<T, ON>::rs(oacc, &pa[4 * kk], v_advance(vd, kk * 16 * 128));
            wgmma_commit();
        };
        bool moved = false;   /* the last softmax moved a row max of this warp: O rescales */
        auto softmax = [&](int j) {
            moved = softmax_tile<BN, !RS>(sacc, mx, l, alpha, j * BN, w_first_pos, qpos0, qpos1,
                                          t4, p.scale_log2);
        };
        auto rescale_pack_p = [&]() { rescale_pack<T, ON, BN>(oacc, pa, sacc, alpha, moved); };

        /* tiles nobody in this warpgroup attends to: the ping-pong rounds and the slot
         * releases of the others still happen (a release only after the tile's full
         * barrier: arriving earlier would count toward the slot's previous use) */
        auto skip_tiles = [&](int from) {
            for (int j = from; j < n_tiles; j++) {
                mbar_wait(full_k(slot(j)), par(j));
                pp_sync();
                pp_arrive(j);
                release(empty_k(slot(j)));
                mbar_wait(full_v(slot(j)), par(j));
                release(empty_v(slot(j)));
            }
        };
        /* Q's buffer is free once this warp's last S GEMM of the tile has completed */
        auto release_q = [&]() {
            if (q_tma) release(empty_q(qb));
        };
        if (n_mine == 0) {
            release_q();
            skip_tiles(0);
            jj += n_tiles;
            continue;
        }

        /* tile 0: S_0 and its softmax */
        mbar_wait(full_k(slot(0)), par(0));
        pp_sync();
        reg_fence(sacc);
        wgmma_fence();
        issue_s(0);
        pp_arrive(0);
        wgmma_wait<0>();
        reg_fence(sacc);
        release(empty_k(slot(0)));
        if (n_mine == 1) release_q();
        softmax(0);
        rescale_pack_p();
        /* tiles 1 .. n_mine-1: S_j and P_{j-1} V_{j-1}, the softmax of S_j while P V runs */
        for (int j = 1; j < n_mine; j++) {
            mbar_wait(full_k(slot(j)), par(j));
            mbar_wait(full_v(slot(j - 1)), par(j - 1));
            pp_sync();
            reg_fence(oacc);
            reg_fence(sacc);
            reg_fence(pa);
            wgmma_fence();
            issue_s(j);
            issue_pv(j - 1);
            pp_arrive(j);
            wgmma_wait<1>();   /* S_j done, P V may still run */
            reg_fence(sacc);
            release(empty_k(slot(j)));
            if (j == n_mine - 1) release_q();
            softmax(j);
            wgmma_wait<0>();
            reg_fence(oacc);
            reg_fence(pa);
            release(empty_v(slot(j - 1)));
            rescale_pack_p();
        }
        /* last P V. Its tile may end past seq_len: those V rows hold whatever the cache has
         * there (unwritten slots, or the re-read last block) and P = 0 would not cancel a
         * NaN, so this warpgroup zeroes them first (the other consumer may write the same
         * zeros: every write there is a zero) */
        {
            const int j = n_mine - 1;
            mbar_wait(full_v(slot(j)), par(j));
            const int vz = seq_len - j * BN;   /* >= 1: rows [vz, BN) lie past the sequence */
            if (vz < BN) {
                const uint32_t vt = sV + slot(j) * KV_BYTES;
                for (int i = ct; i < (BN - vz) * CPR; i += 128)
                    st_shared_zero16(vt + tile_off<BN>(vz + i / CPR, i % CPR));
                fence_proxy_async();
                named_bar_sync(bar_wg, 128);
            }
            reg_fence(oacc);
            reg_fence(pa);
            wgmma_fence();
            issue_pv(j);
            wgmma_wait<0>();
            reg_fence(oacc);
            release(empty_v(slot(j)));   /* the producer reuses this slot for tile j + ST */
            if (n_mine < n_tiles) skip_tiles(n_mine);
        }

        /* out = O / l, l summed over the quad; rows outside [0, q_len) are never written */
        float inv[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            if (RS) {   /* column D + 2 t4 of row g + 8r: the whole row's sum */
                l[r] = oacc[D / 2 + 2 * r];
            } else {
                l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
                l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
            }
            inv[r] = l[r] > 0.f ? 1.f / l[r] : 0.f;
        }
        T *ob = reinterpret_cast<T *>(p.out);
        const size_t ld = (size_t)p.H * D;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int orow_i = wrow + 16 * wq + g + 8 * r;
            if (orow_i < 0 || orow_i >= q_len) continue;
            T *orow = ob + (size_t)(q0 + orow_i) * ld + (size_t)h * D;
#pragma unroll
            for (int i = 0; i < D / 8; i++)
                *reinterpret_cast<uint32_t *>(orow + 8 * i + 2 * t4) =
                    Pack<T>::two(oacc[4 * i + 2 * r] * inv[r], oacc[4 * i + 2 * r + 1] * inv[r]);
        }
        jj += n_tiles;
    }
}

/* ---- host side ---- */

/* cuTensorMapEncodeTiled, looked up in the driver through the runtime (the library does
 * not link libcuda); resolved once, a pure function pointer afterwards. nullptr when
 * the driver lacks it. */
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
    static const PFN_cuTensorMapEncodeTiled_v12000 fn = []() {
        void *f = nullptr;
        cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
#if CUDART_VERSION >= 12050
        cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000,
                                                         cudaEnableDefault, &q);
#else
        cudaError_t e = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &f, cudaEnableDefault,
                                                &q);
#endif
        if (e != cudaSuccess || q != cudaDriverEntryPointSuccess) {
            (void)cudaGetLastError();
            f = nullptr;
        }
        return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
    }();
    return fn;
}

/* Both maps' common part: fp16 / bf16 elements, element strides 1, 128B-swizzled boxes
 * (the panel layout the wgmma descriptors read), 256-byte L2 promotion, no OOB fill. */
template <int RANK>
CUresult encode_swizzled(PFN_cuTensorMapEncodeTiled_v12000 encode, CUtensorMap *map, int dtype,
                         const void *base, const cuuint64_t (&dims)[RANK],
                         const cuuint64_t (&strides)[RANK - 1], const cuuint32_t (&box)[RANK]) {
    cuuint32_t estr[RANK];
    for (int i = 0; i < RANK; i++) estr[i] = 1;
    return encode(map, dtype == 1 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                  RANK, const_cast<void *>(base), dims, strides, box, estr,
                  CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                  CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
}

/* The outermost dimension of a map whose extent the launcher does not know (the cache's
 * blocks, q's tokens): as many units of unit_bytes as 2^38 bytes hold (past any GPU's
 * memory), so every unit a kernel can name is in bounds; 0 if none fits. */
cuuint64_t units_in_address_space(cuuint64_t unit_bytes) {
    const cuuint64_t n = (1ull << 38) / unit_bytes;
    return n > 0x7fffffffull ? 0x7fffffffull : n;
}

/* The tensor map of one layer's K or V cache (num_blocks, H, block_size, D) viewed as
 * the 4-d tensor {D, block_size, H, blocks} (innermost first; strides in bytes of a
 * row, a page, a block). A box is {64, rows, 1, 1}: one 64-column panel of `rows`
 * rows of one page of one head (the kernel never asks for a block past a sequence's). */
CUresult encode_kv_map(PFN_cuTensorMapEncodeTiled_v12000 encode, CUtensorMap *map,
                       const void *cache, int dtype, int H, int D, int block_size, int rows) {
    const cuuint64_t row_b = (cuuint64_t)D * 2, page_b = row_b * block_size, blk_b = page_b * H;
    const cuuint64_t nblk = units_in_address_space(blk_b);
    if (nblk == 0) return CUDA_ERROR_INVALID_VALUE;
    return encode_swizzled<4>(encode, map, dtype, cache,
                              {(cuuint64_t)D, (cuuint64_t)block_size, (cuuint64_t)H, nblk},
                              {row_b, page_b, blk_b}, {64, (cuuint32_t)rows, 1, 1});
}

/* The tensor map of q (tokens, q_stride elements, of which the first H*D are the heads'
 * queries) as the 2-d tensor {H*D, tokens}, boxes {64, BM}: one 64-column panel of a q
 * tile's BM rows, swizzled like the K/V boxes (the kernel never asks for a row past a
 * sequence's last query). */
CUresult encode_q_map(PFN_cuTensorMapEncodeTiled_v12000 encode, CUtensorMap *map, const void *q,
                      int dtype, int H, int D, int q_stride, int bm) {
    const cuuint64_t row_b = (cuuint64_t)q_stride * 2, rows = units_in_address_space(row_b);
    if (rows == 0 || q_stride < H * D) return CUDA_ERROR_INVALID_VALUE;
    return encode_swizzled<2>(encode, map, dtype, q, {(cuuint64_t)H * D, rows}, {row_b},
                              {64, (cuuint32_t)bm});
}

template <typename T, int D, int NWG, int BN>
cudaError_t launch_cpasync(const FlashParams &p, int num_seqs, int max_query_len,
                           cudaStream_t stream) {
    constexpr int BM = 64 * NWG;
    constexpr size_t smem = (size_t)(BM + 4 * BN) * D * sizeof(T) + 1024;   /* + alignment */
    auto kern = flash_attention_sm90a_cpasync_kernel<T, D, NWG, BN>;
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)smem);
    if (e != cudaSuccess) return e;
    dim3 grid((max_query_len + BM - 1) / BM, num_seqs, p.H);
    kern<<<grid, NWG * 128, smem, stream>>>(p);
    return cudaGetLastError();
}

template <typename T, int D, int NWG, int BN, int ST, int PP>
cudaError_t launch_ws(const FlashParams &p, PFN_cuTensorMapEncodeTiled_v12000 encode, int dtype,
                      int block_size, int num_seqs, int max_query_len, int max_ctas,
                      cudaStream_t stream) {
    constexpr int BM = 64 * NWG;
    constexpr size_t smem = ws_smem_bytes(D, NWG, BN, ST, ws_q_buffers(D, NWG, BN, ST));
    static_assert(smem <= WS_SMEM_MAX, "tiles exceed the 227 KB of shared memory per block");
    const int rows = block_size < BN ? block_size : BN;   /* rows of a TMA box */
    CUtensorMap tm_k, tm_v, tm_q;
    if (encode_kv_map(encode, &tm_k, p.k_cache, dtype, p.H, D, block_size, rows) != CUDA_SUCCESS ||
        encode_kv_map(encode, &tm_v, p.v_cache, dtype, p.H, D, block_size, rows) != CUDA_SUCCESS)
        return cudaErrorInvalidValue;
    /* a q the TMA cannot address (alignment) takes the consumers' cp.async instead */
    memset(&tm_q, 0, sizeof tm_q);
    const int q_tma = encode_q_map(encode, &tm_q, p.q, dtype, p.H, D, p.q_stride, BM) == CUDA_SUCCESS;
    auto kern = flash_attention_sm90a_kernel<T, D, NWG, BN, ST, PP>;
    /* the registers the build gave the kernel must hold the setmaxnreg budgets (else the
     * consumers would wait for registers forever): checked once, cudaErrorNotSupported
     * sends the caller to the cp.async kernel */
    static const bool regs_fit = [&]() {
        cudaFuncAttributes fa;
        return cudaFuncGetAttributes(&fa, kern) == cudaSuccess &&
               fa.numRegs * (NWG + 1) * 128 >= ws_budget_regs(NWG);
    }();
    if (!regs_fit) return cudaErrorNotSupported;
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)smem);
    if (e != cudaSuccess) return e;
    FlashParams lp = p;
    lp.num_seqs = num_seqs;
    lp.q_tma = q_tma;
    lp.n_qt = (max_query_len + BM - 1) / BM;
    if (lp.group <= 0) {   /* pairs whose K/V (max_query_len keys each) fill half the L2 */
        int dev = 0, l2 = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev) != cudaSuccess || l2 <= 0)
            l2 = 40 << 20;
        const long long pair_bytes = 4ll * D * max_query_len;
        lp.group = (int)(l2 / 2 / pair_bytes);
    }
    const long long pairs = (long long)num_seqs * p.H, tiles = pairs * lp.n_qt;
    if (tiles > 0x7fffffffll) return cudaErrorInvalidValue;
    if (lp.group < 1) lp.group = 1;
    if (lp.group > pairs) lp.group = (int)pairs;
    long long ctas = tiles;
    if (!lp.tile_counter) {   /* no counter: the static schedule of the same grid */
        if ((lp.sched & 8) && max_query_len > FLASH_SM90_PERSIST_MAX_Q) lp.sched &= ~4;
        lp.sched &= ~8;
    }
    if (lp.sched & 8) lp.sched |= 4;   /* a dynamic schedule runs on a persistent grid */
    if (lp.sched & 4) {   /* persistent: one CTA per SM (the kernel's shared memory allows one) */
        int dev = 0, sms = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
            sms <= 0)
            sms = 132;
        if (max_ctas > 0 && max_ctas < sms) sms = max_ctas;
        if (ctas > sms) ctas = sms;
    }
    kern<<<(unsigned)ctas, (NWG + 1) * 128, smem, stream>>>(lp, tm_k, tm_v, tm_q);
    return cudaGetLastError();
}

/* Tile shapes, overridable at build time through a force-included header (see
 * bench_flash.py --variant).
 * cp.async kernel: (warpgroups, keys per tile);
 * TMA kernel: (consumer warpgroups, keys per tile, K/V stages, ping-pong 0/1). */
#ifndef FLASH_SM90_P64
#define FLASH_SM90_P64 3, 128    /* D=64: 192 query rows, 128-key tiles */
#endif
#ifndef FLASH_SM90_P128
#define FLASH_SM90_P128 2, 128   /* D=128: 128 query rows, 128-key tiles */
#endif
#ifndef FLASH_SM90_WS64
#define FLASH_SM90_WS64 4, 64, 6, 0     /* D=64: 256 query rows, 64-key tiles, 6 stages of
                                         * 8 KB; 3 warpgroups and 128-key tiles: 0.93x SDPA
                                         * at B=16 S=1024, this 0.97-0.98x */
#endif
#ifndef FLASH_SM90_WS128
#define FLASH_SM90_WS128 3, 64, 5, 0    /* D=128: 192 query rows, 64-key tiles, 5 stages of
                                         * 16 KB (208 KB in all); 2 warpgroups and 128-key
                                         * tiles, 3 stages: 0.86-0.92x SDPA, this 0.96-0.97x */
#endif

template <typename T>
cudaError_t dispatch_cpasync(const FlashParams &p, int D, int num_seqs, int max_query_len,
                             cudaStream_t stream) {
    if (D == 64) return launch_cpasync<T, 64, FLASH_SM90_P64>(p, num_seqs, max_query_len, stream);
    if (D == 128)
        return launch_cpasync<T, 128, FLASH_SM90_P128>(p, num_seqs, max_query_len, stream);
    return cudaErrorInvalidValue;
}

template <typename T>
cudaError_t dispatch_ws(const FlashParams &p, PFN_cuTensorMapEncodeTiled_v12000 encode, int dtype,
                        int D, int block_size, int num_seqs, int max_query_len, int max_ctas,
                        cudaStream_t stream) {
    if (D == 64)
        return launch_ws<T, 64, FLASH_SM90_WS64>(p, encode, dtype, block_size, num_seqs,
                                                 max_query_len, max_ctas, stream);
    if (D == 128)
        return launch_ws<T, 128, FLASH_SM90_WS128>(p, encode, dtype, block_size, num_seqs,
                                                   max_query_len, max_ctas, stream);
    return cudaErrorInvalidValue;
}

/* The TMA kernel's tile order and grid (ws_tile's sched bits): longest-first with
 * end-aligned tiles on a persistent grid drawing its tiles from the tile counter (15);
 * without a counter, persistent (7) when no query is longer than
 * FLASH_SM90_PERSIST_MAX_Q, else one CTA per tile (3). GPT2_ENGINE_FLASH_SCHED =
 * "MODE[,GROUP[,CTAS]]" overrides it (read per call, for A/B runs and tests): MODE 0..15; GROUP > 0 fixes the section's pairs
 * instead of sizing it from the L2; CTAS > 0 caps a persistent grid (tests: many q tiles
 * per CTA). Measured on an H200 (bench_flash, median ratio to SDPA of 5 rounds): the
 * persistent grid gains at S=1024 (B=16: d64 0.81-0.85 -> 0.84-0.89, d128 0.84 -> 0.87),
 * where a CTA's prologue and pipeline fill weigh most, and loses at S=2048 (B=8 d64
 * 0.93-0.97 -> 0.85-0.88): its static round-robin of long tiles balances worse than the
 * hardware's dispatch of one CTA per tile. */
void ws_schedule_from_env(FlashParams &p, int max_query_len, int &max_ctas) {
    p.sched = 15;   /* the launcher drops bit 3 when there is no tile counter */
    if (!FLASH_SM90_WS_DYNAMIC) p.sched = max_query_len <= FLASH_SM90_PERSIST_MAX_Q ? 7 : 3;
    p.group = 0;
    max_ctas = 0;
    const char *env = getenv("GPT2_ENGINE_FLASH_SCHED");
    if (!env || !*env) return;
    long v[3] = {-1, 0, 0};
    const char *at = env;
    for (int i = 0; i < 3; i++) {
        char *end = nullptr;
        const long x = strtol(at, &end, 10);
        if (end == at) break;
        v[i] = x;
        if (*end != ',') break;
        at = end + 1;
    }
    if (v[0] >= 0 && v[0] <= 15) p.sched = (int)v[0];
    if (v[1] > 0 && v[1] < (1l << 30)) p.group = (int)v[1];
    if (v[2] > 0 && v[2] < (1l << 30)) max_ctas = (int)v[2];
}

int log2_exact(int x) {
    int k = 0;
    while (k < 30 && (1 << k) < x) k++;
    return (x > 0 && (1 << k) == x) ? k : -1;
}

}  // namespace

extern "C" int flash_attention_prefill_sm90a_supported(int head_size, int dtype, int block_size) {
    return (head_size == 64 || head_size == 128) && (dtype == 1 || dtype == 2) &&
           log2_exact(block_size) >= 0;
}

/* The TMA kernel unless GPT2_ENGINE_FLASH_WGMMA=legacy (read per call, for A/B runs),
 * the block size is below 8 (a page of fewer than 8 rows breaks the 8-row swizzle atom
 * into pieces TMA cannot place), a cache is not 16-byte aligned (TMA), the driver has
 * no cuTensorMapEncodeTiled, or the build gave the TMA kernel too few registers for its
 * setmaxnreg budgets; those run the cp.async kernel. */
extern "C" cudaError_t flash_attention_prefill_sm90a(
    void *out, const void *q, int q_stride, const void *k_cache, const void *v_cache,
    const int32_t *query_start_loc, const int32_t *seq_lens, const int32_t *block_tables,
    int bt_stride, int seq_begin, int num_seqs, int max_query_len, int H, int D, int block_size,
    float scale, int dtype, int *tile_counter, cudaStream_t stream) {
    if (num_seqs <= 0 || max_query_len <= 0) return cudaSuccess;
    const int bs_shift = log2_exact(block_size);
    if (bs_shift < 0 || H <= 0) return cudaErrorInvalidValue;
    if (dtype != 1 && dtype != 2) return cudaErrorInvalidValue;
    FlashParams p = {out, q, k_cache, v_cache, query_start_loc, seq_lens, block_tables,
                     q_stride, bt_stride, seq_begin, H, bs_shift, scale * kLog2e};
    int max_ctas = 0;
    ws_schedule_from_env(p, max_query_len, max_ctas);
    p.tile_counter = tile_counter;
    const char *env = getenv("GPT2_ENGINE_FLASH_WGMMA");
    const bool legacy = env && strcmp(env, "legacy") == 0;
    const bool aligned = (((uintptr_t)k_cache | (uintptr_t)v_cache) & 15) == 0;
    PFN_cuTensorMapEncodeTiled_v12000 encode =
        legacy || block_size < 8 || !aligned ? nullptr : tensor_map_encoder();
    if (encode) {
        const cudaError_t e =
            dtype == 1 ? dispatch_ws<__half>(p, encode, dtype, D, block_size, num_seqs,
                                             max_query_len, max_ctas, stream)
                       : dispatch_ws<__nv_bfloat16>(p, encode, dtype, D, block_size, num_seqs,
                                                    max_query_len, max_ctas, stream);
        if (e != cudaErrorNotSupported) return e;   /* else the cp.async kernel below */
    }
    p.sched = 0;   /* the cp.async kernel keeps its (q tile, sequence, head) grid */
    if (dtype == 1) return dispatch_cpasync<__half>(p, D, num_seqs, max_query_len, stream);
    return dispatch_cpasync<__nv_bfloat16>(p, D, num_seqs, max_query_len, stream);
}
