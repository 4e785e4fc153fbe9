/* decode_fused.cu — a one-token step (batch-1 decode) of the whole GPT-2 forward
 * in ONE persistent kernel, fp16/bf16.
 *
 * At batch 1 a step is ~64 dependent kernels that each move 1-20 MB of weights:
 * launch and drain latencies, not bytes, set the time. Here one CTA per SM runs
 * every layer, separated by grid-wide barriers only where data must cross CTAs
 * (5 per layer), and the weight stream never waits for them:
 *   - L2 prefetch: at the start of each phase every CTA issues prefetch.global.L2
 *     for its share of the next `lookahead` bytes of weights (in the order the
 *     phases read them), so DRAM stays busy through barriers and compute;
 *   - before each barrier wait a thread loads its first FD_PF weight rows of the
 *     next phase into registers (the weights depend on nothing earlier).
 * Each CTA keeps the whole residual row in shared memory (every CTA computes it,
 * the layernorms need it whole), so no residual ever goes through global memory.
 *
 * Phases of layer l (M = 1, C = n_embd; "partials" are fp32 in the work buffer):
 *   A  x = LN1(r); qkv partials = x @ c_attn           (r = embed, or r + mlp out)
 *   B  attention, split-KV: CTA (h, j) of H x NS takes keys [j L / NS, (j+1) L / NS);
 *      the CTA holding the last key writes this step's K/V to the paged cache
 *   C0 a = merge of B's splits (log-sum-exp); proj partials = a @ attn_proj
 *   C  r += proj; x = LN2(r); fc partials = x @ c_fc
 *   D  h = act(fc); mlp partials = h @ mlp_proj
 * and last: r += mlp; logits = LN_f(r) @ wte^T. Intermediate values are rounded to
 * the storage type where the per-layer kernels store them (qkv, attention output,
 * residual, fc, layernorm outputs), so both paths compute the same math.
 *
 * GEMV work split (w (K, N) row-major, N a multiple of 64): the output is cut in
 * 64-column chunks and the (chunk, row) segments (128 bytes of one row each) are
 * dealt in contiguous equal shares of W = ceil(N/64 * K / G) to the G CTAs; W <= K,
 * so a share touches at most two chunks. CTA b's partial of chunk c goes to slot
 * c + b (unique: the CTAs of chunk c are consecutive), and a reader sums the slots
 * of a chunk in CTA order: the result does not depend on scheduling.
 *
 * Barriers: a counter that every CTA increments once per barrier (release) and
 * waits on (acquire) until it reaches G x the barriers passed; the last CTA to
 * leave the kernel resets it, so graph replays start from zero. The grid is at
 * most one CTA per SM and launched cooperatively (co-residency guaranteed); a
 * wait that spins for more than 2 s traps instead of hanging.
 * Data written by other CTAs is read with ld.global.cg (L2), never through L1.
 *
 * Measured (H200, fp16, bench_decode; GPT2_ENGINE_FUSED_TRACE for the phases): it is
 * correct (tests/test_fused_decode.py) but SLOWER than the per-layer kernels under
 * programmatic dependent launch: gpt2 0.445 against 0.377 ms per token, gpt2-xl 3.76
 * against 2.09. Every phase costs 5-7 us (gpt2): building its input from the partials
 * 1.6-2.7, its matmul 1.6-1.9, the barrier with the slowest CTA 1.8-3.3. A grid barrier
 * plus the partial-sum round trip costs what a PDL kernel boundary costs, so with as
 * many dependent steps as kernels nothing is gained; hence opt-in
 * (GPT2_ENGINE_FUSED_DECODE=1, csrc/core/decode_fused_cuda.c). */
#include "common.cuh"
#include "launch.cuh"

#define FD_THREADS 512
#define FD_WARPS (FD_THREADS / 32)
#define FD_RL (FD_THREADS / 8)   /* row-lanes of a GEMV: 8 threads x 16 bytes per row */
#define FD_PF 8                  /* weight rows per thread loaded before a barrier wait */
#define FD_LM_LOADS 8            /* lm_head: 16-byte loads per lane in flight, CPL chunks
                                  * per lane of a row (C <= 256 CPL) x 8 / CPL rows */

namespace {

/* ---- grid barrier ---- */
__device__ __forceinline__ unsigned ld_acquire(const unsigned *p)
{
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

/* Release / acquire at gpu scope through thread 0, ordered for the rest of the CTA
 * by __syncthreads (no fence instructions: a fence would also wait for this thread's
 * outstanding prefetches, and warp 0 issues none). */
__device__ __forceinline__ void grid_arrive(unsigned *count)
{
    __syncthreads();                       /* every thread's writes of this phase are done */
    if (threadIdx.x == 0) asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(count) : "memory");
}

__device__ __forceinline__ void grid_wait(const unsigned *count, unsigned target)
{
    if (threadIdx.x == 0 && ld_acquire(count) < target) {
        const unsigned long long t0 = globaltimer();
        while (ld_acquire(count) < target)
            if (globaltimer() - t0 > 2000000000ull) __trap();   /* a bug, not a wait */
    }
    __syncthreads();
}

/* GPT2_ENGINE_FUSED_TRACE (a.trace != NULL): CTA 0's thread 0 adds the time since its
 * previous mark to trace[i]: for phase k = A, B, C0, C, D (0-4), 3k = building its input,
 * 3k + 1 = its matmul / attention, 3k + 2 = from there to the end of the next barrier
 * (arrive, the next phase's prefetches, waiting for the slowest CTA); 15 = the final
 * residual + ln_f, 16 = the lm_head, 17 = launches. The host prints the means. */
__device__ __forceinline__ void trace_mark(const FusedDecodeArgs &a, int kind, unsigned long long &t)
{
    if (!a.trace || blockIdx.x != 0 || threadIdx.x != 0) return;
    const unsigned long long now = globaltimer();
    if (kind >= 0) a.trace[kind] += now - t;
    t = now;
}

/* ---- small helpers ---- */

template <typename T> __device__ __forceinline__ float ld_f(const void *p, size_t i)
{
    return to_f32(reinterpret_cast<const T *>(p)[i]);
}

template <typename T> __device__ __forceinline__ float rnd(float v) { return to_f32(from_f32<T>(v)); }

/* ---- GEMV geometry: this CTA's flat segments [fb, fe) of (chunk, row) ---- */
struct Geo {
    int K, N, W, fb, fe, c0, bnd;   /* bnd: first flat index of chunk c0 + 1 */
};

__device__ __forceinline__ int share_of(int K, int N) { return ((N >> 6) * K + gridDim.x - 1) / gridDim.x; }

__device__ __forceinline__ Geo geo(int K, int N)
{
    Geo g;
    const int S = (N >> 6) * K;
    g.K = K;
    g.N = N;
    g.W = share_of(K, N);
    g.fb = min(S, (int)blockIdx.x * g.W);
    g.fe = min(S, g.fb + g.W);
    g.c0 = g.fb / K;
    g.bnd = (g.c0 + 1) * K;
    return g;
}

/* Output n of a GEMV (K, N): the sum of its chunk's partials in CTA order (the
 * loads of up to FD_SLOTS slots in flight at once). */
#define FD_SLOTS 16
#define FD_MERGE 8

/* Where output n's partials lie: *p is its first slot (slots 64 floats apart); returns
 * the index of its last slot (b1 - b0: the CTAs of its chunk, less one). W = share_of. */
__device__ __forceinline__ int chunk_slots(const float *part, int K, int W, int n, const float **p)
{
    const int c = n >> 6, b0 = c * K / W, b1 = ((c + 1) * K - 1) / W;
    *p = part + (size_t)(c + b0) * 64 + (n & 63);
    return b1 - b0;
}

__device__ __forceinline__ float part_sum(const float *part, int K, int N, int n)
{
    const float *p;
    const int last = chunk_slots(part, K, share_of(K, N), n, &p);
    float s = 0.0f;
    for (int i0 = 0; i0 <= last; i0 += FD_SLOTS) {
        float v[FD_SLOTS];
#pragma unroll
        for (int i = 0; i < FD_SLOTS; i++) v[i] = i0 + i <= last ? __ldcg(p + (size_t)(i0 + i) * 64) : 0.0f;
#pragma unroll
        for (int i = 0; i < FD_SLOTS; i++) s += v[i];
    }
    return s;
}

/* out[v] = part_sum(part, K, N, n[v]) for NV outputs at once: when every chunk has at
 * most SL slots (all GPT-2 shapes), the NV * SL loads are issued together. */
template <int NV, int SL>
__device__ __forceinline__ void part_sums(const float *part, int K, int N, const int (&n)[NV],
                                          const bool (&in)[NV], float (&out)[NV])
{
    const int W = share_of(K, N);
    if (K / W + 2 > SL) {                           /* many slots per chunk: tiny models */
#pragma unroll
        for (int v = 0; v < NV; v++) out[v] = in[v] ? part_sum(part, K, N, n[v]) : 0.0f;
        return;
    }
    float x[NV][SL];
#pragma unroll
    for (int v = 0; v < NV; v++) {
        const float *p;
        const int last = chunk_slots(part, K, W, n[v], &p);
#pragma unroll
        for (int i = 0; i < SL; i++) x[v][i] = in[v] && i <= last ? __ldcg(p + (size_t)i * 64) : 0.0f;
    }
#pragma unroll
    for (int v = 0; v < NV; v++) {
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < SL; i++) s += x[v][i];
        out[v] = s;
    }
}

/* The rows of the input this CTA's share reads: [a0, a1) of chunk c0 and [0, b1) of c0 + 1. */
__device__ __forceinline__ void share_rows(const Geo &g, int &a0, int &a1, int &b1)
{
    a0 = g.fb - g.c0 * g.K;
    a1 = min(g.fe, g.bnd) - g.c0 * g.K;
    b1 = max(0, g.fe - g.bnd);
    if (g.fb >= g.fe) a0 = a1 = b1 = 0;
}

template <typename T>
__device__ __forceinline__ const T *seg_ptr(const T *w, const Geo &g, int f, int cg)
{
    int c = g.c0, r = f - g.c0 * g.K;
    if (r >= g.K) { r -= g.K; c++; }
    return w + (size_t)r * g.N + c * 64 + cg * 8;
}

template <typename T>
__device__ __forceinline__ void gemv_preload(const T *w, const Geo &g, uint4 (&pre)[FD_PF])
{
    const int cg = threadIdx.x & 7, rl = threadIdx.x >> 3;
#pragma unroll
    for (int i = 0; i < FD_PF; i++) {
        const int f = g.fb + rl + FD_RL * i;
        pre[i] = f < g.fe ? ldg16(seg_ptr(w, g, f, cg)) : make_uint4(0u, 0u, 0u, 0u);
    }
}

template <typename T>
__device__ __forceinline__ void fma_seg(float (&a0)[8], float (&a1)[8], const uint4 &u,
                                        const Geo &g, int f, const float *xs)
{
    int r = f - g.c0 * g.K;
    const bool second = r >= g.K;
    if (second) r -= g.K;
    const float xv = xs[r], x0 = second ? 0.0f : xv, x1 = second ? xv : 0.0f;
    float wf[8];
    unpack8(u, wf, T());
#pragma unroll
    for (int j = 0; j < 8; j++) {
        a0[j] = fmaf(x0, wf[j], a0[j]);
        a1[j] = fmaf(x1, wf[j], a1[j]);
    }
}

/* This CTA's share of x @ w into part (slots c + blockIdx.x); xs[r] = input row r. */
template <typename T>
__device__ void gemv_run(const T *w, const Geo &g, const uint4 (&pre)[FD_PF], const float *xs,
                         float *part, float *red)
{
    const int t = threadIdx.x, cg = t & 7, rl = t >> 3, lane = t & 31, warp = t >> 5;
    float a0[8], a1[8];
#pragma unroll
    for (int j = 0; j < 8; j++) a0[j] = a1[j] = 0.0f;
#pragma unroll
    for (int i = 0; i < FD_PF; i++) {
        const int f = g.fb + rl + FD_RL * i;
        if (f < g.fe) fma_seg<T>(a0, a1, pre[i], g, f, xs);
    }
    for (int base = g.fb + rl + FD_RL * FD_PF; base < g.fe; base += FD_RL * FD_PF) {
        uint4 v[FD_PF];
#pragma unroll
        for (int i = 0; i < FD_PF; i++) {
            const int f = base + FD_RL * i;
            v[i] = f < g.fe ? ldg16(seg_ptr(w, g, f, cg)) : make_uint4(0u, 0u, 0u, 0u);
        }
#pragma unroll
        for (int i = 0; i < FD_PF; i++) {
            const int f = base + FD_RL * i;
            if (f < g.fe) fma_seg<T>(a0, a1, v[i], g, f, xs);
        }
    }
#pragma unroll
    for (int j = 0; j < 8; j++) {
        a0[j] += __shfl_xor_sync(0xffffffffu, a0[j], 8);
        a0[j] += __shfl_xor_sync(0xffffffffu, a0[j], 16);
        a1[j] += __shfl_xor_sync(0xffffffffu, a1[j], 8);
        a1[j] += __shfl_xor_sync(0xffffffffu, a1[j], 16);
    }
    if (lane < 8) {
#pragma unroll
        for (int j = 0; j < 8; j++) {
            red[(warp * 2) * 64 + lane * 8 + j] = a0[j];
            red[(warp * 2 + 1) * 64 + lane * 8 + j] = a1[j];
        }
    }
    __syncthreads();
    if (t < 128 && g.fb < g.fe) {
        const int set = t >> 6, col = t & 63;
        if (set == 0 || g.fe > g.bnd) {
            float s = 0.0f;
#pragma unroll
            for (int wi = 0; wi < FD_WARPS; wi++) s += red[(wi * 2 + set) * 64 + col];
            part[(size_t)(g.c0 + set + blockIdx.x) * 64 + col] = s;
        }
    }
}

/* ---- the residual row (every CTA holds it: xr[C] fp32 of stored values) ----
 * Thread t owns elements t + k * FD_THREADS, k < EPT (C <= EPT * FD_THREADS). The bias
 * of the residual add and the layernorm's weights are loaded before the barrier wait. */
template <int EPT> struct RowParams {
    float bias[EPT], g[EPT], b[EPT];
};

template <typename T, int EPT>
__device__ __forceinline__ void row_params(RowParams<EPT> &p, int C, const void *bias,
                                           const void *g, const void *b)
{
#pragma unroll
    for (int k = 0; k < EPT; k++) {
        const int i = threadIdx.x + k * FD_THREADS;
        const bool in = i < C;
        p.bias[k] = in && bias ? ld_f<T>(bias, i) : 0.0f;
        p.g[k] = in ? ld_f<T>(g, i) : 0.0f;
        p.b[k] = in ? ld_f<T>(b, i) : 0.0f;
    }
}

/* With part: xr += the GEMV (K, C)'s output + bias (rounded as stored). Then xs =
 * LN(xr) * g + b, rounded. */
template <typename T, int EPT>
__device__ void residual_ln(float *xr, float *xs, const float *part, int K, int C,
                            const RowParams<EPT> &p, float eps, float *scratch)
{
    const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
    int n[EPT];
    bool in[EPT];
    float v[EPT];
#pragma unroll
    for (int k = 0; k < EPT; k++) {
        n[k] = t + k * FD_THREADS;
        in[k] = n[k] < C;
    }
    if (part) part_sums<EPT, 32 / EPT>(part, K, C, n, in, v);
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < EPT; k++) {
        if (!in[k]) { v[k] = 0.0f; continue; }
        const float x = part ? rnd<T>(xr[n[k]] + v[k] + p.bias[k]) : xr[n[k]];
        xr[n[k]] = x;
        v[k] = x;
        s += x;
    }
    /* two passes over the registers (mean, then the squared deviations), as the
     * layernorm kernels do */
    s = warp_sum(s);
    if (lane == 0) scratch[warp] = s;
    __syncthreads();
    s = 0.0f;
#pragma unroll
    for (int w = 0; w < FD_WARPS; w++) s += scratch[w];
    const float mean = s / C;
    float q = 0.0f;
#pragma unroll
    for (int k = 0; k < EPT; k++)
        if (in[k]) q += (v[k] - mean) * (v[k] - mean);
    q = warp_sum(q);
    if (lane == 0) scratch[32 + warp] = q;
    __syncthreads();
    q = 0.0f;
#pragma unroll
    for (int w = 0; w < FD_WARPS; w++) q += scratch[32 + w];
    const float rstd = rsqrtf(q / C + eps);
#pragma unroll
    for (int k = 0; k < EPT; k++)
        if (in[k]) xs[n[k]] = rnd<T>((v[k] - mean) * rstd * p.g[k] + p.b[k]);
    __syncthreads();
}

/* ---- L2 prefetch of the weight stream (phases in reading order) ---- */
struct Stream {
    const FusedDecodeArgs *a;
    size_t es, layer_bytes, total;
};

/* phase k of a layer: 0 qkv, 1 attention (no weights), 2 proj, 3 fc, 4 mlp proj */
__device__ __forceinline__ void phase_span(const Stream &s, int k, size_t &off, size_t &bytes)
{
    const size_t c2 = (size_t)s.a->C * s.a->C * s.es;
    off = (k == 0 ? 0 : k <= 2 ? 3 : k == 3 ? 4 : 8) * c2;
    bytes = (k == 0 ? 3 : k == 1 ? 0 : k == 2 ? 1 : 4) * c2;
}

__device__ __forceinline__ const char *phase_ptr(const Stream &s, int l, int k)
{
    const FusedDecodeLayer &L = s.a->layers[l];
    const void *p = k == 0 ? L.qkv_w : k == 2 ? L.proj_w : k == 3 ? L.fc_w : L.fc2_w;
    return reinterpret_cast<const char *>(p);
}

/* prefetch stream bytes [lo, hi): this CTA's lines, spread over all threads */
__device__ void l2_prefetch(const Stream &s, size_t lo, size_t hi)
{
    if (threadIdx.x < 32) return;          /* warp 0 (the barrier's thread) issues none */
    const size_t step = (size_t)128 * gridDim.x * (FD_THREADS - 32);
    const size_t mine = (size_t)128 * (blockIdx.x * (FD_THREADS - 32) + threadIdx.x - 32);
    while (lo < hi) {
        const char *base;
        size_t beg, end;                       /* the phase holding lo, as stream bytes */
        const int l = (int)(lo / s.layer_bytes);
        if (l >= s.a->n_layer) {
            base = reinterpret_cast<const char *>(s.a->wte);
            beg = s.layer_bytes * s.a->n_layer;
            end = s.total;
        } else {
            const size_t r = lo - (size_t)l * s.layer_bytes;
            int k = 0;
            size_t off = 0, len = 0;
            for (int kk = 0; kk < 5; kk++) {
                phase_span(s, kk, off, len);
                if (len && r >= off && r < off + len) { k = kk; break; }
            }
            phase_span(s, k, off, len);
            base = phase_ptr(s, l, k);
            beg = (size_t)l * s.layer_bytes + off;
            end = beg + len;
        }
        const size_t stop = min(hi, end);
        for (size_t x = lo - beg + mine; x < stop - beg; x += step) prefetch_l2(base + x);
        lo = stop;
    }
}

/* ---- attention (phase B): CTA item = h * NS + j ---- */
template <typename T>
__device__ void attention_split(const FusedDecodeArgs &a, int l, const float *pq, float *att,
                                float *sm)
{
    const int H = a.H, D = a.D, C = a.C, NS = a.nsplit, item = blockIdx.x;
    if (item >= H * NS) return;
    const int h = item / NS, j = item - h * NS, t = threadIdx.x, lane = t & 31, warp = t >> 5;
    const int L = a.seq_lens[0], t0 = (int)((long long)j * L / NS),
              t1 = (int)((long long)(j + 1) * L / NS);
    const FusedDecodeLayer &Lw = a.layers[l];
    float *qs = sm, *kn = qs + D, *vn = kn + D, *wm = vn + D, *wl = wm + FD_WARPS,
          *wo = wl + FD_WARPS;
    for (int d = t; d < D; d += FD_THREADS) {
        const int n = h * D + d;
        const int idx[3] = {n, C + n, 2 * C + n};
        const bool want[3] = {true, j == NS - 1, j == NS - 1};
        float qkv[3];
        part_sums<3, 8>(pq, C, 3 * C, idx, want, qkv);
        if (Lw.qkv_b) {
#pragma unroll
            for (int i = 0; i < 3; i++) qkv[i] += want[i] ? ld_f<T>(Lw.qkv_b, idx[i]) : 0.0f;
        }
        qs[d] = rnd<T>(qkv[0]);
        if (j == NS - 1) {
            kn[d] = rnd<T>(qkv[1]);
            vn[d] = rnd<T>(qkv[2]);
            const int32_t slot = a.slot_mapping[0];
            if (slot >= 0) {
                const size_t blk = (size_t)(slot / a.block_size), off = (size_t)(slot % a.block_size);
                const size_t idx = ((blk * H + h) * a.block_size + off) * D + d;
                reinterpret_cast<T *>(Lw.k_cache)[idx] = from_f32<T>(kn[d]);
                reinterpret_cast<T *>(Lw.v_cache)[idx] = from_f32<T>(vn[d]);
            }
        }
    }
    __syncthreads();
    const int E = D >> 5;                       /* elements per lane: D = 32 E, E <= 4 */
    const T *kc = reinterpret_cast<const T *>(Lw.k_cache), *vc = reinterpret_cast<const T *>(Lw.v_cache);
    const int32_t *bt = a.block_tables;
    float m = -INFINITY, lsum = 0.0f, o[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int tok = t0 + warp; tok < t1; tok += FD_WARPS) {
        float kv[4], vv[4];
        if (tok == L - 1) {
#pragma unroll
            for (int e = 0; e < 4; e++)
                if (e < E) { kv[e] = kn[lane * E + e]; vv[e] = vn[lane * E + e]; }
        } else {
            const size_t blk = (size_t)bt[tok / a.block_size], off = (size_t)(tok % a.block_size);
            const size_t base = ((blk * H + h) * a.block_size + off) * D + (size_t)lane * E;
#pragma unroll
            for (int e = 0; e < 4; e++)
                if (e < E) { kv[e] = to_f32(kc[base + e]); vv[e] = to_f32(vc[base + e]); }
        }
        float s = 0.0f;
#pragma unroll
        for (int e = 0; e < 4; e++)
            if (e < E) s = fmaf(qs[lane * E + e], kv[e], s);
        s = warp_sum(s) * a.scale;
        const float mn = fmaxf(m, s), corr = expf(m - mn), p = expf(s - mn);
        lsum = lsum * corr + p;
#pragma unroll
        for (int e = 0; e < 4; e++) o[e] = o[e] * corr + p * vv[e];
        m = mn;
    }
    if (lane == 0) { wm[warp] = m; wl[warp] = lsum; }
#pragma unroll
    for (int e = 0; e < 4; e++)
        if (e < E) wo[warp * D + lane * E + e] = o[e];
    __syncthreads();
    float *dst = att + (size_t)item * (D + 2);
    for (int d = t; d < D; d += FD_THREADS) {
        float M = -INFINITY;
        for (int w = 0; w < FD_WARPS; w++) M = fmaxf(M, wm[w]);
        float ls = 0.0f, os = 0.0f;
        if (M > -INFINITY)
            for (int w = 0; w < FD_WARPS; w++) {
                const float f = wl[w] > 0.0f ? expf(wm[w] - M) : 0.0f;
                ls += wl[w] * f;
                os += wo[w * D + d] * f;
            }
        dst[2 + d] = os;
        if (d == 0) { dst[0] = M; dst[1] = ls; }
    }
}

/* attention output row r (head r / D) merged from the splits, rounded; each
 * split's (m, l, o[d]) loaded together, FD_SLOTS splits at a time */
template <typename T>
__device__ __forceinline__ float attention_merged(const FusedDecodeArgs &a, const float *att, int r)
{
    const int D = a.D, NS = a.nsplit, h = r / D, d = r - h * D;
    const float *p = att + (size_t)h * NS * (D + 2);
    float M = -INFINITY, ls = 0.0f, os = 0.0f;
    for (int j0 = 0; j0 < NS; j0 += FD_MERGE) {
        float m[FD_MERGE], l[FD_MERGE], o[FD_MERGE];
#pragma unroll
        for (int i = 0; i < FD_MERGE; i++) {
            const float *q = p + (size_t)(j0 + i) * (D + 2);
            const bool in = j0 + i < NS;
            m[i] = in ? __ldcg(q) : -INFINITY;
            l[i] = in ? __ldcg(q + 1) : 0.0f;
            o[i] = in ? __ldcg(q + 2 + d) : 0.0f;
        }
        float mb = M;
#pragma unroll
        for (int i = 0; i < FD_MERGE; i++) mb = fmaxf(mb, m[i]);
        const float corr = ls > 0.0f ? expf(M - mb) : 0.0f;   /* rescale the running sums */
        ls *= corr;
        os *= corr;
#pragma unroll
        for (int i = 0; i < FD_MERGE; i++)
            if (l[i] > 0.0f) {
                const float f = expf(m[i] - mb);
                ls += l[i] * f;
                os += o[i] * f;
            }
        M = mb;
    }
    return rnd<T>(os / ls);
}

/* ---- lm_head: logits[n] = xs . wte[n], rows dealt to every warp of the grid ---- */
template <typename T, int CPL, int ROWS = FD_LM_LOADS / CPL>
__device__ __forceinline__ void lm_load(const FusedDecodeArgs &a, int n0, uint4 (&v)[ROWS][CPL])
{
    const int lane = threadIdx.x & 31, cpr = a.C >> 3, nw = gridDim.x * FD_WARPS;
    const T *w = reinterpret_cast<const T *>(a.wte);
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        const int n = n0 + r * nw;
#pragma unroll
        for (int u = 0; u < CPL; u++) {
            const int c = lane + 32 * u;
            v[r][u] = n < a.V && c < cpr ? ldg16(w + (size_t)n * a.C + c * 8) : make_uint4(0u, 0u, 0u, 0u);
        }
    }
}

template <typename T, int CPL, int ROWS = FD_LM_LOADS / CPL>
__device__ void lm_head(const FusedDecodeArgs &a, uint4 (&v)[ROWS][CPL], const float *xs)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, cpr = a.C >> 3;
    const int nw = gridDim.x * FD_WARPS, gw = blockIdx.x * FD_WARPS + warp;
    T *out = reinterpret_cast<T *>(a.logits);
    const T *w = reinterpret_cast<const T *>(a.wte);
    /* this lane's chunks of x, packed back to T (they are T values: lossless), held in
     * registers for every row (from shared memory they would be 8-way bank conflicts) */
    uint4 xp[CPL];
#pragma unroll
    for (int u = 0; u < CPL; u++) {
        const int c = lane + 32 * u;
        T h[8];
#pragma unroll
        for (int e = 0; e < 8; e++) h[e] = from_f32<T>(c < cpr ? xs[c * 8 + e] : 0.0f);
        xp[u] = *reinterpret_cast<const uint4 *>(h);
    }
    for (int n0 = gw; n0 < a.V; n0 += ROWS * nw) {
        /* the rows two iterations ahead toward L2 while these are summed */
        const int nxt = n0 + ROWS * nw;
#pragma unroll
        for (int r = 0; r < ROWS; r++) {
            const int n = nxt + ROWS * nw + r * nw;
            if (n < a.V)
                for (int c = lane * 64; c < a.C; c += 32 * 64) prefetch_l2(w + (size_t)n * a.C + c);
        }
#pragma unroll
        for (int r = 0; r < ROWS; r++) {
            float s = 0.0f;
#pragma unroll
            for (int u = 0; u < CPL; u++) {
                float f[8], x[8];
                unpack8(v[r][u], f, T());
                unpack8(xp[u], x, T());
#pragma unroll
                for (int e = 0; e < 8; e++) s = fmaf(x[e], f[e], s);
            }
            s = warp_sum(s);
            const int n = n0 + r * nw;
            if (lane == 0 && n < a.V) out[n] = from_f32<T>(s);
        }
        if (nxt < a.V) lm_load<T, CPL>(a, nxt, v);
    }
}

template <typename T, int CPL>
__global__ void __launch_bounds__(FD_THREADS, 1) fused_decode_kernel(const __grid_constant__ FusedDecodeArgs a)
{
    extern __shared__ __align__(16) float sm[];
    const int C = a.C, t = threadIdx.x;
    float *xr = sm, *xs = xr + C, *red = xs + 4 * C, *att_sm = red + 2 * FD_WARPS * 64;
    __shared__ float scratch[64];
    auto work = [&](int i) { return a.work + (i & 1) * (size_t)a.work_floats; };
    int seq = 0;                       /* producing phases so far: writes go to work(seq) */
    unsigned barriers = 0;
    const unsigned G = gridDim.x;

    Stream st;
    st.a = &a;
    st.es = sizeof(T);
    st.layer_bytes = (size_t)12 * C * C * sizeof(T);
    st.total = st.layer_bytes * a.n_layer + (size_t)a.V * C * sizeof(T);
    size_t fetched = min(st.total, (size_t)a.lookahead);
    l2_prefetch(st, 0, fetched);
    auto stream_to = [&](int l, int k) {   /* keep `lookahead` bytes ahead of phase (l, k) */
        size_t off = 0, len = 0;
        if (l < a.n_layer) phase_span(st, k, off, len);
        const size_t pos = l < a.n_layer ? (size_t)l * st.layer_bytes + off : st.layer_bytes * a.n_layer;
        const size_t want = min(st.total, pos + (size_t)a.lookahead);
        if (want > fetched) { l2_prefetch(st, fetched, want); fetched = want; }
    };

    {   /* r = wte[id] + wpe[pos] */
        const int id = a.input_ids[0], pos = a.positions[0];
        for (int i = t; i < C; i += FD_THREADS)
            xr[i] = rnd<T>(ld_f<T>(a.wte, (size_t)id * C + i) + ld_f<T>(a.wpe, (size_t)pos * C + i));
        __syncthreads();
    }
    unsigned long long tmark = 0;
    trace_mark(a, -1, tmark);
    uint4 pre[FD_PF];
    RowParams<CPL / 2> rp;
    for (int l = 0; l < a.n_layer; l++) {
        const FusedDecodeLayer &Lw = a.layers[l];
        /* A: qkv */
        stream_to(l, 0);
        const Geo gq = geo(C, 3 * C);
        gemv_preload(reinterpret_cast<const T *>(Lw.qkv_w), gq, pre);
        row_params<T>(rp, C, l > 0 ? a.layers[l - 1].fc2_b : nullptr, Lw.ln1_w, Lw.ln1_b);
        if (l > 0) {
            grid_wait(a.sync, ++barriers * G);
            trace_mark(a, 14, tmark);
        }
        residual_ln<T>(xr, xs, l > 0 ? work(seq - 1) : nullptr, 4 * C, C, rp, a.eps, scratch);
        trace_mark(a, 0, tmark);
        gemv_run(reinterpret_cast<const T *>(Lw.qkv_w), gq, pre, xs, work(seq), red);
        trace_mark(a, 1, tmark);
        seq++;
        grid_arrive(a.sync);

        /* B: attention (the old keys toward L2 before the wait) */
        stream_to(l, 1);
        {
            const int item = blockIdx.x, NS = a.nsplit;
            if (item < a.H * NS) {
                const int h = item / NS, j = item - h * NS, L = a.seq_lens[0];
                const int t0 = (int)((long long)j * L / NS), t1 = (int)((long long)(j + 1) * L / NS);
                const size_t rowb = (size_t)a.D * sizeof(T);
                for (int tok = t0 + ((t - 32) >> 1); t >= 32 && tok < t1 && tok < L - 1;
                     tok += (FD_THREADS - 32) / 2) {
                    const size_t blk = (size_t)a.block_tables[tok / a.block_size];
                    const size_t off = ((blk * a.H + h) * a.block_size + tok % a.block_size) * rowb;
                    prefetch_l2(reinterpret_cast<const char *>((t & 1) ? Lw.v_cache : Lw.k_cache) + off);
                }
            }
        }
        grid_wait(a.sync, ++barriers * G);
        trace_mark(a, 2, tmark);
        attention_split<T>(a, l, work(seq - 1), work(seq), att_sm);
        trace_mark(a, 4, tmark);
        seq++;
        grid_arrive(a.sync);

        /* C0: attention proj (input: this share's rows of the merged attention) */
        stream_to(l, 2);
        const Geo gp = geo(C, C);
        gemv_preload(reinterpret_cast<const T *>(Lw.proj_w), gp, pre);
        grid_wait(a.sync, ++barriers * G);
        trace_mark(a, 5, tmark);
        {
            int a0, a1, b1;
            share_rows(gp, a0, a1, b1);
            const float *att = work(seq - 1);
            for (int r = a0 + t; r < a1; r += FD_THREADS) xs[r] = attention_merged<T>(a, att, r);
            for (int r = t; r < b1; r += FD_THREADS) xs[r] = attention_merged<T>(a, att, r);
            __syncthreads();
        }
        trace_mark(a, 6, tmark);
        gemv_run(reinterpret_cast<const T *>(Lw.proj_w), gp, pre, xs, work(seq), red);
        trace_mark(a, 7, tmark);
        seq++;
        grid_arrive(a.sync);

        /* C: r += proj; fc */
        stream_to(l, 3);
        const Geo gf = geo(C, 4 * C);
        gemv_preload(reinterpret_cast<const T *>(Lw.fc_w), gf, pre);
        row_params<T>(rp, C, Lw.proj_b, Lw.ln2_w, Lw.ln2_b);
        grid_wait(a.sync, ++barriers * G);
        trace_mark(a, 8, tmark);
        residual_ln<T>(xr, xs, work(seq - 1), C, C, rp, a.eps, scratch);
        trace_mark(a, 9, tmark);
        gemv_run(reinterpret_cast<const T *>(Lw.fc_w), gf, pre, xs, work(seq), red);
        trace_mark(a, 10, tmark);
        seq++;
        grid_arrive(a.sync);

        /* D: mlp proj (input: this share's rows of act(fc)) */
        stream_to(l, 4);
        const Geo g2 = geo(4 * C, C);
        gemv_preload(reinterpret_cast<const T *>(Lw.fc2_w), g2, pre);
        grid_wait(a.sync, ++barriers * G);
        trace_mark(a, 11, tmark);
        {
            int a0, a1, b1;
            share_rows(g2, a0, a1, b1);
            const float *pf = work(seq - 1);
            for (int pass = 0; pass < 2; pass++)
                for (int r = (pass ? 0 : a0) + t; r < (pass ? b1 : a1); r += FD_THREADS) {
                    float v = part_sum(pf, C, 4 * C, r);
                    if (Lw.fc_b) v += ld_f<T>(Lw.fc_b, r);
                    xs[r] = rnd<T>(act_apply(v, a.act));
                }
            __syncthreads();
        }
        trace_mark(a, 12, tmark);
        gemv_run(reinterpret_cast<const T *>(Lw.fc2_w), g2, pre, xs, work(seq), red);
        trace_mark(a, 13, tmark);
        seq++;
        grid_arrive(a.sync);
    }

    /* r += mlp; logits = LN_f(r) @ wte^T */
    stream_to(a.n_layer, 0);
    uint4 v[FD_LM_LOADS / CPL][CPL];
    lm_load<T, CPL>(a, blockIdx.x * FD_WARPS + (t >> 5), v);
    row_params<T>(rp, C, a.layers[a.n_layer - 1].fc2_b, a.lnf_w, a.lnf_b);
    grid_wait(a.sync, ++barriers * G);
    trace_mark(a, 14, tmark);
    residual_ln<T>(xr, xs, work(seq - 1), 4 * C, C, rp, a.eps, scratch);
    trace_mark(a, 15, tmark);
    lm_head<T, CPL>(a, v, xs);

    /* the last CTA out resets the barrier for the next launch */
    __syncthreads();
    trace_mark(a, 16, tmark);
    if (a.trace && blockIdx.x == 0 && t == 0) a.trace[FUSED_TRACE_SLOTS - 1] += 1;
    if (t == 0 && atomicAdd(a.sync + 1, 1u) == G - 1) {
        a.sync[0] = 0;
        a.sync[1] = 0;
        __threadfence();
    }
}

}  // namespace

extern "C" size_t fused_decode_smem_bytes(int C, int D)
{
    return sizeof(float) * ((size_t)5 * C + 2 * FD_WARPS * 64 + 3 * D + 2 * FD_WARPS +
                            (size_t)FD_WARPS * D);
}

extern "C" size_t fused_decode_work_floats(int C, int H, int D, int nsplit, int grid)
{
    const size_t gemv = ((size_t)4 * C / 64 + grid + 1) * 64;
    const size_t att = (size_t)H * nsplit * (D + 2);
    return gemv > att ? gemv : att;
}

/* the kernel for (dtype, C): CPL = 4 up to C = 1024, else 8 */
template <typename T> static void *kernel_for(int C)
{
    return C <= 1024 ? (void *)fused_decode_kernel<T, 4> : (void *)fused_decode_kernel<T, 8>;
}

static void *kernel_of(int dtype, int C)
{
    return dtype == DTYPE_F16 ? kernel_for<__half>(C)
           : dtype == DTYPE_BF16 ? kernel_for<__nv_bfloat16>(C) : nullptr;
}

extern "C" int fused_decode_blocks_per_sm(int dtype, int C, size_t smem)
{
    void *k = kernel_of(dtype, C);
    int n = 0;
    if (!k || C > 2048 ||
        cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, FD_THREADS, smem) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" cudaError_t fused_decode_cuda(const FusedDecodeArgs *a, int dtype, int grid,
                                         size_t smem, cudaStream_t stream)
{
    void *k = kernel_of(dtype, a->C);
    if (!k) return cudaErrorInvalidValue;
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeCooperative;
    attr.val.cooperative = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)grid);
    cfg.blockDim = dim3(FD_THREADS);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    void *args[] = {(void *)a};
    cudaError_t e = cudaLaunchKernelExC(&cfg, k, args);
    return e != cudaSuccess ? e : cudaGetLastError();
}
