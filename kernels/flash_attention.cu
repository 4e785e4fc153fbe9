/* flash_attention.cu — the FLASH attention backend's kernels: tensor-core
 * (mma.sync m16n8k16, sm_80+) flash attention over the paged KV cache.
 *
 * One kernel template serves prefill, chunked prefill and decode:
 *   flash_attention_kernel<T, D, NWARPS, BN>
 *     grid  (q tiles, sequences, heads * splits), NWARPS*32 threads;
 *     each warp owns 16 query rows (BM = 16*NWARPS rows per block) and the block
 *     streams K/V tiles of BN keys through shared memory (cp.async, two stages),
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
    int q_stride, bt_stride, seq_begin, H, block_size, splits;
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
#pragma unroll
    for (int i = 0; i < CHUNKS / NT; i++) {
        int c = tid + i * NT;
        int r = c / CPR, ch = c % CPR;
        int pos = n0 + r;
        const T *src = cache;
        int bytes = 0;
        if (pos < kend) {
            int blk = bt[pos / p.block_size];
            src = cache + (((size_t)blk * p.H + h) * p.block_size + pos % p.block_size) * D + ch * 8;
            bytes = 16;
        }
        cp_async16(smem_addr(dst + swz<D>(r, ch)), src, bytes);
    }
}

template <typename T, int D, int NWARPS, int BN>
__global__ void __launch_bounds__(NWARPS * 32)
flash_attention_kernel(const FlashParams p) {
    constexpr int NT = NWARPS * 32;
    constexpr int BM = 16 * NWARPS;
    constexpr int KD = D / 16;    /* k-steps over the head dim */
    constexpr int NS = BN / 8;    /* n-tiles of S */
    constexpr int ND = D / 8;     /* n-tiles of O */
    static_assert(D % 64 == 0 && BN % 16 == 0, "D multiple of 64, BN of 16");

    extern __shared__ __align__(128) unsigned char smem_raw[];
    T *sQ = reinterpret_cast<T *>(smem_raw);            /* (BM, D) */
    T *sK = sQ + BM * D;                                /* 2 x (BN, D) */
    T *sV = sK + 2 * BN * D;                            /* 2 x (BN, D) */

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
    if (n_tiles > 0) {
        load_kv_tile<T, D, BN, NT>(sK, kc, bt, kbeg, kend, h, p, tid);
        load_kv_tile<T, D, BN, NT>(sV, vc, bt, kbeg, kend, h, p, tid);
    }
    cp_async_commit();

    float o[ND][4];
#pragma unroll
    for (int i = 0; i < ND; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float mx[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    uint32_t qf[KD][4];

    const int g = lane >> 2, t4 = lane & 3;
    const int row_a = warp * 16 + g;                   /* tile rows of c0,c1 (c2,c3: +8) */
    const int qpos0 = ctx + m0 + row_a, qpos1 = qpos0 + 8;
    const int warp_min_pos = ctx + m0 + warp * 16;

    for (int j = 0; j < n_tiles; j++) {
        const int n0 = kbeg + j * BN;
        const int st = j & 1;
        if (j + 1 < n_tiles) {
            load_kv_tile<T, D, BN, NT>(sK + (st ^ 1) * BN * D, kc, bt, n0 + BN, kend, h, p, tid);
            load_kv_tile<T, D, BN, NT>(sV + (st ^ 1) * BN * D, vc, bt, n0 + BN, kend, h, p, tid);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (j == 0) {
#pragma unroll
            for (int kk = 0; kk < KD; kk++)
                ldsm_x4(smem_addr(sQ + swz<D>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4))),
                        qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3]);
        }
        const T *k_t = sK + st * BN * D;
        const T *v_t = sV + st * BN * D;

        /* skip a warp whose rows are all padding or see none of this tile's keys */
        if (n0 <= warp_min_pos + 15 && m0 + warp * 16 < q_len) {
            /* S(16, BN) = Q K^T */
            float sc[NS][4];
#pragma unroll
            for (int i = 0; i < NS; i++) sc[i][0] = sc[i][1] = sc[i][2] = sc[i][3] = 0.f;
#pragma unroll
            for (int np = 0; np < NS / 2; np++) {
#pragma unroll
                for (int kk = 0; kk < KD; kk++) {
                    uint32_t b0, b1, b2, b3;
                    ldsm_x4(smem_addr(k_t + swz<D>(np * 16 + ((lane >> 4) << 3) + (lane & 7),
                                                   kk * 2 + ((lane >> 3) & 1))),
                            b0, b1, b2, b3);
                    Mma<T>::run(sc[2 * np], qf[kk], b0, b1);
                    Mma<T>::run(sc[2 * np + 1], qf[kk], b2, b3);
                }
            }
            /* mask: causal diagonal and the end of the key range */
            const bool need_mask = (n0 + BN - 1 > warp_min_pos) || (n0 + BN > kend);
            if (need_mask) {
#pragma unroll
                for (int i = 0; i < NS; i++) {
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        int col = n0 + i * 8 + 2 * t4 + (e & 1);
                        int qp = (e < 2) ? qpos0 : qpos1;
                        if (col > qp || col >= kend) sc[i][e] = -INFINITY;
                    }
                }
            }
            /* online softmax, two rows per thread, reduced across the quad */
            float mnew[2] = {mx[0], mx[1]};
#pragma unroll
            for (int i = 0; i < NS; i++) {
                mnew[0] = fmaxf(mnew[0], fmaxf(sc[i][0], sc[i][1]) * p.scale_log2);
                mnew[1] = fmaxf(mnew[1], fmaxf(sc[i][2], sc[i][3]) * p.scale_log2);
            }
#pragma unroll
            for (int r = 0; r < 2; r++) {
                mnew[r] = fmaxf(mnew[r], __shfl_xor_sync(0xffffffffu, mnew[r], 1));
                mnew[r] = fmaxf(mnew[r], __shfl_xor_sync(0xffffffffu, mnew[r], 2));
            }
            float base[2], alpha[2];
#pragma unroll
            for (int r = 0; r < 2; r++) {
                base[r] = mnew[r] == -INFINITY ? 0.f : mnew[r];   /* fully masked row: no NaN */
                alpha[r] = fast_exp2(mx[r] - base[r]);
                mx[r] = mnew[r];
                l[r] *= alpha[r];
            }
#pragma unroll
            for (int i = 0; i < ND; i++) {
                o[i][0] *= alpha[0]; o[i][1] *= alpha[0];
                o[i][2] *= alpha[1]; o[i][3] *= alpha[1];
            }
            /* P = exp2(S*scale - m), repacked in place as A fragments of P V */
            uint32_t pf[NS / 2][4];
#pragma unroll
            for (int i = 0; i < NS; i++) {
                float p0 = fast_exp2(fmaf(sc[i][0], p.scale_log2, -base[0]));
                float p1 = fast_exp2(fmaf(sc[i][1], p.scale_log2, -base[0]));
                float p2 = fast_exp2(fmaf(sc[i][2], p.scale_log2, -base[1]));
                float p3 = fast_exp2(fmaf(sc[i][3], p.scale_log2, -base[1]));
                l[0] += p0 + p1;
                l[1] += p2 + p3;
                pf[i >> 1][(i & 1) * 2 + 0] = Mma<T>::pack(p0, p1);
                pf[i >> 1][(i & 1) * 2 + 1] = Mma<T>::pack(p2, p3);
            }
            /* O(16, D) += P(16, BN) V(BN, D) */
#pragma unroll
            for (int kk = 0; kk < BN / 16; kk++) {
#pragma unroll
                for (int dp = 0; dp < ND / 2; dp++) {
                    uint32_t b0, b1, b2, b3;
                    ldsm_x4_t(smem_addr(v_t + swz<D>(kk * 16 + (((lane >> 3) & 1) << 3) + (lane & 7),
                                                     dp * 2 + (lane >> 4))),
                              b0, b1, b2, b3);
                    Mma<T>::run(o[2 * dp], pf[kk], b0, b1);
                    Mma<T>::run(o[2 * dp + 1], pf[kk], b2, b3);
                }
            }
        }
        __syncthreads();   /* the next iteration's loads overwrite this stage */
    }
    cp_async_wait<0>();

    /* finish: l summed over the quad; out = O / l; lse = m + log2(l) (log2 units) */
    float inv[2], lse[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
        inv[r] = l[r] > 0.f ? 1.f / l[r] : 0.f;
        lse[r] = l[r] > 0.f ? mx[r] + log2f(l[r]) : -INFINITY;
    }
    const int rows[2] = {m0 + row_a, m0 + row_a + 8};
    if (p.partial_o == nullptr) {
        T *ob = reinterpret_cast<T *>(p.out);
        const size_t ld = (size_t)p.H * D;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            if (rows[r] >= q_len) continue;
            T *orow = ob + (size_t)(q0 + rows[r]) * ld + (size_t)h * D;
#pragma unroll
            for (int i = 0; i < ND; i++) {
                uint32_t v = Mma<T>::pack(o[i][2 * r] * inv[r], o[i][2 * r + 1] * inv[r]);
                *reinterpret_cast<uint32_t *>(orow + i * 8 + 2 * t4) = v;
            }
        }
    } else {
        /* split-KV: one query row per sequence (decode); only row 0 is real */
        if (rows[0] == 0) {
            size_t u = ((size_t)s * p.H + h) * p.splits + split;
            float *po = p.partial_o + u * D;
#pragma unroll
            for (int i = 0; i < ND; i++) {
                po[i * 8 + 2 * t4] = o[i][0] * inv[0];
                po[i * 8 + 2 * t4 + 1] = o[i][1] * inv[0];
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

template <typename T, int D, int NWARPS, int BN>
cudaError_t launch_tiles(const FlashParams &p, int num_seqs, int max_query_len, cudaStream_t stream) {
    constexpr int BM = 16 * NWARPS;
    size_t smem = (size_t)(BM + 4 * BN) * D * sizeof(T);
    auto kern = flash_attention_kernel<T, D, NWARPS, BN>;
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    dim3 grid((max_query_len + BM - 1) / BM, num_seqs, p.H * p.splits);
    kern<<<grid, NWARPS * 32, smem, stream>>>(p);
    return cudaGetLastError();
}

/* Tile shapes: prefill 128 query rows (8 warps) x 64 keys; decode one warp (16 rows,
 * one real) x 64 keys, many blocks per SM to keep enough bytes in flight. */
template <typename T, int D>
cudaError_t launch_all(const FlashParams &p, int num_seqs, int max_query_len, int decode,
                       cudaStream_t stream) {
    if (decode) return launch_tiles<T, D, 1, 64>(p, num_seqs, max_query_len, stream);
    return launch_tiles<T, D, 8, 64>(p, num_seqs, max_query_len, stream);
}

template <typename T>
cudaError_t dispatch(const FlashParams &p, int D, int num_seqs, int max_query_len, int decode,
                     cudaStream_t stream) {
    if (D == 64) return launch_all<T, 64>(p, num_seqs, max_query_len, decode, stream);
    if (D == 128) return launch_all<T, 128>(p, num_seqs, max_query_len, decode, stream);
    return cudaErrorInvalidValue;
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
    FlashParams p = {out, q, k_cache, v_cache, query_start_loc, seq_lens, block_tables,
                     nullptr, nullptr, q_stride, bt_stride, seq_begin, H, block_size, 1,
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
    int split = num_splits > 1 && partial_o && partial_lse;
    FlashParams p = {out, q, k_cache, v_cache, query_start_loc, seq_lens, block_tables,
                     split ? partial_o : nullptr, split ? partial_lse : nullptr, q_stride,
                     bt_stride, seq_begin, H, block_size, split ? num_splits : 1, scale * kLog2e};
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
