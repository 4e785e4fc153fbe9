/* sampling.cu — the `sample` op of the CUDA backend: sampling.h's contract,
 * bit-for-bit the same decisions as the CPU reference sample_cpu
 * (csrc/core/sampler_cpu.c) up to the order of floating-point sums.
 *
 * Launch: one 1024-thread block per row r of logits (R, V), row stride ld, read in
 * the lm_head's own dtype (fp32, fp16 or bf16: no fp32 copy of the logits is made).
 * The row is scanned a few dozen times (it stays in L1/L2); nothing is sorted:
 *   raw max and log-sum-exp (double)            -> logprob, rank, top-k logprobs
 *   x = raw (NaN -> -inf) in work(r), then thread 0 applies the row's
 *     TokenAdjust entries in order (explicit _rn intrinsics: no FMA contraction,
 *     the same float rounding as the C reference)
 *   greedy: block argmax (lowest id on ties)
 *   else p = expf((x - max x) / T) in place; top-k cut = the k-th largest p found
 *     by bisection on p's bit pattern (p >= 0, so bits order like values) with
 *     block counts; top-p cut = the largest p-value v whose mass sum(p >= v)
 *     still reaches top_p * (top-k kept mass), bisection again with block sums
 *     (ties at a cut are kept, as in the contract); min_p cut = min_p * max p
 *     (max p = 1); then inverse CDF in id order: each thread owns a contiguous
 *     chunk of ids, a block-wide exclusive scan gives each chunk's offset and the
 *     owner of the crossing finds the first id whose running sum exceeds u * kept.
 *   top-k logprobs: num_logprobs rounds of block argmax over the raw row, each
 *     restricted to entries after the previous pick in (value desc, id asc) order.
 * The uniform u = sampling_uniform01(seed, step) is computed on the host with the
 * shared inline function of sampling.h and passed in, so no RNG is duplicated.
 * With splits > 1 (grid (R, splits): few rows) a plain greedy row's one pass is split
 * over the splits blocks of its row, in id order; each stores its (max, lowest id, exp-sum)
 * in split.parts and the last to finish (split.tickets, launch.cuh's last_block_of)
 * merges them in split order and writes the outputs. Other rows run in block 0 of theirs.
 */
#include <limits.h>

#include "common.cuh"
#include "launch.cuh"

#define SAMPLE_THREADS 1024

/* A plain greedy row's share (split) of the one pass, for the block that merges them
 * (16 bytes: sample_cuda.c's SAMPLE_SPLIT_PART_BYTES) */
struct GreedyPart {
    float v;        /* the share's max (-inf: none) */
    int id;         /* its lowest id */
    double s;       /* sum of exp(x - v) over the share */
};
static_assert(sizeof(GreedyPart) == 16, "sample_cuda.c sizes the parts at 16 bytes");

__device__ __forceinline__ float nan_to_neginf(float v) { return isnan(v) ? -INFINITY : v; }

/* Exclusive prefix sum of v over the block (blockDim.x threads, in thread order);
 * *total receives the sum of all. scratch: >= 32 doubles of shared memory. */
__device__ double block_exclusive_scan(double v, double *scratch, double *total)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    double incl = v;
    for (int o = 1; o < 32; o <<= 1) {
        double n = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += n;
    }
    __syncthreads();
    if (lane == 31) scratch[warp] = incl;
    __syncthreads();
    if (warp == 0) {
        double w = lane < nwarps ? scratch[lane] : 0.0, wi = w;
        for (int o = 1; o < 32; o <<= 1) {
            double n = __shfl_up_sync(0xffffffffu, wi, o);
            if (lane >= o) wi += n;
        }
        if (lane < nwarps) scratch[lane] = wi - w;        /* exclusive warp offsets */
        if (lane == 31) scratch[32] = wi;                 /* block total */
    }
    __syncthreads();
    const double r = scratch[warp] + incl - v;
    *total = scratch[32];
    return r;
}

/* The row's x after its TokenAdjust entries (run by one thread, in order). */
__device__ void adjust_row(float *x, const SamplingRow &row, const TokenAdjust *adj)
{
    const float rp = row.repetition_penalty;
    for (int i = 0; i < row.adj_count; i++) {
        const TokenAdjust a = adj[row.adj_start + i];
        float v = x[a.token];
        if (rp != 1.0f && (a.output_count > 0 || a.in_prompt))
            v = v > 0 ? __fdiv_rn(v, rp) : __fmul_rn(v, rp);
        const float pen = __fadd_rn(__fmul_rn(row.frequency_penalty, (float)a.output_count),
                                    __fmul_rn(row.presence_penalty,
                                              a.output_count > 0 ? 1.0f : 0.0f));
        v = __fsub_rn(v, pen);
        v = __fadd_rn(v, a.bias);
        x[a.token] = isnan(v) ? -INFINITY : v;
    }
}

/* Temperature sampling over x(V) (overwritten with p). Returns the token or -1
 * when every token is masked. Every thread returns the same value. */
__device__ int sample_row(float *x, int V, const SamplingRow &row, float u, float *sf,
                          double *sd, int *si, int *s_pick)
{
    const int tid = threadIdx.x, nt = blockDim.x;
    float xm = -INFINITY;
    for (int i = tid; i < V; i += nt) xm = fmaxf(xm, x[i]);
    xm = block_reduce(xm, sf, -INFINITY, OpMax());
    if (xm == -INFINITY) return -1;
    for (int i = tid; i < V; i += nt) x[i] = expf(__fdiv_rn(__fsub_rn(x[i], xm), row.temperature));
    __syncthreads();

    float cut = 0.0f;                                   /* keep p >= cut and p > 0 */
    const int k = row.top_k > 0 && row.top_k < V ? row.top_k : 0;
    if (k > 0) {   /* largest bit pattern b with #{p : bits(p) >= b} >= k = the k-th largest p */
        unsigned int lo = 0, hi = 0x3f800000u;
        while (lo < hi) {
            const unsigned int mid = lo + (hi - lo + 1) / 2;
            int c = 0;
            for (int i = tid; i < V; i += nt) c += __float_as_uint(x[i]) >= mid;
            c = block_reduce(c, si, 0, OpSumI());
            if (c >= k) lo = mid; else hi = mid - 1;
        }
        cut = __uint_as_float(lo);
    }
    if (row.top_p < 1.0f) {   /* largest v with mass(p >= v) >= top_p * mass(kept) */
        double tot = 0.0;
        for (int i = tid; i < V; i += nt) if (x[i] > 0.0f && x[i] >= cut) tot += x[i];
        tot = block_reduce(tot, sd, 0.0, OpSumD());
        const double need = (double)row.top_p * tot;
        unsigned int lo = __float_as_uint(cut) > 1u ? __float_as_uint(cut) : 1u, hi = 0x3f800000u;
        while (lo < hi) {
            const unsigned int mid = lo + (hi - lo + 1) / 2;
            double m = 0.0;
            for (int i = tid; i < V; i += nt)
                if (x[i] > 0.0f && x[i] >= cut && __float_as_uint(x[i]) >= mid) m += x[i];
            m = block_reduce(m, sd, 0.0, OpSumD());
            if (m >= need) lo = mid; else hi = mid - 1;
        }
        cut = __uint_as_float(lo);
    }
    if (row.min_p > 0.0f) cut = fmaxf(cut, row.min_p);  /* min_p * max p, max p = 1 */

    /* inverse CDF in id order: thread tid owns ids [beg, end) */
    const int chunk = (V + nt - 1) / nt, beg = min(V, tid * chunk), end = min(V, beg + chunk);
    double local = 0.0;
    for (int i = beg; i < end; i++) if (x[i] >= cut && x[i] > 0.0f) local += x[i];
    double kept;
    double run = block_exclusive_scan(local, sd, &kept);
    const double target = (double)u * kept;
    if (tid == 0) { s_pick[0] = INT_MAX; s_pick[1] = -1; }
    __syncthreads();
    int found = -1, last = -1;
    if (run <= target || tid == 0) {
        for (int i = beg; i < end; i++) {
            if (x[i] < cut || x[i] <= 0.0f) continue;
            run += x[i];
            last = i;
            if (run > target) { found = i; break; }
        }
    } else {
        for (int i = end - 1; i >= beg; i--)
            if (x[i] >= cut && x[i] > 0.0f) { last = i; break; }
    }
    if (found >= 0) atomicMin(&s_pick[0], found);
    if (last >= 0) atomicMax(&s_pick[1], last);
    __syncthreads();
    const int tok = s_pick[0] != INT_MAX ? s_pick[0] : s_pick[1];   /* rounding fallback */
    __syncthreads();
    return tok;
}

/* One logit as float (exact for every input type). */
__device__ __forceinline__ float logit(const float *p, int i) { return p[i]; }
__device__ __forceinline__ float logit(const __half *p, int i) { return __half2float(p[i]); }
__device__ __forceinline__ float logit(const __nv_bfloat16 *p, int i) { return __bfloat162float(p[i]); }

/* A row of raw logits in its storage type, read as floats: raw[i]. */
template <typename L>
struct RawRow {
    const L *p;
    __device__ __forceinline__ float operator[](int i) const { return logit(p, i); }
};

/* f(i, raw[i]) for every i < V this thread owns, in increasing i. Rows on a
 * 16-byte boundary are read 16 bytes per load (8 fp16/bf16 or 4 fp32 logits), two
 * loads in flight per thread: the passes over a row are bound by loads in flight,
 * not bytes. Otherwise 16-bit rows on a 4-byte boundary two logits per load, else
 * one. Which thread owns an id differs between the ways, so f must not depend on
 * it (sums change only in their order). */
template <typename L, typename F>
__device__ __forceinline__ void for_each_logit(const RawRow<L> &raw, int V, F f)
{
    const int tid = threadIdx.x, nt = blockDim.x;
    constexpr int W = 16 / (int)sizeof(L);          /* logits per 16-byte load */
    if (((uintptr_t)raw.p & 15) == 0) {
        const uint4 *q = reinterpret_cast<const uint4 *>(raw.p);
        const int nv = V / W;
#pragma unroll 2
        for (int j = tid; j < nv; j += nt) {
            const uint4 u = q[j];
            const int i = j * W;
            if constexpr (sizeof(L) == 2) {
                typedef typename Pair<L>::type P2;
                const P2 *h = reinterpret_cast<const P2 *>(&u);
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    const float2 v = to_f32x2(h[k]);
                    f(i + 2 * k, v.x);
                    f(i + 2 * k + 1, v.y);
                }
            } else {
                f(i, __uint_as_float(u.x));
                f(i + 1, __uint_as_float(u.y));
                f(i + 2, __uint_as_float(u.z));
                f(i + 3, __uint_as_float(u.w));
            }
        }
        for (int i = nv * W + tid; i < V; i += nt) f(i, raw[i]);
        return;
    }
    if constexpr (sizeof(L) == 2) {
        if (((uintptr_t)raw.p & 3) == 0) {
            typedef typename Pair<L>::type P2;
            for (int i = 2 * tid; i + 1 < V; i += 2 * nt) {
                const float2 v = to_f32x2(*reinterpret_cast<const P2 *>(raw.p + i));
                f(i, v.x);
                f(i + 1, v.y);
            }
            if ((V & 1) && tid == (V / 2) % nt) f(V - 1, raw[V - 1]);
            return;
        }
    }
    for (int i = tid; i < V; i += nt) f(i, raw[i]);
}

template <typename L>
__global__ void __launch_bounds__(SAMPLE_THREADS)
sample_kernel(const L *logits, int ld, float *work, int V, const __grid_constant__ SampleInputs in,
              int max_logprobs, const SampleOutputs out, SampleSplit split)
{
    __shared__ float sf[32];
    __shared__ double sd[33];
    __shared__ int si[32];
    __shared__ ValId sv[32];
    __shared__ int s_pick[2];
    const int r = blockIdx.x, tid = threadIdx.x, nt = blockDim.x, splits = gridDim.y;
    /* the inputs: in device memory, or in the launch's own parameter space */
    const char *base = in.dev ? static_cast<const char *>(in.dev)
                              : reinterpret_cast<const char *>(in.bytes);
    const SamplingRow row = reinterpret_cast<const SamplingRow *>(base)[r];
    const TokenAdjust *adj = reinterpret_cast<const TokenAdjust *>(base + in.o_adj);
    const float *uniforms = reinterpret_cast<const float *>(base + in.o_u);
    int32_t *tokens = out.tokens, *ranks = out.ranks, *topk_ids = out.topk_ids;
    float *logprobs = out.logprobs, *topk_logprobs = out.topk_logprobs;
    const RawRow<L> raw = {logits + (size_t)r * ld};
    float *x = work + (size_t)r * V;

    /* Greedy with nothing to adjust (the common decode case): ONE pass over the
     * row finds the argmax and, online, each thread's exp-sum relative to its own
     * running max (rescaled when that grows); the block then rescales the partial
     * sums to the row max. The rank is 1 by definition, and the row is never
     * copied to work. Otherwise a max pass, then an exp-sum pass. Terms in float,
     * sums in double, both ways. */
    const bool plain_greedy = row.target_token < 0 && row.temperature == 0.0f &&
                              row.adj_count == 0;
    if (!plain_greedy && blockIdx.y > 0) return;          /* the row runs in block 0 */
    int token = -1;
    float m = -INFINITY;
    double lse = -INFINITY;
    if (plain_greedy) {
        /* this block's ids [lo, hi): whole 16-byte chunks (8 ids) per split */
        const int per = ((V + splits - 1) / splits + 7) / 8 * 8;
        const int lo = min(V, (int)blockIdx.y * per), hi = min(V, lo + per);
        const RawRow<L> share = {raw.p + lo};
        ValId b = {-INFINITY, INT_MAX};
        double s = 0.0;
        for_each_logit(share, hi - lo, [&](int i, float x) {
            i += lo;
            const float v = nan_to_neginf(x);
            if (v == -INFINITY) return;
            if (v > b.v) {
                s = s * (double)expf(b.v - v) + 1.0;
                b.v = v;
                b.id = i;
            } else {
                s += (double)expf(v - b.v);
                if (v == b.v && i < b.id) b.id = i;
            }
        });
        const float mine = b.v;
        b = block_argmax(b, sv);
        m = b.v;
        if (m > -INFINITY) {
            s = mine > -INFINITY ? s * (double)expf(mine - m) : 0.0;
            s = block_reduce(s, sd, 0.0, OpSumD());
        }
        if (splits > 1) {
            GreedyPart *parts = reinterpret_cast<GreedyPart *>(split.parts) + (size_t)r * splits;
            if (tid == 0) parts[blockIdx.y] = GreedyPart{m, b.id, m > -INFINITY ? s : 0.0};
            if (!last_block_of(split.tickets + r, splits)) return;
            if (tid < 32) {                    /* warp 0 merges the shares, lane k share k */
                GreedyPart q = {-INFINITY, INT_MAX, 0.0};
                if (tid < splits) {
                    const GreedyPart *g = parts + tid;
                    q = GreedyPart{__ldcg(&g->v), __ldcg(&g->id), __ldcg(&g->s)};
                }
                ValId c = {q.v, q.id};
                for (int o = 16; o > 0; o >>= 1) {
                    const float ov = __shfl_xor_sync(0xffffffffu, c.v, o);
                    const int oi = __shfl_xor_sync(0xffffffffu, c.id, o);
                    if (valid_before(ov, oi, c.v, c.id)) c = ValId{ov, oi};
                }
                double t = q.v > -INFINITY ? q.s * (double)expf(q.v - c.v) : 0.0;
                for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
                if (tid == 0) sv[0] = c, sd[0] = t;
            }
            __syncthreads();
            b = sv[0];
            s = sd[0];
            m = b.v;
        }
        token = m == -INFINITY ? -1 : b.id;
        if (m > -INFINITY) lse = (double)m + log(s);
    } else {
        /* 1. raw statistics: max (NaN ignored by fmaxf) */
        for_each_logit(raw, V, [&](int, float x) { m = fmaxf(m, x); });
        m = block_reduce(m, sf, -INFINITY, OpMax());
        /* log-sum-exp of the raw row */
        lse = m;
        if (m > -INFINITY) {
            double s = 0.0;
            for_each_logit(raw, V, [&](int, float x) {
                if (!isnan(x)) s += (double)expf(x - m);
            });
            s = block_reduce(s, sd, 0.0, OpSumD());
            lse = (double)m + log(s);
        }
    }

    /* 2.-3. the token */
    if (plain_greedy) {
        /* found above */
    } else if (row.target_token >= 0) {
        token = row.target_token;
    } else {
        for (int i = tid; i < V; i += nt) x[i] = nan_to_neginf(raw[i]);
        __syncthreads();
        if (tid == 0) adjust_row(x, row, adj);
        __syncthreads();
        if (row.temperature == 0.0f) {
            ValId b = {-INFINITY, INT_MAX};
            for (int i = tid; i < V; i += nt)
                if (valid_before(x[i], i, b.v, b.id)) { b.v = x[i]; b.id = i; }
            b = block_argmax(b, sv);
            token = b.v == -INFINITY ? -1 : b.id;
        } else {
            token = sample_row(x, V, row, uniforms[r], sf, sd, si, s_pick);
        }
    }
    if (token < 0) {                       /* every token masked: the host reports it */
        if (tid == 0) {
            tokens[r] = -1;
            if (out.tokens_dev) out.tokens_dev[r] = -1;
            logprobs[r] = -INFINITY;
            ranks[r] = 0;
        }
        for (int j = tid; j < max_logprobs; j += nt) {
            topk_ids[(size_t)r * max_logprobs + j] = -1;
            topk_logprobs[(size_t)r * max_logprobs + j] = -INFINITY;
        }
        return;
    }

    /* its raw logprob and rank = 1 + #{raw > raw[token]} */
    const float tv = nan_to_neginf(raw[token]);
    int c = 0;
    if (!plain_greedy) {                   /* the argmax has nothing above it */
        for_each_logit(raw, V, [&](int, float x) { c += x > tv; });
        c = block_reduce(c, si, 0, OpSumI());
    }
    if (tid == 0) {
        tokens[r] = token;
        if (out.tokens_dev) out.tokens_dev[r] = token;
        logprobs[r] = m > -INFINITY ? (float)((double)tv - lse) : -INFINITY;
        ranks[r] = 1 + c;
    }

    /* top num_logprobs raw logits, (value desc, id asc); unused slots -1 / -inf */
    if (max_logprobs > 0) {
        const int k = min((int)row.num_logprobs, V);
        float pv = INFINITY;
        int pid = -1;
        for (int j = 0; j < max_logprobs; j++) {
            const size_t o = (size_t)r * max_logprobs + j;
            if (j >= k) {
                if (tid == 0) { topk_ids[o] = -1; topk_logprobs[o] = -INFINITY; }
                continue;
            }
            ValId b = {-INFINITY, INT_MAX};
            for (int i = tid; i < V; i += nt) {
                const float v = nan_to_neginf(raw[i]);
                const bool after = j == 0 || pv > v || (pv == v && pid < i);
                if (after && valid_before(v, i, b.v, b.id)) { b.v = v; b.id = i; }
            }
            b = block_argmax(b, sv);
            pv = b.v;
            pid = b.id;
            if (tid == 0) {
                topk_ids[o] = b.id;
                topk_logprobs[o] = m > -INFINITY ? (float)((double)b.v - lse) : -INFINITY;
            }
        }
    }
}

template <typename L>
static void sample_launch(const void *logits, int ld, float *work, int R, int V,
                          const SampleInputs *in, int max_logprobs, SampleOutputs out,
                          SampleSplit split, cudaStream_t stream)
{
    sample_kernel<L><<<dim3(R, split.splits), SAMPLE_THREADS, 0, stream>>>(
        (const L *)logits, ld, work, V, *in, max_logprobs, out, split);
}

extern "C" cudaError_t sample_cuda(const void *logits, int dtype, int ld, float *work, int R,
                                   int V, const SampleInputs *in, int max_logprobs,
                                   SampleOutputs out, SampleSplit split, cudaStream_t stream)
{
    if (R <= 0 || V <= 0) return cudaSuccess;
    if (ld < V || !in) return cudaErrorInvalidValue;
    if (split.splits < 1 || split.splits > SAMPLE_MAX_SPLITS ||
        (split.splits > 1 && (!split.parts || !split.tickets)))
        return cudaErrorInvalidValue;
    switch (dtype) {
    case 0: sample_launch<float>(logits, ld, work, R, V, in, max_logprobs, out, split, stream); break;
    case 1: sample_launch<__half>(logits, ld, work, R, V, in, max_logprobs, out, split, stream); break;
    case 2: sample_launch<__nv_bfloat16>(logits, ld, work, R, V, in, max_logprobs, out, split, stream); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}
