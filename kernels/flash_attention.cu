/* flash_attention.cu — the FLASH attention backend's kernels: tensor-core
 * (mma.sync m16n8k16, sm_80+) flash attention over the paged KV cache.
 *
 * One kernel template serves prefill, chunked prefill and decode:
 *   flash_attention_kernel<T, D, NWARPS, MT, BN, STAGES>
 *     grid  (q tiles, sequences, heads * splits), NWARPS*32 threads;
 *     each warp owns 16*MT query rows (BM = 16*MT*NWARPS rows per block) and the block
 *     streams K/V tiles of BN keys through shared memory (cp.async, STAGES deep),
 *     gathering each key row through the block table, so the paged cache is read
 *     in place. Online softmax in fp32 (log2 domain); the score matrix never
 *     leaves registers: S = Q K^T accumulators are repacked as the A operand of P V.
 *   Causal: key tiles past the last row's position are never loaded; tiles that
 *   cross the diagonal (or the end of the key range) are masked element-wise.
 *   Split-KV (decode): blockIdx.z also selects a slice of the keys; each slice
 *   writes a partial (out, lse) in fp32 and flash_attention_merge_kernel combines
 *   them through the log-sum-exp.
 *
 * Shapes (elements of T = __half or __nv_bfloat16):
 *   q       (T_tokens, H*D) row stride q_stride (q lives inside qkv)
 *   out     (T_tokens, H*D) contiguous
 *   k/v     (num_blocks, H, block_size, D)
 *   block_tables (num_seqs, bt_stride) int32; query_start_loc (num_seqs+1); seq_lens (num_seqs)
 *   partial_o   (num_seqs, H, splits, D) fp32, partial_lse (num_seqs, H, splits) fp32 (log2 units)
 * Shared memory tiles are (rows, D) with 16-byte chunks XOR-swizzled by (row & 7),
 * so ldmatrix reads of 8 rows hit 8 different bank groups.
 */
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels.h"

namespace {

constexpr float kLog2e = 1.4426950408889634f;

/* ---- small PTX wrappers ---- */
__device__ __forceinline__ uint32_t smem_addr(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16-byte async copy; src_bytes = 0 zero-fills the destination (rows past the keys). */
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(src_bytes));
}
__device__ __forceinline__ float fast_exp2(float x) {   /* MUFU.EX2; exp2(-inf) = 0 */
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

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

struct FlashParams {
    void *out;
    const void *q;
    const void *k_cache;
    const void *v_cache;
    const int32_t *query_start_loc;
    const int32_t *seq_lens;
    const int32_t *block_tables;
    float *partial_o;     /* NULL unless split */
    float *partial_lse;
    int q_stride, bt_stride, seq_begin, H, bs_shift, splits;   /* block_size = 1 << bs_shift */
    float scale_log2;     /* scale * log2(e) */
};

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
    const int h = blockIdx.z % p.H, split = blockIdx.z / p.H;
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

    /* key range of this block: causal bound of the tile's last row, cut to this split */
    const int last_row = min(m0 + BM, q_len) - 1;
    int kbeg = 0, kend = ctx + last_row + 1;
    if (p.splits > 1) {
        int per = ((kend + p.splits - 1) / p.splits + BN - 1) / BN * BN;
        kbeg = split * per;
        kend = min(kend, kbeg + per);
    }
    const int n_tiles = kend > kbeg ? (kend - kbeg + BN - 1) / BN : 0;

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

    /* finish: l summed over the quad; out = O / l; lse = m + log2(l) (log2 units) */
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        float inv[2], lse[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            l[mt][r] += __shfl_xor_sync(0xffffffffu, l[mt][r], 1);
            l[mt][r] += __shfl_xor_sync(0xffffffffu, l[mt][r], 2);
            inv[r] = l[mt][r] > 0.f ? 1.f / l[mt][r] : 0.f;
            lse[r] = l[mt][r] > 0.f ? mx[mt][r] + log2f(l[mt][r]) : -INFINITY;
        }
        const int row0 = m0 + wrow + mt * 16 + g;
        if (p.partial_o == nullptr) {
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
        } else if (row0 == 0) {
            /* split-KV: one query row per sequence (decode); only row 0 is real */
            size_t u = ((size_t)s * p.H + h) * p.splits + split;
            float *po = p.partial_o + u * D;
#pragma unroll
            for (int i = 0; i < ND; i++) {
                po[i * 8 + 2 * t4] = o[mt][i][0] * inv[0];
                po[i * 8 + 2 * t4 + 1] = o[mt][i][1] * inv[0];
            }
            if (t4 == 0) p.partial_lse[u] = lse[0];
        }
    }
}

/* out[q0(s), h, :] = sum_i w_i o_i, w_i = 2^(lse_i - max) / sum 2^(lse_j - max).
 * grid (H, num_seqs), D threads. Empty splits carry lse = -inf and weigh nothing. */
template <typename T>
__global__ void flash_attention_merge_kernel(T *out, const float *po, const float *plse,
                                             const int32_t *query_start_loc, int seq_begin, int H,
                                             int D, int splits) {
    const int h = blockIdx.x, s = seq_begin + blockIdx.y, d = threadIdx.x;
    const size_t u = ((size_t)s * H + h) * splits;
    float m = -INFINITY;
    for (int i = 0; i < splits; i++) m = fmaxf(m, plse[u + i]);
    float acc = 0.f, den = 0.f;
    if (m != -INFINITY) {
        for (int i = 0; i < splits; i++) {
            float w = exp2f(plse[u + i] - m);
            den += w;
            acc += w * po[(u + i) * D + d];
        }
    }
    float v = den > 0.f ? acc / den : 0.f;
    out[(size_t)query_start_loc[s] * H * D + (size_t)h * D + d] = Mma<T>::from(v);
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
    dim3 grid((max_query_len + BM - 1) / BM, num_seqs, p.H * p.splits);
    kern<<<grid, NWARPS * 32, smem, stream>>>(p);
    return cudaGetLastError();
}

/* Tile shapes (NWARPS, MT, BN, STAGES), overridable at build time for tuning runs
 * (nvcc splits -D values at commas: pass them through a header, see bench_flash.py).
 * Prefill: 128 query rows per block; decode: one warp (16 rows, one real) per
 * block, many blocks per SM to keep enough bytes in flight. */
#ifndef FLASH_P64
#define FLASH_P64 4, 2, 64, 2   /* prefill D=64: (warps, m-tiles per warp, keys per tile, stages) */
#endif
#ifndef FLASH_P128
#define FLASH_P128 4, 2, 32, 2  /* prefill D=128 */
#endif
#ifndef FLASH_D64
#define FLASH_D64 2, 1, 64, 3   /* decode D=64 */
#endif
#ifndef FLASH_D128
#define FLASH_D128 2, 1, 32, 3  /* decode D=128 */
#endif

template <typename T>
cudaError_t dispatch(const FlashParams &p, int D, int num_seqs, int max_query_len, int decode,
                     cudaStream_t stream) {
    if (D == 64)
        return decode ? launch_tiles<T, 64, FLASH_D64>(p, num_seqs, max_query_len, stream)
                      : launch_tiles<T, 64, FLASH_P64>(p, num_seqs, max_query_len, stream);
    if (D == 128)
        return decode ? launch_tiles<T, 128, FLASH_D128>(p, num_seqs, max_query_len, stream)
                      : launch_tiles<T, 128, FLASH_P128>(p, num_seqs, max_query_len, stream);
    return cudaErrorInvalidValue;
}

static int log2_exact(int x) {
    int k = 0;
    while ((1 << k) < x) k++;
    return (x > 0 && (1 << k) == x) ? k : -1;
}

}  // namespace

extern "C" int flash_attention_supported(int head_size, int dtype) {
    return (head_size == 64 || head_size == 128) && (dtype == 1 || dtype == 2);
}

extern "C" int flash_attention_num_splits(int num_seqs, int H, int max_seq_len, int num_sms,
                                          int max_splits) {
    /* enough one-warp blocks to fill every SM ~8 deep, each slice >= 2 tiles of 64 keys */
    int work = num_seqs * H;
    if (work <= 0) return 1;
    int want = (num_sms * 8 + work - 1) / work;
    int cap = (max_seq_len + 127) / 128;
    int n = want < cap ? want : cap;
    if (n > max_splits) n = max_splits;
    return n < 1 ? 1 : n;
}

extern "C" cudaError_t flash_attention_prefill(
    void *out, const void *q, int q_stride, const void *k_cache, const void *v_cache,
    const int32_t *query_start_loc, const int32_t *seq_lens, const int32_t *block_tables,
    int bt_stride, int seq_begin, int num_seqs, int max_query_len, int H, int D, int block_size,
    float scale, int dtype, cudaStream_t stream) {
    if (num_seqs <= 0 || max_query_len <= 0) return cudaSuccess;
    const int bs_shift = log2_exact(block_size);
    if (bs_shift < 0) return cudaErrorInvalidValue;
    FlashParams p = {out, q, k_cache, v_cache, query_start_loc, seq_lens, block_tables,
                     nullptr, nullptr, q_stride, bt_stride, seq_begin, H, bs_shift, 1,
                     scale * kLog2e};
    if (dtype == 1) return dispatch<__half>(p, D, num_seqs, max_query_len, 0, stream);
    if (dtype == 2) return dispatch<__nv_bfloat16>(p, D, num_seqs, max_query_len, 0, stream);
    return cudaErrorInvalidValue;
}

extern "C" cudaError_t flash_attention_decode(
    void *out, const void *q, int q_stride, const void *k_cache, const void *v_cache,
    const int32_t *query_start_loc, const int32_t *seq_lens, const int32_t *block_tables,
    int bt_stride, int seq_begin, int num_seqs, int H, int D, int block_size, float scale,
    int dtype, int num_splits, float *partial_o, float *partial_lse, cudaStream_t stream) {
    if (num_seqs <= 0) return cudaSuccess;
    const int bs_shift = log2_exact(block_size);
    if (bs_shift < 0) return cudaErrorInvalidValue;
    int split = num_splits > 1 && partial_o && partial_lse;
    FlashParams p = {out, q, k_cache, v_cache, query_start_loc, seq_lens, block_tables,
                     split ? partial_o : nullptr, split ? partial_lse : nullptr, q_stride,
                     bt_stride, seq_begin, H, bs_shift, split ? num_splits : 1, scale * kLog2e};
    cudaError_t e;
    if (dtype == 1) e = dispatch<__half>(p, D, num_seqs, 1, 1, stream);
    else if (dtype == 2) e = dispatch<__nv_bfloat16>(p, D, num_seqs, 1, 1, stream);
    else return cudaErrorInvalidValue;
    if (e != cudaSuccess || !split) return e;
    dim3 grid(H, num_seqs);
    if (dtype == 1)
        flash_attention_merge_kernel<__half><<<grid, D, 0, stream>>>(
            (__half *)out, partial_o, partial_lse, query_start_loc, seq_begin, H, D, num_splits);
    else
        flash_attention_merge_kernel<__nv_bfloat16><<<grid, D, 0, stream>>>(
            (__nv_bfloat16 *)out, partial_o, partial_lse, query_start_loc, seq_begin, H, D,
            num_splits);
    return cudaGetLastError();
}
