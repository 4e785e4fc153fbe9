/* flash_attention.cu — the FLASH attention backend's kernels: tensor-core
 * (mma.sync m16n8k16, sm_80+) flash attention over the paged KV cache.
 *
 * Prefill and chunked prefill (on compute capability 9.0 flash_attention_prefill hands
 * them to the wgmma kernel of flash_attention_sm90a.cu unless GPT2_ENGINE_FLASH_WGMMA=0):
 *   flash_attention_kernel<T, D, NWARPS, MT, BN, STAGES>
 *     grid  (q tiles, sequences, heads), NWARPS*32 threads;
 *     each warp owns 16*MT query rows (BM = 16*MT*NWARPS rows per block) and the block
 *     streams K/V tiles of BN keys through shared memory (cp.async, STAGES deep),
 *     gathering each key row through the block table, so the paged cache is read
 *     in place. Online softmax in fp32 (log2 domain); the score matrix never
 *     leaves registers: S = Q K^T accumulators are repacked as the A operand of P V.
 *   Causal: key tiles past the last row's position are never loaded; tiles that
 *   cross the diagonal (or the end of the key range) are masked element-wise.
 * Decode (one query per sequence): flash_decode_kernel<T, D>, all warps of a block
 *   on disjoint key ranges of the same (sequence, heads), K/V fragments loaded
 *   straight into registers, the query as the B operand (see the comment above it).
 *   Split-KV: each slice of the keys writes a partial (out, lse) in fp32; the last
 *   slice of a (sequence, heads) to finish combines them through the log-sum-exp
 *   (decode_merge_last: a ticket per (sequence, head group), no second kernel).
 *
 * Shapes (elements of T = __half or __nv_bfloat16):
 *   q       (T_tokens, H*D) row stride q_stride (q lives inside qkv)
 *   out     (T_tokens, H*D) contiguous
 *   k/v     (num_blocks, H, block_size, D)
 *   block_tables (num_seqs, bt_stride) int32; query_start_loc (num_seqs+1); seq_lens (num_seqs)
 *   partial_o   (num_seqs, H, splits, D) fp32, partial_lse (num_seqs, H, splits) fp32 (log2 units)
 * Prefill shared memory tiles are (rows, D) with 16-byte chunks XOR-swizzled by
 * (row & 7), so ldmatrix reads of 8 rows hit 8 different bank groups.
 */
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "flash_common.cuh"
#include "launch.cuh"

namespace {


__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t &r0, uint32_t &r1, uint32_t &r2,
                                        uint32_t &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t addr, uint32_t &r0, uint32_t &r1, uint32_t &r2,
                                          uint32_t &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}

template <typename T> struct Mma;
template <> struct Mma<__half> {
    static __device__ __forceinline__ void run(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __half2 h = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&h);
    }
    static __device__ __forceinline__ __half from(float x) { return __float2half_rn(x); }
};
template <> struct Mma<__nv_bfloat16> {
    static __device__ __forceinline__ void run(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&h);
    }
    static __device__ __forceinline__ __nv_bfloat16 from(float x) { return __float2bfloat16_rn(x); }
};

/* Element offset of 16-byte chunk `c` of row `r` in a swizzled (rows, D) tile. */
template <int D>
__device__ __forceinline__ int swz(int r, int c) {
    return r * D + ((c ^ (r & 7)) << 3);
}

/* Loads key rows [n0, n0+BN) of (seq, head) into a swizzled (BN, D) tile;
 * rows at or past kend are zero-filled (never read from the cache). */
template <typename T, int D, int BN, int NT>
__device__ __forceinline__ void load_kv_tile(T *dst, const T *cache, const int32_t *bt, int n0,
                                             int kend, int h, const FlashParams &p, int tid) {
    constexpr int CPR = D / 8;                 /* 16-byte chunks per row */
    constexpr int CHUNKS = BN * CPR;
    static_assert(CHUNKS % NT == 0, "tile chunks must divide among threads");
    const int bmask = (1 << p.bs_shift) - 1;
#pragma unroll
    for (int i = 0; i < CHUNKS / NT; i++) {
        int c = tid + i * NT;
        int r = c / CPR, ch = c % CPR;
        int pos = n0 + r;
        const T *src = cache;
        int bytes = 0;
        if (pos < kend) {
            size_t blk = (size_t)bt[pos >> p.bs_shift];
            src = cache + (((blk * p.H + h) << p.bs_shift) + (pos & bmask)) * D + ch * 8;
            bytes = 16;
        }
        cp_async16(smem_addr(dst + swz<D>(r, ch)), src, bytes);
    }
}

/* NWARPS warps x MT m-tiles of 16 query rows each (BM = 16*MT*NWARPS; warp w owns
 * rows [w*16*MT, (w+1)*16*MT)), K/V tiles of BN keys. Each K/V fragment read from
 * shared memory feeds MT m-tiles. Q fragments stay in registers when they fit
 * (QREG), else are re-read from shared memory at each k-step. */
template <typename T, int D, int NWARPS, int MT, int BN, int STAGES>
__global__ void __launch_bounds__(NWARPS * 32)
flash_attention_kernel(const FlashParams p) {
    constexpr int NT = NWARPS * 32;
    constexpr int WM = 16 * MT;   /* rows per warp */
    constexpr int BM = WM * NWARPS;
    constexpr int KD = D / 16;    /* k-steps over the head dim */
    constexpr int NS = BN / 8;    /* n-tiles of S */
    constexpr int ND = D / 8;     /* n-tiles of O */
    constexpr bool QREG = MT * KD <= 8;
    static_assert(D % 64 == 0 && BN % 16 == 0, "D multiple of 64, BN of 16");
    static_assert(STAGES >= 2, "at least double buffering");

    extern __shared__ __align__(128) unsigned char smem_raw[];
    T *sQ = reinterpret_cast<T *>(smem_raw);            /* (BM, D) */
    T *sK = sQ + BM * D;                                /* STAGES x (BN, D) */
    T *sV = sK + STAGES * BN * D;                       /* STAGES x (BN, D) */

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int s = p.seq_begin + blockIdx.y;
    const int h = blockIdx.z;
    const int q0 = p.query_start_loc[s];
    const int q_len = p.query_start_loc[s + 1] - q0;
    const int n_qtiles = (q_len + BM - 1) / BM;
    if ((int)blockIdx.x >= n_qtiles) return;
    const int m0 = (n_qtiles - 1 - blockIdx.x) * BM;   /* heaviest tiles launch first */
    const int seq_len = p.seq_lens[s];
    const int ctx = seq_len - q_len;                    /* cached keys before this step's tokens */
    const int32_t *bt = p.block_tables + (size_t)s * p.bt_stride;
    const T *kc = reinterpret_cast<const T *>(p.k_cache);
    const T *vc = reinterpret_cast<const T *>(p.v_cache);

    /* key range of this block: causal bound of the tile's last row */
    const int last_row = min(m0 + BM, q_len) - 1;
    const int kbeg = 0, kend = ctx + last_row + 1;
    const int n_tiles = (kend - kbeg + BN - 1) / BN;

    /* Q tile: rows m0.. of this sequence, zero past q_len */
    {
        const T *qb = reinterpret_cast<const T *>(p.q);
        constexpr int CPR = D / 8;
#pragma unroll
        for (int i = 0; i < BM * CPR / NT; i++) {
            int c = tid + i * NT, r = c / CPR, ch = c % CPR;
            int row = m0 + r;
            const T *src = qb;
            int bytes = 0;
            if (row < q_len) {
                src = qb + (size_t)(q0 + row) * p.q_stride + (size_t)h * D + ch * 8;
                bytes = 16;
            }
            cp_async16(smem_addr(sQ + swz<D>(r, ch)), src, bytes);
        }
    }
    /* prologue: group 0 = Q + tile 0, group i = tile i (empty past the last tile) */
#pragma unroll
    for (int i = 0; i < STAGES - 1; i++) {
        if (i < n_tiles) {
            load_kv_tile<T, D, BN, NT>(sK + i * BN * D, kc, bt, kbeg + i * BN, kend, h, p, tid);
            load_kv_tile<T, D, BN, NT>(sV + i * BN * D, vc, bt, kbeg + i * BN, kend, h, p, tid);
        }
        cp_async_commit();
    }

    float o[MT][ND][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int i = 0; i < ND; i++) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
    float mx[MT][2], l[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) mx[mt][0] = mx[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.f;
    uint32_t qf[QREG ? MT : 1][QREG ? KD : 1][4];

    const int g = lane >> 2, t4 = lane & 3;
    const int wrow = warp * WM;                         /* first tile row of this warp */
    const int warp_min_pos = ctx + m0 + wrow;
    const bool warp_live = m0 + wrow < q_len;           /* not all padding rows */

    /* one barrier per tile: after it every warp is done with tile j-1, so its stage
     * takes tile j+STAGES-1 while tile j is consumed */
    int st = 0, st_load = STAGES - 1;                   /* stage of tile j, of tile j+STAGES-1 */
    for (int j = 0; j < n_tiles; j++) {
        const int n0 = kbeg + j * BN;
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        if (j + STAGES - 1 < n_tiles) {
            const int nl = n0 + (STAGES - 1) * BN;
            load_kv_tile<T, D, BN, NT>(sK + st_load * BN * D, kc, bt, nl, kend, h, p, tid);
            load_kv_tile<T, D, BN, NT>(sV + st_load * BN * D, vc, bt, nl, kend, h, p, tid);
        }
        cp_async_commit();
        if (QREG && j == 0) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int kk = 0; kk < KD; kk++)
                    ldsm_x4(smem_addr(sQ + swz<D>(wrow + mt * 16 + (lane & 15), kk * 2 + (lane >> 4))),
                            qf[QREG ? mt : 0][QREG ? kk : 0][0], qf[QREG ? mt : 0][QREG ? kk : 0][1],
                            qf[QREG ? mt : 0][QREG ? kk : 0][2], qf[QREG ? mt : 0][QREG ? kk : 0][3]);
        }
        const T *k_t = sK + st * BN * D;
        const T *v_t = sV + st * BN * D;

        /* skip a warp whose rows are all padding or see none of this tile's keys */
        if (warp_live && n0 <= warp_min_pos + WM - 1) {
            /* S(WM, BN) = Q K^T; each K fragment feeds MT m-tiles */
            float sc[MT][NS][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int i = 0; i < NS; i++) sc[mt][i][0] = sc[mt][i][1] = sc[mt][i][2] = sc[mt][i][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < KD; kk++) {
                uint32_t qa[MT][4];
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    if (QREG) {
#pragma unroll
                        for (int e = 0; e < 4; e++) qa[mt][e] = qf[QREG ? mt : 0][QREG ? kk : 0][e];
                    } else {
                        ldsm_x4(smem_addr(sQ + swz<D>(wrow + mt * 16 + (lane & 15), kk * 2 + (lane >> 4))),
                                qa[mt][0], qa[mt][1], qa[mt][2], qa[mt][3]);
                    }
                }
#pragma unroll
                for (int np = 0; np < NS / 2; np++) {
                    uint32_t b0, b1, b2, b3;
                    ldsm_x4(smem_addr(k_t + swz<D>(np * 16 + ((lane >> 4) << 3) + (lane & 7),
                                                   kk * 2 + ((lane >> 3) & 1))),
                            b0, b1, b2, b3);
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        Mma<T>::run(sc[mt][2 * np], qa[mt], b0, b1);
                        Mma<T>::run(sc[mt][2 * np + 1], qa[mt], b2, b3);
                    }
                }
            }
            /* mask: causal diagonal and the end of the key range */
            const bool need_mask = (n0 + BN - 1 > warp_min_pos) || (n0 + BN > kend);
            uint32_t pf[MT][NS / 2][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                const int qpos0 = warp_min_pos + mt * 16 + g, qpos1 = qpos0 + 8;
                if (need_mask) {
#pragma unroll
                    for (int i = 0; i < NS; i++) {
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            int col = n0 + i * 8 + 2 * t4 + (e & 1);
                            int qp = (e < 2) ? qpos0 : qpos1;
                            if (col > qp || col >= kend) sc[mt][i][e] = -INFINITY;
                        }
                    }
                }
                /* online softmax, two rows per thread, reduced across the quad */
                float mnew[2] = {mx[mt][0], mx[mt][1]};
#pragma unroll
                for (int i = 0; i < NS; i++) {
                    mnew[0] = fmaxf(mnew[0], fmaxf(sc[mt][i][0], sc[mt][i][1]) * p.scale_log2);
                    mnew[1] = fmaxf(mnew[1], fmaxf(sc[mt][i][2], sc[mt][i][3]) * p.scale_log2);
                }
                float base[2], alpha[2];
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    mnew[r] = fmaxf(mnew[r], __shfl_xor_sync(0xffffffffu, mnew[r], 1));
                    mnew[r] = fmaxf(mnew[r], __shfl_xor_sync(0xffffffffu, mnew[r], 2));
                    base[r] = mnew[r] == -INFINITY ? 0.f : mnew[r];   /* fully masked row: no NaN */
                    alpha[r] = fast_exp2(mx[mt][r] - base[r]);
                    mx[mt][r] = mnew[r];
                    l[mt][r] *= alpha[r];
                }
#pragma unroll
                for (int i = 0; i < ND; i++) {
                    o[mt][i][0] *= alpha[0]; o[mt][i][1] *= alpha[0];
                    o[mt][i][2] *= alpha[1]; o[mt][i][3] *= alpha[1];
                }
                /* P = exp2(S*scale - m), repacked as A fragments of P V */
#pragma unroll
                for (int i = 0; i < NS; i++) {
                    float p0 = fast_exp2(fmaf(sc[mt][i][0], p.scale_log2, -base[0]));
                    float p1 = fast_exp2(fmaf(sc[mt][i][1], p.scale_log2, -base[0]));
                    float p2 = fast_exp2(fmaf(sc[mt][i][2], p.scale_log2, -base[1]));
                    float p3 = fast_exp2(fmaf(sc[mt][i][3], p.scale_log2, -base[1]));
                    l[mt][0] += p0 + p1;
                    l[mt][1] += p2 + p3;
                    pf[mt][i >> 1][(i & 1) * 2 + 0] = Mma<T>::pack(p0, p1);
                    pf[mt][i >> 1][(i & 1) * 2 + 1] = Mma<T>::pack(p2, p3);
                }
            }
            /* O(WM, D) += P(WM, BN) V(BN, D); each V fragment feeds MT m-tiles */
#pragma unroll
            for (int kk = 0; kk < BN / 16; kk++) {
#pragma unroll
                for (int dp = 0; dp < ND / 2; dp++) {
                    uint32_t b0, b1, b2, b3;
                    ldsm_x4_t(smem_addr(v_t + swz<D>(kk * 16 + (((lane >> 3) & 1) << 3) + (lane & 7),
                                                     dp * 2 + (lane >> 4))),
                              b0, b1, b2, b3);
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        Mma<T>::run(o[mt][2 * dp], pf[mt][kk], b0, b1);
                        Mma<T>::run(o[mt][2 * dp + 1], pf[mt][kk], b2, b3);
                    }
                }
            }
        }
        st = st + 1 == STAGES ? 0 : st + 1;
        st_load = st_load + 1 == STAGES ? 0 : st_load + 1;
    }
    cp_async_wait<0>();

    /* finish: l summed over the quad; out = O / l */
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        float inv[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            l[mt][r] += __shfl_xor_sync(0xffffffffu, l[mt][r], 1);
            l[mt][r] += __shfl_xor_sync(0xffffffffu, l[mt][r], 2);
            inv[r] = l[mt][r] > 0.f ? 1.f / l[mt][r] : 0.f;
        }
        const int row0 = m0 + wrow + mt * 16 + g;
        T *ob = reinterpret_cast<T *>(p.out);
        const size_t ld = (size_t)p.H * D;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int row = row0 + 8 * r;
            if (row >= q_len) continue;
            T *orow = ob + (size_t)(q0 + row) * ld + (size_t)h * D;
#pragma unroll
            for (int i = 0; i < ND; i++) {
                uint32_t v = Mma<T>::pack(o[mt][i][2 * r] * inv[r], o[mt][i][2 * r + 1] * inv[r]);
                *reinterpret_cast<uint32_t *>(orow + i * 8 + 2 * t4) = v;
            }
        }
    }
}

/* ======================================================================
 * Decode: one query token per sequence.
 *
 * flash_decode_kernel<T, D, SPLIT>: grid (head groups * splits, sequences), kDecWarps
 * warps; SPLIT (splits > 1: few sequences) selects its own geometry (decode_geom).
 * A block serves one sequence, `hpb` of its heads (a head group) and one slice of
 * its keys (split). The work is cut into items = (head, KT consecutive keys); the
 * block's warps take contiguous runs of items (head-major), so all warps are busy
 * whatever the context length, each warp with its own online-softmax state that it
 * flushes to shared memory when its run moves to the next head. The warps' states
 * are combined at the end through the log-sum-exp (fp32, log2 units).
 *
 * Each lane loads its K/V fragments straight into registers with 16-byte loads, in
 * layouts chosen so they feed mma.sync directly (the D=64 one-pass kernel stages K through
 * shared memory instead, for whole-line loads: FLASH_DECODE_K_SMEM64).
 * The query is the B operand (column 0 real, columns 1..7 zero), so the 16 rows of
 * the A operand carry keys (S^T = K Q^T) and head dims (O^T = V^T P^T), not 15 rows
 * of padding:
 *   S^T(16 keys, 8) = K(16 keys, D) Q^T(D, 8): lane (g = lane/4, t = lane%4) loads
 *     16-byte chunks 4j+t (j < D/32) of key rows g and g+8; QK^T sums over d, so
 *     slice kk = 2j+u of the k dimension takes words 2u, 2u+1 of chunk j (Q is
 *     permuted the same way; the ldmatrix path keeps d in order). Scores of keys g,
 *     g+8 land in lane 4g (c0, c2).
 *   O^T(D, 8) += V^T(D, 16 keys) P^T(16 keys, 8): lane (g, t) loads chunks g+8c
 *     (c < D/64) of key rows 2t, 2t+1, 2t+8, 2t+9; d-row g of m-tile dm = 4c+w is
 *     element 2w of chunk g+8c and d-row g+8 element 2w+1, so byte permutes
 *     (PRMT) of two words build each A register. P^T comes from lanes 8t, 8t+4 by
 *     two shuffles. Lane 4g ends up holding O[8(g+8c) + 2w + {0,1}] in o[4c+w][0|2].
 * Loads of rows past the end of the range read the last valid row (finite data,
 * weighted 0), so the cache is never read outside the sequence's blocks.
 * Every bound comes from the device seq_lens, so graph replays stay exact.
 * ====================================================================== */
/* Blocks per SM that the register allocation must allow (__launch_bounds__): D=128
 * holds twice the accumulators; at 4 blocks it spills, at 3 it does not (and is
 * faster, measured on H100). */
#ifndef FLASH_DECODE_MIN_BLOCKS64
#define FLASH_DECODE_MIN_BLOCKS64 4
#endif
#ifndef FLASH_DECODE_MIN_BLOCKS128
#define FLASH_DECODE_MIN_BLOCKS128 3
#endif
constexpr int kDecWarps = 4;
constexpr int kDecMaxHeads = 4;   /* heads per block, at most */
static_assert(kDecWarps == kDecMaxHeads, "decode_merge_last: one warp per head");

/* keys per item (a warp's unit of work: 8 KB of K+V at the defaults); 16 or 32 at D=64.
 * H200, bench_flash --decode-only: 16 with 5 blocks per SM (94 registers) was 1.06x at
 * B=8 L=2048 and 0.92-0.98x at B >= 64 */
#ifndef FLASH_DECODE_KT64
#define FLASH_DECODE_KT64 32
#endif
/* The split-KV launches (splits > 1: few sequences, latency-bound) have their own item
 * size and blocks per SM at D=64 (a second instantiation of the kernel). H200, same run,
 * FLASH / PAGED with 16 keys and 5 blocks vs 32 and 4: B=8 L=2048 H=32 1.05 vs 1.00,
 * H=12 1.02 vs 0.95, B=8 L=200 1.02 vs 0.97, B=1 L=4096 0.99 vs 0.97 */
#ifndef FLASH_DECODE_SPLIT_KT64
#define FLASH_DECODE_SPLIT_KT64 16
#endif
#ifndef FLASH_DECODE_SPLIT_MIN_BLOCKS64
#define FLASH_DECODE_SPLIT_MIN_BLOCKS64 5
#endif
/* How K reaches the S^T GEMM: 0 straight into registers in the mma fragment layout (4 lanes
 * per row: each load instruction reads half lines at D=64, quarter lines at D=128); 1 in
 * whole 128-byte lines (8 lanes per row: a third fewer L2 requests, ncu) through a swizzled
 * shared-memory tile per warp to ldmatrix. Per kernel: the D=64 one-pass kernel, the D=64
 * split-KV kernel, D=128 (both). H200, FLASH / PAGED with 1 vs 0, same run: D=64 B=64
 * L=1024 0.98 vs 0.96, B=256 L=512 0.99 vs 0.97, B=256 L=256 H=12 0.97 vs 0.95; but D=128
 * 0.93 vs 0.97 and split D=64 B=8 1.01 vs 1.05. The tile filled by cp.async instead (no
 * registers; 5 blocks per SM at D=64, 4 at D=128, 6 for the split kernel) was within
 * +-3% of 1, no better overall */
#ifndef FLASH_DECODE_K_SMEM64
#define FLASH_DECODE_K_SMEM64 1
#endif
#ifndef FLASH_DECODE_K_SMEM64_SPLIT
#define FLASH_DECODE_K_SMEM64_SPLIT 0
#endif
#ifndef FLASH_DECODE_K_SMEM128
#define FLASH_DECODE_K_SMEM128 0
#endif

/* A decode kernel's geometry: keys per item and the blocks per SM its registers allow. */
struct DecodeGeom {
    int kt, min_blocks, k_smem;   /* keys per item, blocks per SM, FLASH_DECODE_K_SMEM* mode */
};
__host__ __device__ constexpr DecodeGeom decode_geom(int D, bool split) {
    return D == 64 ? (split ? DecodeGeom{FLASH_DECODE_SPLIT_KT64, FLASH_DECODE_SPLIT_MIN_BLOCKS64,
                                         FLASH_DECODE_K_SMEM64_SPLIT}
                            : DecodeGeom{FLASH_DECODE_KT64, FLASH_DECODE_MIN_BLOCKS64,
                                         FLASH_DECODE_K_SMEM64})
                   : DecodeGeom{16, FLASH_DECODE_MIN_BLOCKS128, FLASH_DECODE_K_SMEM128};
}

/* Keys per split of a context of L keys: whole items, at least one item per warp
 * (a short context takes fewer splits than the launch has; the rest stay empty). */
__device__ __forceinline__ int decode_split_keys(int L, int splits, int kt) {
    const int per = ((L + splits - 1) / splits + kt - 1) / kt * kt;
    return max(per, kDecWarps * kt);
}
/* Keys [kbeg, kend) of split `split`. */
__device__ __forceinline__ void decode_split_range(int L, int splits, int split, int kt,
                                                   int &kbeg, int &kend) {
    if (splits <= 1) {
        kbeg = 0, kend = L;
        return;
    }
    const int per = decode_split_keys(L, splits, kt);
    kbeg = split * per;
    kend = min(L, kbeg + per);
}
/* Splits of decode_split_range that hold keys (the leading ones; the rest write nothing). */
__device__ __forceinline__ int decode_split_count(int L, int splits, int kt) {
    return min(splits, (L + decode_split_keys(L, splits, kt) - 1) / decode_split_keys(L, splits, kt));
}

struct DecodeParams {
    void *out;
    const void *q;
    const void *k_cache;
    const void *v_cache;
    const int32_t *query_start_loc;
    const int32_t *seq_lens;
    const int32_t *block_tables;
    float *partial_o;     /* (num_seqs, H, splits, D) when splits > 1 */
    float *partial_lse;   /* (num_seqs, H, splits), log2 units */
    int *tickets;         /* (num_seqs, groups) split-arrival counters, 0 between launches */
    int q_stride, bt_stride, seq_begin, H, bs_shift, splits;
    int hpb, groups;      /* heads per block, head groups = ceil(H / hpb) */
    float scale_log2;
};

/* 16-byte streaming load: K/V rows are read once, keep them out of L1. */
__device__ __forceinline__ uint4 ld_stream(const void *p) {
    uint4 r;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
        : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}
__device__ __forceinline__ uint32_t word(const uint4 &v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

constexpr int kDecMaxSplits = 64;

/* Split-KV merge, run by the last block of a (sequence, head group) to finish when two
 * or more splits hold keys (one alone writes the output directly): each
 * block publishes its partials, then takes a ticket; the block that draws the last
 * one (of the splits that hold keys, decode_split_count) merges every split's
 * (o_i, lse_i) of its heads: out = sum_i w_i o_i / sum_i w_i, w_i = 2^(lse_i - max)
 * (last_block_of, launch.cuh). Saves the second kernel of flash-decoding (one launch
 * per layer). */
template <typename T, int D, int KT>
__device__ __forceinline__ void decode_merge_last(const DecodeParams &p) {
    __shared__ float s_w[kDecMaxHeads][kDecMaxSplits];
    __shared__ float s_inv[kDecMaxHeads];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    /* the block's coordinates again (re-read, not kept live through the main loop) */
    const int s = p.seq_begin + blockIdx.y, group = blockIdx.x % p.groups;
    const int h0 = group * p.hpb, nh = min(p.hpb, p.H - h0);
    const int n = decode_split_count(p.seq_lens[s], p.splits, KT);
    if (!last_block_of(p.tickets + (size_t)s * p.groups + group, n)) return;
    /* weights: warp hh for head hh (kDecWarps == kDecMaxHeads) */
    if (warp < nh) {   /* lane i holds splits i and i + 32: one read of the lse values */
        const float *lse = p.partial_lse + ((size_t)s * p.H + h0 + warp) * p.splits;
        float li[kDecMaxSplits / 32];
#pragma unroll
        for (int j = 0; j < kDecMaxSplits / 32; j++)
            li[j] = lane + 32 * j < n ? __ldcg(lse + lane + 32 * j) : -INFINITY;
        float m = -INFINITY;
#pragma unroll
        for (int j = 0; j < kDecMaxSplits / 32; j++) m = fmaxf(m, li[j]);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
        float den = 0.f;
#pragma unroll
        for (int j = 0; j < kDecMaxSplits / 32; j++) {
            const float w = li[j] == -INFINITY ? 0.f : exp2f(li[j] - m);
            if (lane + 32 * j < n) s_w[warp][lane + 32 * j] = w;
            den += w;
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) den += __shfl_xor_sync(0xffffffffu, den, o);
        if (lane == 0) s_inv[warp] = den > 0.f ? 1.f / den : 0.f;
    }
    __syncthreads();
    for (int idx = tid; idx < nh * D; idx += kDecWarps * 32) {
        const int hh = idx / D, d = idx - hh * D;
        const float *po = p.partial_o + ((size_t)s * p.H + h0 + hh) * p.splits * D + d;
        float acc = 0.f;
#pragma unroll 8   /* a merge of up to 8 splits: one round trip */
        for (int i = 0; i < n; i++) acc = fmaf(s_w[hh][i], __ldcg(po + (size_t)i * D), acc);
        T *orow = reinterpret_cast<T *>(p.out) + (size_t)p.query_start_loc[s] * p.H * D +
                  (size_t)(h0 + hh) * D;
        orow[d] = Mma<T>::from(acc * s_inv[hh]);
    }
}

template <typename T, int D, bool SPLIT>
__global__ void __launch_bounds__(kDecWarps * 32, decode_geom(D, SPLIT).min_blocks)
flash_decode_kernel(const DecodeParams p) {
    constexpr int NT = kDecWarps * 32;
    constexpr int KT = decode_geom(D, SPLIT).kt;  /* keys per item */
    constexpr int MT = KT / 16;                   /* 16-key m-tiles of S^T per item */
    constexpr int KC = D / 32;                    /* K chunks per key row per lane */
    constexpr int VC = D / 64;                    /* V chunks per key row per lane */
    constexpr int KD = D / 16;                    /* k-steps of S^T = m-tiles of O^T */
    static_assert(D == 64 || D == 128, "head size 64 or 128");
    __shared__ __align__(16) float s_o[kDecWarps][kDecMaxHeads][D];   /* unnormalised O */
    __shared__ float s_m[kDecWarps][kDecMaxHeads], s_l[kDecWarps][kDecMaxHeads];
    __shared__ __align__(16) T s_q[kDecWarps][D];   /* q of the warp's current head */
    constexpr bool KSM = decode_geom(D, SPLIT).k_smem != 0;
    constexpr int CR = D / 8;                     /* 16-byte chunks per K row */
    constexpr int RPI = 32 / CR;                  /* K rows per whole-line load */
    constexpr int KI = KT / RPI;                  /* whole-line K loads per item */
    __shared__ __align__(128) T s_k[KSM ? kDecWarps : 1][KSM ? KT * D : 8];   /* K of an item */

    pdl_launch_dependents();
    pdl_wait();
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int s = p.seq_begin + blockIdx.y;
    const int group = blockIdx.x % p.groups, split = blockIdx.x / p.groups;
    const int h0 = group * p.hpb, nh = min(p.hpb, p.H - h0);
    const int L = p.seq_lens[s];
    int kbeg, kend;
    decode_split_range(L, p.splits, split, KT, kbeg, kend);
    if (p.splits > 1 && kbeg >= kend) return;     /* empty split: the merge skips it */
    const int n_tiles = kend > kbeg ? (kend - kbeg + KT - 1) / KT : 0;
    const int n_items = nh * n_tiles;
    /* this warp's items: a contiguous run (H200: warp w taking items w, w + 4, ... was
     * 0.93-0.98x of this at B >= 64) */
    const int ib = n_items * warp / kDecWarps, ie = n_items * (warp + 1) / kDecWarps;
    if (lane == 0) {
#pragma unroll
        for (int hh = 0; hh < kDecMaxHeads; hh++) s_m[warp][hh] = -INFINITY, s_l[warp][hh] = 0.f;
    }
    const int q0 = p.query_start_loc[s];
    const T *kc = reinterpret_cast<const T *>(p.k_cache);
    const T *vc = reinterpret_cast<const T *>(p.v_cache);
    const int32_t *bt = p.block_tables + (size_t)s * p.bt_stride;
    const int bmask = (1 << p.bs_shift) - 1;

    /* cache row of key (lane % KT) of an item: lanes look the block table up in
     * parallel, the fragments' rows are then shuffled out (rows < 2^32: the cache of
     * one layer holds fewer than 2^32 rows of D elements) */
    auto item_row = [&](int item) -> uint32_t {
        const int hh = item / n_tiles, tile = item - hh * n_tiles;
        const int pos = min(kbeg + tile * KT + (lane % KT), kend - 1);
        const uint32_t blk = (uint32_t)__ldg(bt + (pos >> p.bs_shift));
        return ((blk * (uint32_t)p.H + (uint32_t)(h0 + hh)) << p.bs_shift) + (uint32_t)(pos & bmask);
    };

    float o[KD][4];              /* O^T accumulators */
    float m = -INFINITY, l = 0.f;
    int cur = -1;                /* head (in group) of the running state */
#pragma unroll
    for (int i = 0; i < KD; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;

    /* running state of head hh -> shared slot (warp, hh); l summed over the 8 lanes of
     * a quad position (lanes t = 0 carry column 0, the real one) */
    auto flush = [&](int hh) {
        float ls = l;
        ls += __shfl_xor_sync(0xffffffffu, ls, 4);
        ls += __shfl_xor_sync(0xffffffffu, ls, 8);
        ls += __shfl_xor_sync(0xffffffffu, ls, 16);
        if (t == 0) {
#pragma unroll
            for (int c = 0; c < VC; c++)
#pragma unroll
                for (int w = 0; w < 4; w++)
                    *reinterpret_cast<float2 *>(&s_o[warp][hh][8 * (g + 8 * c) + 2 * w]) =
                        make_float2(o[4 * c + w][0], o[4 * c + w][2]);
        }
        if (lane == 0) s_m[warp][hh] = m, s_l[warp][hh] = ls;
    };

    uint32_t row = ib < ie ? item_row(ib) : 0u;
    for (int it = ib; it < ie; it++) {
        const int hh = it / n_tiles, n0 = kbeg + (it - hh * n_tiles) * KT;
        /* issue this item's loads first: K (A of S^T) and V (A of O^T) */
        uint4 kr[MT][2][KC], vr[MT][4][VC];
        /* KSM: this lane's K chunks lane % CR of rows i * RPI + lane / CR; the shared tile
         * holds chunk c of row r at 16 (c ^ (r & 7)) bytes into the row (ldmatrix's 8 rows
         * of one chunk hit 8 distinct bank groups) */
        const uint32_t sk = smem_addr(&s_k[KSM ? warp : 0][0]);
        auto sk_at = [&](int r, int c) { return sk + (uint32_t)(r * D * 2 + ((c ^ (r & 7)) << 4)); };
        uint4 kl[KSM ? KI : 1];
        if constexpr (KSM) {
#pragma unroll
            for (int i = 0; i < KI; i++) {
                const uint32_t rw = __shfl_sync(0xffffffffu, row, i * RPI + lane / CR);
                kl[i] = ld_stream(kc + (size_t)rw * D + (lane % CR) * 8);
            }
        }
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
#pragma unroll
            for (int r = 0; r < 2 && !KSM; r++) {
                const uint32_t rw = __shfl_sync(0xffffffffu, row, 16 * mt + 8 * r + g);
                const T *src = kc + (size_t)rw * D + t * 8;
#pragma unroll
                for (int j = 0; j < KC; j++) kr[mt][r][j] = ld_stream(src + j * 32);
            }
#pragma unroll
            for (int kq = 0; kq < 4; kq++) {
                const int key = 16 * mt + 2 * t + (kq & 1) + 8 * (kq >> 1);
                const uint32_t rw = __shfl_sync(0xffffffffu, row, key);
                const T *src = vc + (size_t)rw * D + g * 8;
#pragma unroll
                for (int c = 0; c < VC; c++) vr[mt][kq][c] = ld_stream(src + c * 64);
            }
        }
        if (hh != cur) {   /* next head: flush the last one, load q, reset the state */
            if (cur >= 0) flush(cur);
            const T *qp = reinterpret_cast<const T *>(p.q) + (size_t)q0 * p.q_stride +
                          (size_t)(h0 + hh) * D;
            __syncwarp();
            if (lane < D / 8)
                *reinterpret_cast<uint4 *>(&s_q[warp][lane * 8]) =
                    __ldg(reinterpret_cast<const uint4 *>(qp + lane * 8));
            __syncwarp();
            m = -INFINITY, l = 0.f;
#pragma unroll
            for (int i = 0; i < KD; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
            cur = hh;
        }
        if (it + 1 < ie) row = item_row(it + 1);   /* next item's block-table lookups */
        if constexpr (KSM) {   /* the K tile into shared memory */
            __syncwarp();   /* the last item's ldmatrix reads are done */
#pragma unroll
            for (int i = 0; i < KI; i++)
                asm volatile("st.shared.v4.u32 [%0], {%1,%2,%3,%4};\n"
                             :: "r"(sk_at(i * RPI + lane / CR, lane % CR)), "r"(kl[i].x),
                                "r"(kl[i].y), "r"(kl[i].z), "r"(kl[i].w) : "memory");
            __syncwarp();
        }

        /* S^T = K Q^T; lane 4g holds keys n0 + 16mt + g (+8) in sc[mt][0] (sc[mt][2]) */
        float x[MT][2], tmax = -INFINITY;
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            float sc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
            for (int kk = 0; kk < KD; kk++) {
                if constexpr (KSM) {   /* d in natural order: A by ldmatrix, B = q[16kk + ...] */
                    uint32_t a[4];
                    const int r = 16 * mt + (lane & 7) + 8 * ((lane >> 3) & 1);
                    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                                 : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
                                 : "r"(sk_at(r, 2 * kk + (lane >> 4))) : "memory");
                    const uint32_t q0w = *reinterpret_cast<const uint32_t *>(&s_q[warp][16 * kk + 2 * t]);
                    const uint32_t q1w = *reinterpret_cast<const uint32_t *>(&s_q[warp][16 * kk + 8 + 2 * t]);
                    Mma<T>::run(sc, a, g == 0 ? q0w : 0u, g == 0 ? q1w : 0u);
                } else {
                    const int j = kk >> 1, u = kk & 1;
                    const uint32_t a[4] = {word(kr[mt][0][j], 2 * u), word(kr[mt][1][j], 2 * u),
                                           word(kr[mt][0][j], 2 * u + 1), word(kr[mt][1][j], 2 * u + 1)};
                    /* B: words 2u, 2u+1 of q chunk 4j+t in column g = 0, zero elsewhere */
                    const uint2 qw = *reinterpret_cast<const uint2 *>(&s_q[warp][(4 * j + t) * 8 + 4 * u]);
                    Mma<T>::run(sc, a, g == 0 ? qw.x : 0u, g == 0 ? qw.y : 0u);
                }
            }
            const int pos = n0 + 16 * mt + g;
            x[mt][0] = pos < kend ? sc[0] * p.scale_log2 : -INFINITY;
            x[mt][1] = pos + 8 < kend ? sc[2] * p.scale_log2 : -INFINITY;
            tmax = fmaxf(tmax, fmaxf(x[mt][0], x[mt][1]));
        }
        tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 4));
        tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 8));
        tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 16));
        const float mnew = fmaxf(m, tmax);
        const float base = mnew == -INFINITY ? 0.f : mnew;   /* no NaN if all masked */
        const float alpha = fast_exp2(m - base);
        m = mnew;
        l *= alpha;
#pragma unroll
        for (int i = 0; i < KD; i++) o[i][0] *= alpha, o[i][1] *= alpha, o[i][2] *= alpha, o[i][3] *= alpha;
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            const float p0 = fast_exp2(x[mt][0] - base), p1 = fast_exp2(x[mt][1] - base);
            l += p0 + p1;
            const uint32_t pk = Mma<T>::pack(p0, p1);                /* keys g | g+8 */
            const uint32_t pa = __shfl_sync(0xffffffffu, pk, 8 * t);     /* keys 2t | 2t+8 */
            const uint32_t pb = __shfl_sync(0xffffffffu, pk, 8 * t + 4); /* keys 2t+1 | 2t+9 */
            const uint32_t b0 = __byte_perm(pa, pb, 0x5410), b1 = __byte_perm(pa, pb, 0x7632);
            /* O^T += V^T P^T */
#pragma unroll
            for (int c = 0; c < VC; c++) {
#pragma unroll
                for (int w = 0; w < 4; w++) {
                    const uint32_t w0 = word(vr[mt][0][c], w), w1 = word(vr[mt][1][c], w);
                    const uint32_t w2 = word(vr[mt][2][c], w), w3 = word(vr[mt][3][c], w);
                    const uint32_t a[4] = {__byte_perm(w0, w1, 0x5410), __byte_perm(w0, w1, 0x7632),
                                           __byte_perm(w2, w3, 0x5410), __byte_perm(w2, w3, 0x7632)};
                    Mma<T>::run(o[4 * c + w], a, b0, b1);
                }
            }
        }
    }
    if (cur >= 0) flush(cur);
    __syncthreads();

    /* combine the warps' states of each head: two head dims per thread. A split that is
     * the only one holding keys (short contexts) writes the output itself: the merge of
     * one split is the identity, bit for bit, so it takes no partials and no ticket */
    const bool partial = p.splits > 1 && (!SPLIT || decode_split_count(L, p.splits, KT) > 1);
    for (int idx = tid; idx < nh * (D / 2); idx += NT) {
        const int hh = idx / (D / 2), d = (idx - hh * (D / 2)) * 2;
        float mx = -INFINITY;
#pragma unroll
        for (int w = 0; w < kDecWarps; w++) mx = fmaxf(mx, s_m[w][hh]);
        float den = 0.f, a0 = 0.f, a1 = 0.f;
#pragma unroll
        for (int w = 0; w < kDecWarps; w++) {
            if (s_l[w][hh] > 0.f) {   /* a warp that saw no key of this head weighs nothing */
                const float wt = exp2f(s_m[w][hh] - mx);
                const float2 ov = *reinterpret_cast<const float2 *>(&s_o[w][hh][d]);
                den += wt * s_l[w][hh];
                a0 += wt * ov.x;
                a1 += wt * ov.y;
            }
        }
        const float inv = den > 0.f ? 1.f / den : 0.f;
        const int h = h0 + hh;
        if (partial) {
            const size_t u = ((size_t)s * p.H + h) * p.splits + split;
            *reinterpret_cast<float2 *>(p.partial_o + u * D + d) = make_float2(a0 * inv, a1 * inv);
            if (d == 0) p.partial_lse[u] = den > 0.f ? mx + log2f(den) : -INFINITY;
        } else {
            T *orow = reinterpret_cast<T *>(p.out) + (size_t)q0 * p.H * D + (size_t)h * D;
            *reinterpret_cast<uint32_t *>(orow + d) = Mma<T>::pack(a0 * inv, a1 * inv);
        }
    }
    if (partial) decode_merge_last<T, D, KT>(p);
}

/* Compute capability of the current device as major * 10 + minor, 0 if unknown. */
static int current_cc() {
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
        (void)cudaGetLastError();   /* do not leave the failed query for the next launch check */
        return 0;
    }
    return major * 10 + minor;
}

template <typename T, int D>
cudaError_t launch_decode(const DecodeParams &p, int num_seqs, cudaStream_t stream, int pdl) {
    auto kern = p.splits > 1 ? flash_decode_kernel<T, D, true> : flash_decode_kernel<T, D, false>;
    return launch_kernel(kern, dim3(p.groups * p.splits, num_seqs), dim3(kDecWarps * 32), 0,
                         stream, pdl, 1, p);
}

template <typename T, int D, int NWARPS, int MT, int BN, int STAGES>
cudaError_t launch_tiles(const FlashParams &p, int num_seqs, int max_query_len, cudaStream_t stream) {
    constexpr int BM = 16 * MT * NWARPS;
    constexpr size_t smem = (size_t)(BM + 2 * STAGES * BN) * D * sizeof(T);
    auto kern = flash_attention_kernel<T, D, NWARPS, MT, BN, STAGES>;
    if (smem > 48 * 1024) {   /* opt in above the default; legal under (relaxed) graph capture */
        cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)smem);
        if (e != cudaSuccess) return e;
    }
    dim3 grid((max_query_len + BM - 1) / BM, num_seqs, p.H);
    kern<<<grid, NWARPS * 32, smem, stream>>>(p);
    return cudaGetLastError();
}

/* Prefill tile shapes (NWARPS, MT, BN, STAGES), overridable at build time for tuning
 * runs (nvcc splits -D values at commas: pass them through a header, see
 * bench_flash.py): 128 query rows per block. */
#ifndef FLASH_P64
#define FLASH_P64 4, 2, 64, 2   /* prefill D=64: (warps, m-tiles per warp, keys per tile, stages) */
#endif
#ifndef FLASH_P128
#define FLASH_P128 4, 2, 32, 2  /* prefill D=128 */
#endif
/* Decode head packing: a block takes hpb heads (4, else 2) while the grid keeps at
 * least FLASH_DECODE_PACK blocks per SM, else one head; FLASH_DECODE_HPB > 0 forces hpb. */
#ifndef FLASH_DECODE_PACK
#define FLASH_DECODE_PACK 8
#endif
#ifndef FLASH_DECODE_HPB
#define FLASH_DECODE_HPB 0
#endif

template <typename T>
cudaError_t dispatch_prefill(const FlashParams &p, int D, int num_seqs, int max_query_len,
                             cudaStream_t stream) {
    if (D == 64) return launch_tiles<T, 64, FLASH_P64>(p, num_seqs, max_query_len, stream);
    if (D == 128) return launch_tiles<T, 128, FLASH_P128>(p, num_seqs, max_query_len, stream);
    return cudaErrorInvalidValue;
}

template <typename T>
cudaError_t dispatch_decode(const DecodeParams &p, int D, int num_seqs, cudaStream_t stream,
                            int pdl) {
    if (D == 64) return launch_decode<T, 64>(p, num_seqs, stream, pdl);
    if (D == 128) return launch_decode<T, 128>(p, num_seqs, stream, pdl);
    return cudaErrorInvalidValue;
}

static int log2_exact(int x) {
    int k = 0;
    while ((1 << k) < x) k++;
    return (x > 0 && (1 << k) == x) ? k : -1;
}

/* Heads per decode block (see FLASH_DECODE_PACK). Depends only on the launch shape. */
static int decode_heads_per_block(int num_seqs, int H, int splits) {
    if (FLASH_DECODE_HPB > 0) return FLASH_DECODE_HPB < kDecMaxHeads ? FLASH_DECODE_HPB : kDecMaxHeads;
    int dev = 0, sms = 132;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || sms <= 0)
        sms = 132;
    for (int hpb = kDecMaxHeads; hpb > 1; hpb /= 2)
        if ((long long)num_seqs * ((H + hpb - 1) / hpb) * splits >= (long long)FLASH_DECODE_PACK * sms)
            return hpb;
    return 1;
}

}  // namespace

extern "C" int flash_attention_supported(int head_size, int dtype) {
    return (head_size == 64 || head_size == 128) && (dtype == 1 || dtype == 2);
}

extern "C" int flash_attention_num_splits(int num_seqs, int H, int D, int max_seq_len,
                                          int num_sms, int max_splits) {
    /* As many blocks as fit on the GPU at once (one wave: the blocks are uniform, a
     * second partial wave would cost as much as a full one), each slice at least
     * one item per warp; depends only on the launch shape, never on the lengths. */
    const long long work = (long long)num_seqs * H;
    if (work <= 0) return 1;
    const DecodeGeom geo = decode_geom(D == 64 ? 64 : 128, true);   /* of the split kernel */
    const long long slots = (long long)num_sms * geo.min_blocks;
    long long n = slots / work;
    const int kmin = kDecWarps * geo.kt;
    const long long cap = (max_seq_len + kmin - 1) / kmin;
    if (n > cap) n = cap;
    if (n > max_splits) n = max_splits;
    if (n > kDecMaxSplits) n = kDecMaxSplits;
    return n < 1 ? 1 : (int)n;
}

/* The wgmma prefill (flash_attention_sm90a.cu, built for sm_90a only) serves compute
 * capability 9.0 unless GPT2_ENGINE_FLASH_WGMMA=0 (its launcher reads the same variable:
 * "legacy" picks its cp.async kernel over the TMA one); read per call (prefill is never
 * captured in a graph), the capability from the current device (cheap attribute reads). */
static bool prefill_use_wgmma(int D, int dtype, int block_size) {
    const char *env = getenv("GPT2_ENGINE_FLASH_WGMMA");
    if (env && strcmp(env, "0") == 0) return false;
    if (!flash_attention_prefill_sm90a_supported(D, dtype, block_size)) return false;
    return current_cc() == 90;
}

extern "C" cudaError_t flash_attention_prefill(
    void *out, const void *q, int q_stride, const void *k_cache, const void *v_cache,
    const int32_t *query_start_loc, const int32_t *seq_lens, const int32_t *block_tables,
    int bt_stride, int seq_begin, int num_seqs, int max_query_len, int H, int D, int block_size,
    float scale, int dtype, int *tile_counter, cudaStream_t stream) {
    if (num_seqs <= 0 || max_query_len <= 0) return cudaSuccess;
    if (prefill_use_wgmma(D, dtype, block_size)) {
        cudaError_t e = flash_attention_prefill_sm90a(
            out, q, q_stride, k_cache, v_cache, query_start_loc, seq_lens, block_tables,
            bt_stride, seq_begin, num_seqs, max_query_len, H, D, block_size, scale, dtype,
            tile_counter, stream);
        if (e != cudaErrorNoKernelImageForDevice && e != cudaErrorInvalidDeviceFunction) return e;
        (void)cudaGetLastError();   /* no sm_90a image in this build: the mma.sync path */
    }
    const int bs_shift = log2_exact(block_size);
    if (bs_shift < 0) return cudaErrorInvalidValue;
    FlashParams p = {out, q, k_cache, v_cache, query_start_loc, seq_lens, block_tables,
                     q_stride, bt_stride, seq_begin, H, bs_shift, scale * kLog2e};
    if (dtype == 1) return dispatch_prefill<__half>(p, D, num_seqs, max_query_len, stream);
    if (dtype == 2) return dispatch_prefill<__nv_bfloat16>(p, D, num_seqs, max_query_len, stream);
    return cudaErrorInvalidValue;
}

extern "C" cudaError_t flash_attention_decode(
    void *out, const void *q, int q_stride, const void *k_cache, const void *v_cache,
    const int32_t *query_start_loc, const int32_t *seq_lens, const int32_t *block_tables,
    int bt_stride, int seq_begin, int num_seqs, int H, int D, int block_size, float scale,
    int dtype, int num_splits, float *partial_o, float *partial_lse, int *tickets,
    cudaStream_t stream, int pdl) {
    if (num_seqs <= 0) return cudaSuccess;
    const int bs_shift = log2_exact(block_size);
    if (bs_shift < 0 || H <= 0) return cudaErrorInvalidValue;
    if (num_splits > kDecMaxSplits) return cudaErrorInvalidValue;
    const int splits = num_splits > 1 && partial_o && partial_lse && tickets ? num_splits : 1;
    const int hpb = decode_heads_per_block(num_seqs, H, splits);
    DecodeParams p = {out, q, k_cache, v_cache, query_start_loc, seq_lens, block_tables,
                      splits > 1 ? partial_o : nullptr, splits > 1 ? partial_lse : nullptr,
                      splits > 1 ? tickets : nullptr, q_stride, bt_stride, seq_begin, H, bs_shift, splits, hpb,
                      (H + hpb - 1) / hpb, scale * kLog2e};
    if (dtype == 1) return dispatch_decode<__half>(p, D, num_seqs, stream, pdl);
    if (dtype == 2) return dispatch_decode<__nv_bfloat16>(p, D, num_seqs, stream, pdl);
    return cudaErrorInvalidValue;
}
