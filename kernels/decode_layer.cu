/* decode_layer.cu — a batch-1 decode step's transformer layer in TWO kernels
 * (fp16/bf16, sm_90: thread-block clusters), instead of five dependent ones.
 *
 * At batch 1 a step is a chain of dependent kernels, each paying ~3-4 us of fixed
 * cost (wait for the previous grid, read its output from L2, reduce, store) for
 * 1-5 MB of weights (docs/performance_notes.md). The per-layer path has five links
 * per layer (ln_1+qkv, attention, attn proj, ln_2+fc, mlp proj). Here a layer is
 *   attn half:  x = r + sum(mlp partials) + b; LN1; qkv of one head; attention of
 *               that head; its share of the attn proj (a partial over all C outputs)
 *   mlp half:   x = r + sum(proj partials) + b; LN2; 256 fc columns; GELU; their
 *               share of the mlp proj (a partial over all C outputs)
 * because every step that needs data from other blocks is inside a CLUSTER (its
 * blocks exchange values through distributed shared memory and a cluster barrier)
 * except the two matmuls whose outputs every block needs whole: those end in
 * per-cluster fp32 partials that the next kernel's blocks sum (in a fixed order:
 * the result does not depend on scheduling).
 *
 * attn half: grid (H, AH_RANKS), cluster (1, AH_RANKS, 1), block = cluster (h, rank):
 *   - qkv: rank r computes 3D / AH_RANKS consecutive columns of head h's q | k | v
 *     (one section each) over all C rows; k / v columns also go to the paged cache at
 *     slot_mapping[0]; every rank broadcasts its values to every rank;
 *   - attention: rank r takes keys [r P, (r+1) P) of the L = seq_lens[0] keys (P =
 *     ceil(L / AH_RANKS)); the newest key (L - 1) is the one just computed (read from
 *     shared memory, never from the cache being written); the ranks broadcast (max,
 *     sum, unnormalised O) and each merges all of them (log-sum-exp) into head h's
 *     output, rounded to the storage type as the attention kernels store it;
 *   - proj: rank r computes columns [r n2, (r+1) n2) of out_h (1, D) @ w_proj[hD..hD+D)
 *     into proj_partials[h] (fp32, no bias: the reader adds it once).
 * mlp half: grid (C / 64, MH_RANKS), cluster (1, MH_RANKS, 1), block (c, rank):
 *   - fc: 32 columns [32 (c MH_RANKS + rank), +32) over all C rows, + bias, act, rounded;
 *     broadcast, so every rank holds the cluster's 256 values;
 *   - mlp proj: rank r computes columns [r C/8, (r+1) C/8) of those 256 values @ the
 *     matching 256 rows of w_mlp_proj into mlp_partials[c].
 * Each kernel starts by copying the vectors it needs (the partials' bias, its layernorm's
 * weight and bias, its slice of the first matmul's bias), its weight tiles and (attn half)
 * up to kv_stage of the rank's cached keys and values into shared memory with cp.async:
 * none of that depends on the previous kernel, so under programmatic dependent launch
 * (launch.cuh) it overlaps the previous kernel, and after pdl_wait() a block reads only
 * the previous outputs from L2 (every load of a thread issued at once) and computes from
 * shared memory. The next launch may start once every block is past its layernorm
 * (a.trigger: then the neighbour's copies on the SM no longer delay these loads).
 *
 * Residual: the ranks of a cluster split the row x (the layernorm needs it whole): rank r
 * builds its ceil(C / ranks) columns as round(r + (sum of partials + bias)), the order in
 * which the per-layer GEMV rounds a matmul's output with its bias and the residual once,
 * and writes them into every rank's shared memory; the blocks of cluster 0 also store
 * them, which the next kernel reads as its r (the host alternates two buffers, so a kernel
 * never overwrites what a still-running one reads). Values are rounded to the storage
 * type where the per-layer kernels store them (qkv, attention output, fc, layernorm
 * outputs, residual), so both paths compute the same math in different sum orders.
 *
 * Measured (H200, gpt2, bench_decode; GPT2_ENGINE_LAYER_TRACE for the phases,
 * docs/performance_notes.md): 0.249 ms per token against 0.334 for the per-layer
 * kernels. What took it from 0.320: launch bounds that let an attn-half and an mlp-half
 * block share an SM (128 registers each: 0.311), the vectors copied before the wait
 * instead of read from DRAM after it (0.274), the split residual (0.265), the trigger
 * after the layernorm (0.249).
 *
 * Shapes: C % 64 == 0, D = C / H in {32, 64, 128}; layer_decode_smem
 * gives each kernel's dynamic shared memory (weights tiles + scratch). Matmul tiles are
 * read from shared memory by thread t at 16-byte chunk t of the (rows, cols) tile:
 * every warp reads 512 contiguous bytes (no bank conflicts). */
#include "decode_layer_steps.cuh"

namespace {

/* Shared-memory layout of the attn half (floats after the two weight tiles). */
struct AttnSmem {
    int w1, w2, vec, kv, xs, red, mo, qkv, ex, sc, oh, total;   /* offsets in bytes; total = size */
};
__host__ __device__ inline AttnSmem attn_smem(int C, int D, int key_cap, int kv_stage)
{
    AttnSmem s;
    const int n1 = 3 * D / AH_RANKS, n2 = LAYER_DECODE_PROJ_COLS(C);
    s.w1 = 0;
    s.w2 = s.w1 + C * n1 * 2;
    s.vec = s.w2 + D * n2 * 2;                   /* Vecs: 3 C + n1 */
    s.kv = s.vec + (3 * C + n1) * 2;             /* K then V rows, (kv_stage, D + 8) each */
    s.xs = s.kv + 2 * kv_stage * (D + 8) * 2;
    s.red = s.xs + C * 4;
    s.mo = s.red + LD_RED * 4;
    s.qkv = s.mo + C * 4;
    s.ex = s.qkv + 3 * D * 4;
    s.sc = s.ex + AH_RANKS * (D + 2) * 4;
    s.oh = s.sc + key_cap * 4;
    s.total = s.oh + D * 4;
    return s;
}

struct MlpSmem {
    int w1, w2, vec, xs, red, mo, hb, total;
};
__host__ __device__ inline MlpSmem mlp_smem(int C)
{
    MlpSmem s;
    const int rows2 = MH_RANKS * MH_COLS;
    s.w1 = 0;
    s.w2 = s.w1 + C * MH_COLS * 2;
    s.vec = s.w2 + rows2 * (C / MH_RANKS) * 2;   /* Vecs: 3 C + MH_COLS */
    s.xs = s.vec + (3 * C + MH_COLS) * 2;
    s.red = s.xs + C * 4;
    s.mo = s.red + LD_RED * 4;
    s.hb = s.mo + C * 4;
    s.total = s.hb + rows2 * 4;
    return s;
}

template <typename T, int D>
__global__ void __launch_bounds__(LD_THREADS, 2) decode_attn_half_kernel(const LayerDecodeArgs a)
{
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ float scratch[LD_WARPS];
    constexpr int KLD = D + 8;                   /* staged K/V row stride: no bank conflicts */
    const int C = a.C, H = a.H, h = blockIdx.x, rank = blockIdx.y, t = threadIdx.x;
    const int lane = t & 31, warp = t >> 5;
    const AttnSmem L_ = attn_smem(C, D, a.key_cap, a.kv_stage);
    T *w1s = reinterpret_cast<T *>(smem + L_.w1), *w2s = reinterpret_cast<T *>(smem + L_.w2);
    T *ks = reinterpret_cast<T *>(smem + L_.kv), *vs = ks + (size_t)a.kv_stage * KLD;
    float *xs = reinterpret_cast<float *>(smem + L_.xs), *red = reinterpret_cast<float *>(smem + L_.red);
    float *mo = reinterpret_cast<float *>(smem + L_.mo);   /* a matmul's outputs */
    float *qkv = reinterpret_cast<float *>(smem + L_.qkv), *ex = reinterpret_cast<float *>(smem + L_.ex);
    float *sc = reinterpret_cast<float *>(smem + L_.sc), *oh = reinterpret_cast<float *>(smem + L_.oh);
    const int n1 = 3 * D / AH_RANKS, sec = rank * n1 / D, off = rank * n1 - sec * D;
    const int col1 = sec * C + h * D + off;                  /* first c_attn column */
    const int n2 = LAYER_DECODE_PROJ_COLS(C), col2 = rank * n2;
    const int ncol2 = max(0, min(C - col2, n2));
    const LayerTrace tr(a);
    trigger_at(a, LAYER_TRIGGER_ENTRY);
    /* the first layer's token and position (step inputs): loads issued now, used after the wait */
    const int2 emb = a.res_in ? make_int2(0, 0) : make_int2(a.input_ids[0], a.positions[0]);

    /* 1. what depends on no earlier kernel: the vectors, the weight tiles, and the cached
     * keys and values of this rank (every key but this step's, written by earlier steps) */
    const Vecs<T> vec = vecs_load<T>(a, reinterpret_cast<T *>(smem + L_.vec), col1, n1);
    tile_load<T>(w1s, n1, reinterpret_cast<const T *>(a.w1) + col1, (size_t)3 * C, C, n1);
    if (ncol2 > 0)
        tile_load<T>(w2s, n2, reinterpret_cast<const T *>(a.w2) + (size_t)h * D * C + col2,
                     (size_t)C, D, ncol2);
    /* the step's inputs (written before the step, not by the previous kernel): read here,
     * not on the path after the wait */
    const int32_t slot = a.slot_mapping[0];
    const int Lk = a.seq_lens[0], P = (Lk + AH_RANKS - 1) / AH_RANKS;
    const int kb = min(Lk, rank * P), ke = min(Lk, kb + P), nk = min(ke - kb, a.key_cap);
    const int n_old = min(nk, max(0, Lk - 1 - kb));          /* cached keys [kb, kb + n_old) */
    const int n_st = min(n_old, a.kv_stage);                 /* of them staged: [kb, kb + n_st) */
    const int bs = a.block_size;
    for (int i = t; i < n_st * (D / 8); i += LD_THREADS) {
        const int j = i / (D / 8), ch = i - j * (D / 8), key = kb + j;
        const size_t row = ((size_t)a.block_tables[key / bs] * H + h) * bs + key % bs;
        cp_async16(ks + j * KLD + ch * 8, reinterpret_cast<const T *>(a.k_cache) + row * D + ch * 8);
        cp_async16(vs + j * KLD + ch * 8, reinterpret_cast<const T *>(a.v_cache) + row * D + ch * 8);
    }
    /* 2. the residual and LN1; 3. this rank's qkv columns, k / v to the cache, broadcast
     * to the cluster */
    wait_then_first_matmul<T>(a, vec, h == 0, rank, AH_RANKS, w1s, n1, xs, scratch, red, mo, emb,
                              tr);
    if (t < n1) {
        const float v = rnd<T>(mo[t] + to_f32(vec.b1()[t]));
        if (sec > 0 && slot >= 0) {
            T *cache = reinterpret_cast<T *>(sec == 1 ? a.k_cache : a.v_cache);
            const size_t blk = (size_t)(slot / bs), o = (size_t)(slot % bs);
            cache[((blk * H + h) * bs + o) * D + off + t] = from_f32<T>(v);
        }
        cluster_broadcast(qkv, rank * n1 + t, v, AH_RANKS);
    }
    cluster_arrive();                                        /* barrier 2: q, k, v everywhere */
    cluster_wait();
    tr.mark(TM_B2);

    /* 4. attention over keys [kb, kb + nk): scores (log2 units), softmax, P V; cached keys
     * from the staged rows (or, past kv_stage, the cache itself), this step's from qkv */
    auto cached_row = [&](const void *cache, const T *staged, int j) -> const T * {
        if (j < n_st) return staged + j * KLD;
        const int key = kb + j;
        return reinterpret_cast<const T *>(cache) +
               (((size_t)a.block_tables[key / bs] * H + h) * bs + key % bs) * D;
    };
    const float scale = a.scale * 1.4426950408889634f;
    float mx = -INFINITY;
    for (int j = t; j < nk; j += LD_THREADS) {
        float s = 0.0f;
        if (j >= n_old) {
#pragma unroll
            for (int d = 0; d < D; d++) s = fmaf(qkv[d], qkv[D + d], s);
        } else {
            const T *kr = cached_row(a.k_cache, ks, j);
#pragma unroll
            for (int d = 0; d < D; d += 8) {
                float f[8];
                unpack8(*reinterpret_cast<const uint4 *>(kr + d), f, T());
#pragma unroll
                for (int i = 0; i < 8; i++) s = fmaf(qkv[d + i], f[i], s);
            }
        }
        s *= scale;
        sc[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = block_max(mx, scratch);
    tr.mark(TM_SCORES);
    float l = 0.0f;
    for (int j = t; j < nk; j += LD_THREADS) {
        const float p = exp2f(sc[j] - mx);
        sc[j] = p;
        l += p;
    }
    l = block_sum(l, scratch);                               /* its barriers publish sc */
    float *ex_me = ex + rank * (D + 2);
    for (int c = warp; c < D / 8; c += LD_WARPS) {           /* warp: 8 dims, lanes: keys */
        float acc[8];
#pragma unroll
        for (int i = 0; i < 8; i++) acc[i] = 0.0f;
        for (int j = lane; j < nk; j += 32) {
            const float p = sc[j];
            float f[8];
            if (j >= n_old) {
#pragma unroll
                for (int i = 0; i < 8; i++) f[i] = qkv[2 * D + c * 8 + i];
            } else {
                unpack8(*reinterpret_cast<const uint4 *>(cached_row(a.v_cache, vs, j) + c * 8), f, T());
            }
#pragma unroll
            for (int i = 0; i < 8; i++) acc[i] = fmaf(p, f[i], acc[i]);
        }
#pragma unroll
        for (int i = 0; i < 8; i++) acc[i] = warp_sum(acc[i]);
        if (lane < 8) {
            float v = acc[0];
#pragma unroll
            for (int i = 1; i < 8; i++) v = lane == i ? acc[i] : v;
            cluster_broadcast(ex_me, c * 8 + lane, v, AH_RANKS);
        }
    }
    if (t == 0) cluster_broadcast(ex_me, D, mx, AH_RANKS);
    if (t == 1) cluster_broadcast(ex_me, D + 1, l, AH_RANKS);
    tr.mark(TM_PV);
    cluster_arrive();                                        /* barrier 3: every rank's state */
    cluster_wait();
    tr.mark(TM_B3);

    /* 5. merge the ranks (log-sum-exp), round like a stored attention output */
    if (t < D) {
        float m = -INFINITY;
        for (int r = 0; r < AH_RANKS; r++)
            if (ex[r * (D + 2) + D + 1] > 0.0f) m = fmaxf(m, ex[r * (D + 2) + D]);
        float den = 0.0f, num = 0.0f;
        for (int r = 0; r < AH_RANKS; r++) {
            const float *e = ex + r * (D + 2);
            if (e[D + 1] > 0.0f) {
                const float wgt = exp2f(e[D] - m);
                den += wgt * e[D + 1];
                num += wgt * e[t];
            }
        }
        oh[t] = rnd<T>(den > 0.0f ? num / den : 0.0f);
    }
    __syncthreads();

    /* 6. this rank's columns of out_h @ w_proj[hD .. hD + D) */
    if (ncol2 > 0) {
        smem_matmul<T>(w2s, n2, oh, D, ncol2, red, mo);
        for (int c = t; c < ncol2; c += LD_THREADS) a.part_out[(size_t)h * C + col2 + c] = mo[c];
    }
    tr.mark(TM_EXIT);
}

template <typename T>
__global__ void __launch_bounds__(LD_THREADS, 2) decode_mlp_half_kernel(const LayerDecodeArgs a)
{
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ float scratch[LD_WARPS];
    const int C = a.C, c = blockIdx.x, rank = blockIdx.y, t = threadIdx.x;
    const MlpSmem L_ = mlp_smem(C);
    T *w1s = reinterpret_cast<T *>(smem + L_.w1), *w2s = reinterpret_cast<T *>(smem + L_.w2);
    float *xs = reinterpret_cast<float *>(smem + L_.xs), *red = reinterpret_cast<float *>(smem + L_.red);
    float *mo = reinterpret_cast<float *>(smem + L_.mo), *hb = reinterpret_cast<float *>(smem + L_.hb);
    constexpr int rows2 = MH_RANKS * MH_COLS;
    const int col1 = (c * MH_RANKS + rank) * MH_COLS, n2 = C / MH_RANKS, col2 = rank * n2;
    const LayerTrace tr(a);
    trigger_at(a, LAYER_TRIGGER_ENTRY);
    const Vecs<T> vec = vecs_load<T>(a, reinterpret_cast<T *>(smem + L_.vec), col1, MH_COLS);
    tile_load<T>(w1s, MH_COLS, reinterpret_cast<const T *>(a.w1) + col1, (size_t)4 * C, C, MH_COLS);
    tile_load<T>(w2s, n2, reinterpret_cast<const T *>(a.w2) + (size_t)c * rows2 * C + col2,
                 (size_t)C, rows2, n2);
    wait_then_first_matmul<T>(a, vec, c == 0, rank, MH_RANKS, w1s, MH_COLS, xs, scratch, red, mo,
                              make_int2(0, 0), tr);
    if (t < MH_COLS) {
        const float v = mo[t] + to_f32(vec.b1()[t]);
        cluster_broadcast(hb, rank * MH_COLS + t, rnd<T>(act_apply(v, a.act)), MH_RANKS);
    }
    cluster_arrive();
    cluster_wait();
    tr.mark(TM_B2);
    smem_matmul<T>(w2s, n2, hb, rows2, n2, red, mo);
    tr.mark(TM_B3);
    for (int j = t; j < n2; j += LD_THREADS) a.part_out[(size_t)c * C + col2 + j] = mo[j];
    tr.mark(TM_EXIT);
}

/* out = round(r + (sum_p partials[p] + bias)): the last layer's residual for ln_f */
template <typename T>
__global__ void __launch_bounds__(LD_THREADS) decode_residual_kernel(const LayerDecodeArgs a)
{
    extern __shared__ __align__(16) unsigned char smem[];
    T *bias = reinterpret_cast<T *>(smem);                  /* (C) */
    const LayerTrace tr(a);
    /* no layernorm here: LAYER_TRIGGER_WAIT and _LN both trigger after the wait */
    if (a.trigger == LAYER_TRIGGER_ENTRY) pdl_launch_dependents();
    vec_load<T>(bias, a.part_bias, a.C);
    cp_async_commit();
    pdl_wait();
    if (a.trigger != LAYER_TRIGGER_ENTRY) pdl_launch_dependents();
    tr.mark(TM_WAITED);
    cp_async_wait_all();
    __syncthreads();
    T *out = reinterpret_cast<T *>(a.res_out);
    for (int c0 = threadIdx.x; c0 < a.C; c0 += LD_THREADS * LD_CPT) {
        float v[LD_CPT];
        residual_cols<T>(a, bias, c0, v, a.C);
#pragma unroll
        for (int k = 0; k < LD_CPT; k++)
            if (c0 + k * LD_THREADS < a.C) out[c0 + k * LD_THREADS] = from_f32<T>(v[k]);
    }
    tr.mark(TM_EXIT);
    if (tr.p) atomicAdd(a.trace_step, 1u);                   /* the step's last stamping launch */
}

template <typename T>
cudaError_t launch_half(const LayerDecodeArgs &a, int which, cudaStream_t stream, int pdl)
{
    if (which == LAYER_DECODE_ATTN) {
        const size_t smem = layer_decode_smem(LAYER_DECODE_ATTN, a.C, a.D, a.key_cap, a.kv_stage);
        const dim3 grid(a.H, AH_RANKS);
        switch (a.D) {
        case 32: return launch_kernel(decode_attn_half_kernel<T, 32>, grid, dim3(LD_THREADS), smem, stream, pdl, AH_RANKS, a);
        case 64: return launch_kernel(decode_attn_half_kernel<T, 64>, grid, dim3(LD_THREADS), smem, stream, pdl, AH_RANKS, a);
        case 128: return launch_kernel(decode_attn_half_kernel<T, 128>, grid, dim3(LD_THREADS), smem, stream, pdl, AH_RANKS, a);
        default: return cudaErrorInvalidValue;
        }
    }
    if (which == LAYER_DECODE_MLP)
        return launch_kernel(decode_mlp_half_kernel<T>, dim3(LAYER_DECODE_MLP_CLUSTERS(a.C), MH_RANKS), dim3(LD_THREADS),
                             layer_decode_smem(LAYER_DECODE_MLP, a.C, a.D, a.key_cap, 0), stream, pdl,
                             MH_RANKS, a);
    return launch_kernel(decode_residual_kernel<T>, dim3(1), dim3(LD_THREADS),
                         layer_decode_smem(LAYER_DECODE_RESIDUAL, a.C, a.D, 0, 0), stream, pdl, 1, a);
}

/* The dynamic shared memory limit of a kernel and, with carveout >= 0, its preferred
 * shared-memory carveout (percent of the unified L1 / shared memory). An SM holds blocks of
 * different kernels at once only under one carveout: the kernels of a step that overlap
 * under PDL must not ask for different ones. */
template <typename T>
cudaError_t set_smem(int which, int D, size_t bytes, int carveout)
{
    const void *attn = D == 32 ? (const void *)decode_attn_half_kernel<T, 32>
                       : D == 64 ? (const void *)decode_attn_half_kernel<T, 64>
                                 : (const void *)decode_attn_half_kernel<T, 128>;
    const void *k = which == LAYER_DECODE_ATTN ? attn
                    : which == LAYER_DECODE_MLP ? (const void *)decode_mlp_half_kernel<T>
                                                : (const void *)decode_residual_kernel<T>;
    cudaError_t e = cudaSuccess;
    if (bytes > 0) e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (e == cudaSuccess && carveout >= 0)
        e = cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout, carveout);
    return e;
}

}  // namespace

extern "C" size_t layer_decode_smem(int which, int C, int D, int key_cap, int kv_stage)
{
    if (which == LAYER_DECODE_ATTN) return (size_t)attn_smem(C, D, key_cap, kv_stage).total;
    if (which == LAYER_DECODE_MLP) return (size_t)mlp_smem(C).total;
    return (size_t)C * 2;                        /* the residual: its bias vector */
}

extern "C" cudaError_t layer_decode_prepare(int dtype, int C, int D, int key_cap, int kv_stage,
                                           int carveout)
{
    for (int which = LAYER_DECODE_ATTN; which <= LAYER_DECODE_RESIDUAL; which++) {
        const size_t bytes = layer_decode_smem(which, C, D, key_cap, kv_stage);
        const cudaError_t e = dtype == DTYPE_F16 ? set_smem<__half>(which, D, bytes, carveout)
                                                 : set_smem<__nv_bfloat16>(which, D, bytes, carveout);
        if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
}

extern "C" cudaError_t layer_decode_cuda(const LayerDecodeArgs *a, int which, int dtype,
                                         cudaStream_t stream, int pdl)
{
    if (dtype == DTYPE_F16) return launch_half<__half>(*a, which, stream, pdl);
    if (dtype == DTYPE_BF16) return launch_half<__nv_bfloat16>(*a, which, stream, pdl);
    return cudaErrorInvalidValue;
}
