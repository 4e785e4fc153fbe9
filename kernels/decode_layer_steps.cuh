/* decode_layer_steps.cuh — the steps both halves of kernels/decode_layer.cu share (that
 * file says what they compute): the copies issued before the PDL wait (weight tiles,
 * vectors), the trigger, the shared-memory matmul, block and cluster reductions, the
 * per-phase trace, and the residual + layernorm after the wait. Included by that file
 * only (an unnamed namespace). */
#pragma once
#include "common.cuh"
#include "launch.cuh"
#include "mbarrier.cuh"

#define LD_THREADS 256
#define LD_WARPS (LD_THREADS / 32)
#define LD_RED 2048   /* floats of matmul reduction scratch: (256 / NG) * NG * 8 at most */
static_assert(2 * LD_WARPS * (AH_RANKS > MH_RANKS ? AH_RANKS : MH_RANKS) <= LD_RED,
              "the layernorm's sums fit in the matmul scratch");
#define LD_CPT 4      /* residual columns per thread and pass (one pass up to C = 1024) */
#define LD_PB 16      /* partial rows loaded together */

namespace {

__device__ __forceinline__ uint32_t smem_addr(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void cp_async16(void *dst, const void *src)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst)), "l"(src)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
/* all but the newest committed group complete (the vectors, committed first) */
__device__ __forceinline__ void cp_async_wait_but_one()
{
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");
}

template <typename T> __device__ __forceinline__ float rnd(float v) { return to_f32(from_f32<T>(v)); }

/* dst (rows, ld) <- src rows [0, rows) at row stride src_ld, columns [0, cols), cols and
 * ld multiples of 8 (16-byte chunks), cols <= 8 LD_THREADS; the columns in [cols, ld) are
 * left as they are. Thread t copies chunk t % cpr of rows t / cpr, + rpi, ...: no division
 * per chunk (the copies are issued while the previous kernel runs, beside it on the SM). */
template <typename T>
__device__ __forceinline__ void tile_load(T *dst, int ld, const T *src, size_t src_ld, int rows,
                                          int cols)
{
    const int cpr = cols / 8, rpi = LD_THREADS / cpr, r0 = threadIdx.x / cpr;
    if (r0 >= rpi) return;
    const int c = threadIdx.x - r0 * cpr;
    T *d = dst + (size_t)r0 * ld + c * 8;
    const T *g = src + (size_t)r0 * src_ld + c * 8;
    for (int r = r0; r < rows; r += rpi, d += (size_t)rpi * ld, g += (size_t)rpi * src_ld)
        cp_async16(d, g);
}

/* dst[0, n) <- src[0, n), n a multiple of 8; nothing when src is NULL */
template <typename T> __device__ __forceinline__ void vec_load(T *dst, const void *src, int n)
{
    if (!src) return;
    for (int i = threadIdx.x; i < n / 8; i += LD_THREADS)
        cp_async16(dst + i * 8, reinterpret_cast<const T *>(src) + i * 8);
}

/* The vectors a launch copies first, in shared memory as T: the bias of the partials it
 * sums, its layernorm's weight and bias, the slice of its first matmul's bias (n1). */
template <typename T> struct Vecs {
    T *v;
    int C;
    __device__ const T *part_bias() const { return v; }
    __device__ const T *ln_w() const { return v + C; }
    __device__ const T *ln_b() const { return v + 2 * C; }
    __device__ const T *b1() const { return v + 3 * C; }
};
template <typename T>
__device__ __forceinline__ Vecs<T> vecs_load(const LayerDecodeArgs &a, T *at, int b1_col, int n1)
{
    const Vecs<T> s{at, a.C};
    vec_load<T>(s.v, a.part_bias, a.C);
    vec_load<T>(s.v + a.C, a.ln_w, a.C);
    vec_load<T>(s.v + 2 * a.C, a.ln_b, a.C);
    if (a.b1) vec_load<T>(s.v + 3 * a.C, reinterpret_cast<const T *>(a.b1) + b1_col, n1);
    cp_async_commit();
    return s;
}

/* The PDL trigger (a.trigger, kernels.h): the next launch may start (and issue its copies)
 * once every block of this one has passed the point named */
__device__ __forceinline__ void trigger_at(const LayerDecodeArgs &a, int point)
{
    if (a.trigger == point) pdl_launch_dependents();
}
__device__ __forceinline__ void wait_previous(const LayerDecodeArgs &a)
{
    pdl_wait();
    trigger_at(a, LAYER_TRIGGER_WAIT);
}

/* out[c] = sum_i x[i] w[i][c] for c < cols (a multiple of 8), w (K, ld) in shared memory,
 * x (K) fp32 in shared memory; out in shared memory. Thread t owns 16-byte chunk
 * t % NG of rows t / NG, t / NG + NR, ... (NG = cols / 8 column groups, NR = 256 / NG row
 * lanes); lanes of a warp with the same chunk are summed by shuffles when NG divides
 * 32, then the row lanes in red. Ends with __syncthreads. */
template <typename T>
__device__ void smem_matmul(const T *w, int ld, const float *x, int K, int cols, float *red,
                            float *out)
{
    const int t = threadIdx.x, NG = cols / 8, NR = LD_THREADS / NG;
    const int g = t % NG, rl = t / NG;
    float acc[8];
#pragma unroll
    for (int j = 0; j < 8; j++) acc[j] = 0.0f;
    if (rl < NR) {
#pragma unroll 4
        for (int i = rl; i < K; i += NR) {
            float wf[8];
            unpack8(*reinterpret_cast<const uint4 *>(w + (size_t)i * ld + g * 8), wf, T());
            const float xv = x[i];
#pragma unroll
            for (int j = 0; j < 8; j++) acc[j] = fmaf(xv, wf[j], acc[j]);
        }
    }
    int rows;
    if (32 % NG == 0) {   /* lanes l, l + NG, ... of a warp share chunk g */
        for (int o = NG; o < 32; o <<= 1)
#pragma unroll
            for (int j = 0; j < 8; j++) acc[j] += __shfl_xor_sync(0xffffffffu, acc[j], o);
        if ((t & 31) < NG)
#pragma unroll
            for (int j = 0; j < 8; j++) red[(t >> 5) * cols + g * 8 + j] = acc[j];
        rows = LD_WARPS;
    } else {
        if (rl < NR)
#pragma unroll
            for (int j = 0; j < 8; j++) red[rl * cols + g * 8 + j] = acc[j];
        rows = NR;
    }
    __syncthreads();
    for (int c = t; c < cols; c += LD_THREADS) {
        float s = 0.0f;
#pragma unroll 8
        for (int r = 0; r < rows; r++) s += red[r * cols + c];
        out[c] = s;
    }
    __syncthreads();
}

/* sum over the block of v, returned to every thread (scratch: LD_WARPS floats) */
__device__ __forceinline__ float block_sum(float v, float *scratch)
{
    v = warp_sum(v);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
    __syncthreads();
    float s = 0.0f;
#pragma unroll
    for (int w = 0; w < LD_WARPS; w++) s += scratch[w];
    return s;
}
__device__ __forceinline__ float block_max(float v, float *scratch)
{
    v = warp_max(v);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
    __syncthreads();
    float m = -INFINITY;
#pragma unroll
    for (int w = 0; w < LD_WARPS; w++) m = fmaxf(m, scratch[w]);
    return m;
}

/* value v at offset i of the same shared array in every block of the cluster */
__device__ __forceinline__ void cluster_broadcast(float *arr, int i, float v, int ranks)
{
    const uint32_t addr = smem_addr(arr + i);
    for (int r = 0; r < ranks; r++) st_cluster_f32(cluster_map(addr, (uint32_t)r), v);
}

/* GPT2_ENGINE_LAYER_TRACE (a.trace != NULL): thread 0 of each block stores globaltimer at
 * these marks (kernels.h has the layout; decode_layer_cuda.c prints the summary): entry,
 * past the PDL wait, vectors in shared memory, x built, its layernorm, weight tiles in
 * shared memory, the first matmul and barrier 1, barrier 2, (attn half) scores and their
 * max, P V broadcast, barrier 3 (mlp half: its second matmul), exit. The residual kernel
 * has entry, waited, exit. */
enum LayerTraceMark {
    TM_ENTRY, TM_WAITED, TM_VEC, TM_RES, TM_LN, TM_COPIES, TM_MM1, TM_B2, TM_SCORES, TM_PV,
    TM_B3, TM_EXIT
};
struct LayerTrace {
    unsigned long long *p = nullptr;
    __device__ explicit LayerTrace(const LayerDecodeArgs &a)
    {
        const int b = blockIdx.y * gridDim.x + blockIdx.x;
        if (!a.trace || threadIdx.x != 0 || b >= LAYER_TRACE_BLOCKS) return;
        const unsigned long long t = globaltimer();
        const unsigned s = __ldcg(a.trace_step) % LAYER_TRACE_STEPS;
        p = a.trace + (((size_t)s * a.trace_kernels + a.trace_kernel) * LAYER_TRACE_BLOCKS + b) *
                          LAYER_TRACE_MARKS;
        p[TM_ENTRY] = t;
    }
    __device__ __forceinline__ void mark(int m) const
    {
        if (p) p[m] = globaltimer();
    }
};

/* v[k] = round(r + (sum_p partials[p] + bias)) of columns c0 + k * LD_THREADS (k < CPT,
 * those < end; partial rows are a.C long; bias may be NULL): the loads of LD_PB partial
 * rows are issued together (one L2 round trip per LD_PB rows, not one per row), summed in
 * row order */
template <typename T, int CPT = LD_CPT>
__device__ __forceinline__ void residual_cols(const LayerDecodeArgs &a, const T *bias, int c0,
                                              float (&v)[CPT], int end)
{
    const int ld = a.C;
    const T *r = reinterpret_cast<const T *>(a.res_in);
    float s[CPT];
#pragma unroll
    for (int k = 0; k < CPT; k++) {
        const int c = c0 + k * LD_THREADS;
        v[k] = c < end ? to_f32(r[c]) : 0.0f;
        s[k] = 0.0f;
    }
    if (a.P == 0) return;
    for (int p0 = 0; p0 < a.P; p0 += LD_PB) {
        float x[LD_PB][CPT];
#pragma unroll
        for (int i = 0; i < LD_PB; i++)
#pragma unroll
            for (int k = 0; k < CPT; k++) {
                const int c = c0 + k * LD_THREADS;
                x[i][k] = p0 + i < a.P && c < end
                              ? __ldcg(a.part_in + (size_t)(p0 + i) * ld + c) : 0.0f;
            }
#pragma unroll
        for (int i = 0; i < LD_PB; i++)
#pragma unroll
            for (int k = 0; k < CPT; k++) s[k] += x[i][k];
    }
#pragma unroll
    for (int k = 0; k < CPT; k++) {
        const int c = c0 + k * LD_THREADS;
        if (c < end) v[k] = rnd<T>((bias ? s[k] + to_f32(bias[c]) : s[k]) + v[k]);
    }
}

/* xs = round((xs - mean) rstd ln_w + ln_b); ends with __syncthreads */
template <typename T>
__device__ __forceinline__ void layernorm_apply(const Vecs<T> &vec, float *xs, int C, float mean,
                                                float rstd)
{
    const T *g = vec.ln_w(), *b = vec.ln_b();
    for (int c = threadIdx.x; c < C; c += LD_THREADS)
        xs[c] = rnd<T>((xs[c] - mean) * rstd * to_f32(g[c]) + to_f32(b[c]));
    __syncthreads();
}

/* xs = LN(x), x = round(r + (sum_p partials[p] + bias)) (x = r when P = 0), rounded to
 * T like the unfused layernorm's output. The vectors vec are in shared memory (their
 * copies complete); every rank of the cluster has started. With partials (P > 0) rank r
 * of the ranks builds columns [r q, (r + 1) q), q = ceil(C / ranks), and writes them into
 * every rank's xs, then the cluster barrier: a block reads 1 / ranks of the partials, not
 * all of them (measured: 0.281 -> 0.265 ms per gpt2 token). Without partials (layer 0)
 * each block reads x whole. store: this block writes its columns of x to res_out.
 * a.ln_cluster (with partials): the statistics come with x instead of from two block
 * reductions after the barrier: every warp also sends the sum and the sum of squares of
 * the columns it built, and after the barrier each warp adds up all of them (the same
 * order in every warp and rank); var = E[x^2] - mean^2 in fp32. sums: 2 LD_WARPS ranks
 * floats of shared memory at the same offset in every rank, free until the layernorm (the
 * matmul scratch red). */
template <typename T>
__device__ void residual_layernorm(const LayerDecodeArgs &a, const Vecs<T> &vec, float *xs,
                                   float *scratch, float *sums, bool store, int rank, int ranks,
                                   int2 emb, const LayerTrace &tr)
{
    const int C = a.C, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    T *res_out = reinterpret_cast<T *>(a.res_out);
    float s1 = 0.0f;
    if (a.P > 0) {
        const int q = (C + ranks - 1) / ranks, lo = rank * q, hi = min(C, lo + q);
        float l1 = 0.0f, l2 = 0.0f;                          /* this thread's columns */
        for (int c = lo + threadIdx.x; c < hi; c += LD_THREADS) {   /* one pass up to q = 256 */
            float v[1];
            residual_cols<T, 1>(a, vec.part_bias(), c, v, hi);
            cluster_broadcast(xs, c, v[0], ranks);
            if (store) res_out[c] = from_f32<T>(v[0]);
            l1 += v[0];
            l2 += v[0] * v[0];
        }
        if (a.ln_cluster) {
            l1 = warp_sum(l1);
            l2 = warp_sum(l2);
            if (lane < 2)
                cluster_broadcast(sums, 2 * (rank * LD_WARPS + warp) + lane, lane ? l2 : l1, ranks);
        }
        cluster_arrive();                                    /* x everywhere */
        cluster_wait();
        if (a.ln_cluster) {
            float t1 = 0.0f, t2 = 0.0f;
            for (int i = lane; i < ranks * LD_WARPS; i += 32) t1 += sums[2 * i], t2 += sums[2 * i + 1];
            const float mean = warp_sum(t1) / (float)C;
            const float var = fmaxf(warp_sum(t2) / (float)C - mean * mean, 0.0f);
            tr.mark(TM_RES);
            layernorm_apply<T>(vec, xs, C, mean, rsqrtf(var + a.eps));
            return;
        }
    } else if (a.res_in) {
        const T *r = reinterpret_cast<const T *>(a.res_in);
        for (int c = threadIdx.x; c < C; c += LD_THREADS) {
            xs[c] = to_f32(r[c]);
            if (store && rank == 0) res_out[c] = r[c];
        }
        __syncthreads();
    } else {                     /* the embedding of token emb.x at position emb.y */
        const T *e = reinterpret_cast<const T *>(a.wte) + (size_t)emb.x * C;
        const T *p = reinterpret_cast<const T *>(a.wpe) + (size_t)emb.y * C;
        for (int c = threadIdx.x; c < C; c += LD_THREADS) {
            const T v = embed_sum(e[c], p[c]);
            xs[c] = to_f32(v);
            if (store && rank == 0) res_out[c] = v;
        }
        __syncthreads();
    }
    for (int c = threadIdx.x; c < C; c += LD_THREADS) s1 += xs[c];
    tr.mark(TM_RES);
    const float mean = block_sum(s1, scratch) / (float)C;
    float s2 = 0.0f;
    for (int c = threadIdx.x; c < C; c += LD_THREADS) {
        const float d = xs[c] - mean;
        s2 += d * d;
    }
    layernorm_apply<T>(vec, xs, C, mean, rsqrtf(block_sum(s2, scratch) / (float)C + a.eps));
}

/* The middle both halves share, after their copies were issued (the vectors vec first, in
 * their own group): wait for the previous kernel (PDL), then for the vectors and for the
 * cluster barrier that was arrived at before the wait (every rank has started: its shared
 * memory may be written), build x and its layernorm in xs (store: this block writes its
 * columns of x to res_out; emb: the token and position of an embedding x, read before the
 * wait), wait for the tile copies, mo = xs @ w1s (C, n1). */
template <typename T>
__device__ __forceinline__ void wait_then_first_matmul(const LayerDecodeArgs &a, const Vecs<T> &vec,
                                                       bool store, int rank, int ranks,
                                                       const T *w1s, int n1, float *xs,
                                                       float *scratch, float *red, float *mo,
                                                       int2 emb, const LayerTrace &tr)
{
    cp_async_commit();
    cluster_arrive();                                        /* barrier 1 */
    wait_previous(a);
    tr.mark(TM_WAITED);
    cp_async_wait_but_one();
    __syncthreads();                                         /* every thread's vectors */
    tr.mark(TM_VEC);
    cluster_wait();                                          /* every rank started */
    residual_layernorm<T>(a, vec, xs, scratch, red, store, rank, ranks, emb, tr);
    tr.mark(TM_LN);
    trigger_at(a, LAYER_TRIGGER_LN);
    cp_async_wait_all();
    __syncthreads();
    tr.mark(TM_COPIES);
    smem_matmul<T>(w1s, n1, xs, a.C, n1, red, mo);
    tr.mark(TM_MM1);
}

}  // namespace
