/* backend_cpu.c — the CPU device backend: host memory, float32 math, GEMMs
 * through CBLAS (OpenBLAS). It is also the oracle the CUDA kernels are tested
 * against, so it favours plain, obviously-correct loops. */
#include "backend.h"
#include "config.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static Status cpu_alloc(Backend *b, void **ptr, size_t bytes, Error *err)
{
    (void)b;
    *ptr = NULL;
    if (bytes == 0) bytes = 64;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (posix_memalign(ptr, 64, rounded) != 0) {
        *ptr = NULL;
        return error_set(err, GPT2_ERR_NOMEM, "out of host memory allocating %zu bytes", bytes);
    }
    return GPT2_OK;
}

static void cpu_free(Backend *b, void *ptr) { (void)b; free(ptr); }

static Status cpu_copy(Backend *b, void *dst, const void *src, size_t bytes, Error *err)
{
    (void)b; (void)err;
    if (bytes) memmove(dst, src, bytes);
    return GPT2_OK;
}

static Status cpu_memset_zero(Backend *b, void *dst, size_t bytes, Error *err)
{
    (void)b; (void)err;
    memset(dst, 0, bytes);
    return GPT2_OK;
}

static Status cpu_synchronize(Backend *b, Error *err) { (void)b; (void)err; return GPT2_OK; }

static Status cpu_mem_info(Backend *b, size_t *free_bytes, size_t *total_bytes, Error *err)
{
    (void)b; (void)err;
    long page = sysconf(_SC_PAGESIZE);
    *free_bytes = (size_t)sysconf(_SC_AVPHYS_PAGES) * (size_t)page;
    *total_bytes = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)page;
    return GPT2_OK;
}

static Status cpu_embed(Backend *b, void *out, const int32_t *ids, const int32_t *pos,
                        const void *wte, const void *wpe, int T, int C, Error *err)
{
    (void)b; (void)err;
    float *o = out;
    const float *te = wte, *pe = wpe;
    for (int t = 0; t < T; t++) {
        const float *a = te + (size_t)ids[t] * C, *p = pe + (size_t)pos[t] * C;
        for (int c = 0; c < C; c++) o[(size_t)t * C + c] = a[c] + p[c];
    }
    return GPT2_OK;
}

static Status cpu_layernorm(Backend *b, void *out, const void *in, const void *w,
                            const void *bias, int T, int C, float eps, Error *err)
{
    (void)b; (void)err;
    const float *x = in, *g = w, *bb = bias;
    float *y = out;
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * C;
        double mean = 0, var = 0;
        for (int c = 0; c < C; c++) mean += xr[c];
        mean /= C;
        for (int c = 0; c < C; c++) { double d = xr[c] - mean; var += d * d; }
        var /= C;
        float rstd = (float)(1.0 / sqrt(var + eps)), m = (float)mean;
        float *yr = y + (size_t)t * C;
        for (int c = 0; c < C; c++) yr[c] = (xr[c] - m) * rstd * g[c] + bb[c];
    }
    return GPT2_OK;
}

static float activation_apply(float x, int act)
{
    switch (act) {
    case ACT_GELU_ERF: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case ACT_RELU: return x > 0 ? x : 0;
    default: {                         /* gelu_new: tanh approximation */
        float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
        return 0.5f * x * (1.0f + tanhf(u));
    }
    }
}

static Status cpu_matmul(Backend *b, void *out, const void *in, const void *w, const void *bias,
                         int M, int K, int N, int flags, int act, Error *err)
{
    (void)b; (void)err;
    float *o = out;
    const float *x = in, *wt = w, *bs = bias;
    float beta = (flags & MATMUL_ACCUMULATE) ? 1.0f : 0.0f;
    if (bs) {   /* fold the bias into C and let the GEMM accumulate on top of it */
        for (int m = 0; m < M; m++) {
            float *row = o + (size_t)m * N;
            if (beta != 0.0f) for (int n = 0; n < N; n++) row[n] += bs[n];
            else memcpy(row, bs, (size_t)N * sizeof(float));
        }
        beta = 1.0f;
    }
    if (flags & MATMUL_W_NK)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, wt, K, beta, o, N);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, x, K, wt, N, beta, o, N);
    if (flags & MATMUL_GELU)
        for (size_t i = 0; i < (size_t)M * N; i++) o[i] = activation_apply(o[i], act);
    return GPT2_OK;
}

static Status cpu_reshape_and_cache(Backend *b, const void *k, const void *v, int kv_stride,
                                    void *k_cache, void *v_cache, const int32_t *slot_mapping,
                                    int T, int H, int D, int block_size, Error *err);

static Status cpu_layernorm_matmul(Backend *b, void *out, const void *in, const void *ln_w,
                                   const void *ln_b, float eps, void *ln_out, const void *w,
                                   const void *bias, int M, int K, int N, int flags, int act,
                                   const CacheWrite *cw, Error *err)
{
    Status s = cpu_layernorm(b, ln_out, in, ln_w, ln_b, M, K, eps, err);
    if (s == GPT2_OK) s = cpu_matmul(b, out, ln_out, w, bias, M, K, N, flags, act, err);
    if (s != GPT2_OK || !cw) return s;
    const int C = cw->num_heads * cw->head_size;
    return cpu_reshape_and_cache(b, (float *)out + C, (float *)out + 2 * (size_t)C, N,
                                 cw->k_cache, cw->v_cache, cw->slot_mapping, M, cw->num_heads,
                                 cw->head_size, cw->block_size, err);
}

static Status cpu_reshape_and_cache(Backend *b, const void *k, const void *v, int kv_stride,
                                    void *k_cache, void *v_cache, const int32_t *slot_mapping,
                                    int T, int H, int D, int block_size, Error *err)
{
    (void)b; (void)err;
    const float *kk = k, *vv = v;
    float *kc = k_cache, *vc = v_cache;
    for (int t = 0; t < T; t++) {
        int32_t slot = slot_mapping[t];
        if (slot < 0) continue;
        size_t blk = (size_t)(slot / block_size), off = (size_t)(slot % block_size);
        for (int h = 0; h < H; h++) {
            size_t dst = ((blk * H + h) * block_size + off) * D;
            memcpy(kc + dst, kk + (size_t)t * kv_stride + (size_t)h * D, (size_t)D * 4);
            memcpy(vc + dst, vv + (size_t)t * kv_stride + (size_t)h * D, (size_t)D * 4);
        }
    }
    return GPT2_OK;
}

static Status cpu_gather_rows(Backend *b, void *out, const void *in, const int32_t *rows, int n,
                              int C, Error *err)
{
    (void)b; (void)err;
    for (int i = 0; i < n; i++)
        memcpy((float *)out + (size_t)i * C, (const float *)in + (size_t)rows[i] * C,
               (size_t)C * sizeof(float));
    return GPT2_OK;
}

static Status cpu_to_float(Backend *b, float *out, const void *in, int rows, int cols, int ld,
                           Error *err)
{
    (void)b; (void)err;
    if ((const void *)out == in && ld == cols) return GPT2_OK;
    for (int r = 0; r < rows; r++)
        memmove(out + (size_t)r * cols, (const float *)in + (size_t)r * ld,
                (size_t)cols * sizeof(float));
    return GPT2_OK;
}

static Status cpu_sample(Backend *b, const void *logits, DType logits_dtype, int ld, int R,
                         int V, const SamplingRow *rows, const TokenAdjust *adj, int n_adj,
                         int max_logprobs, SamplerOutput *out, Error *err)
{
    (void)b;
    if (logits_dtype != DTYPE_F32 || ld != V)
        return error_set(err, GPT2_ERR_INTERNAL, "sample (cpu): needs float32 rows of V "
                         "(got %s, ld %d, V %d)", dtype_name(logits_dtype), ld, V);
    return sample_cpu(logits, R, V, rows, adj, n_adj, max_logprobs, out, err);
}

/* sample_launch / sample_wait: the CPU has nothing to overlap, so it samples at
 * launch into the ticket's own arrays (an error found then, such as a fully
 * masked row, is kept for sample_wait, as the GPU reports it there); wait copies
 * them out. upload_ints's feed reads the latest launch's tokens. */
typedef struct CpuSampleSlot {
    int pending, R, max_lp, cap_rows, cap_top;
    int32_t *tokens, *ranks, *top_ids;
    float *logprobs, *top_lps;
    Status status;
    Error err;
} CpuSampleSlot;

typedef struct CpuImpl {
    CpuSampleSlot slot[2];
    int next, latest;        /* ticket of the next launch; of the last one (-1: none) */
} CpuImpl;

static Status slot_reserve(CpuSampleSlot *sl, int R, int max_lp, Error *err)
{
    if (R > sl->cap_rows) {
        int32_t *t = realloc(sl->tokens, (size_t)R * 4);
        if (t) sl->tokens = t;
        int32_t *rk = t ? realloc(sl->ranks, (size_t)R * 4) : NULL;
        if (rk) sl->ranks = rk;
        float *lp = rk ? realloc(sl->logprobs, (size_t)R * 4) : NULL;
        if (lp) sl->logprobs = lp;
        if (!lp) return error_set(err, GPT2_ERR_NOMEM, "sample: out of memory");
        sl->cap_rows = R;
    }
    if ((size_t)R * max_lp > (size_t)sl->cap_top) {
        size_t n = (size_t)R * max_lp;
        int32_t *ti = realloc(sl->top_ids, n * 4);
        if (ti) sl->top_ids = ti;
        float *tl = ti ? realloc(sl->top_lps, n * 4) : NULL;
        if (tl) sl->top_lps = tl;
        if (!tl) return error_set(err, GPT2_ERR_NOMEM, "sample: out of memory");
        sl->cap_top = (int)n;
    }
    return GPT2_OK;
}

static Status cpu_sample_launch(Backend *b, const void *logits, DType logits_dtype, int ld,
                                int R, int V, const SamplingRow *rows, const TokenAdjust *adj,
                                int n_adj, int max_logprobs, int *ticket, Error *err)
{
    CpuImpl *im = b->impl;
    *ticket = -1;
    Status s = sampling_validate(logits, R, V, rows, adj, n_adj, max_logprobs,
                                 SAMPLING_NO_OUTPUT, err);
    if (s) return s;
    CpuSampleSlot *sl = &im->slot[im->next];
    if (sl->pending)
        return error_set(err, GPT2_ERR_INTERNAL, "sample_launch: two launches are already "
                         "outstanding (sample_wait first)");
    if ((s = slot_reserve(sl, R, max_logprobs, err))) return s;
    for (int r = 0; r < R; r++) sl->tokens[r] = -1;
    SamplerOutput o = {sl->tokens, sl->logprobs, sl->ranks, sl->top_ids, sl->top_lps};
    sl->err = (Error){0};
    sl->status = R ? cpu_sample(b, logits, logits_dtype, ld, R, V, rows, adj, n_adj,
                                max_logprobs, &o, &sl->err)
                   : GPT2_OK;
    sl->pending = 1;
    sl->R = R;
    sl->max_lp = max_logprobs;
    *ticket = im->latest = im->next;
    im->next ^= 1;
    return GPT2_OK;
}

static Status cpu_sample_wait(Backend *b, int ticket, SamplerOutput *out, Error *err)
{
    CpuImpl *im = b->impl;
    if (ticket < 0 || ticket > 1 || !im->slot[ticket].pending)
        return error_set(err, GPT2_ERR_INTERNAL, "sample_wait: no launch with ticket %d", ticket);
    CpuSampleSlot *sl = &im->slot[ticket];
    sl->pending = 0;
    if (sl->status) {
        if (err) *err = sl->err;
        return sl->status;
    }
    if (sl->R == 0) return GPT2_OK;
    if (sampling_validate_output(out, sl->max_lp))
        return error_set(err, GPT2_ERR_VALUE, "sample: NULL buffer");
    memcpy(out->tokens, sl->tokens, (size_t)sl->R * 4);
    memcpy(out->logprobs, sl->logprobs, (size_t)sl->R * 4);
    memcpy(out->ranks, sl->ranks, (size_t)sl->R * 4);
    if (sl->max_lp) {
        memcpy(out->topk_ids, sl->top_ids, (size_t)sl->R * sl->max_lp * 4);
        memcpy(out->topk_logprobs, sl->top_lps, (size_t)sl->R * sl->max_lp * 4);
    }
    return GPT2_OK;
}

static Status cpu_upload_ints(Backend *b, int32_t *dst, const int32_t *src, int n, int ids_off,
                              int feed_idx_off, int feed_row_off, int n_feeds, Error *err)
{
    CpuImpl *im = b->impl;
    if (n > 0) memcpy(dst, src, (size_t)n * sizeof *dst);
    if (n_feeds <= 0) return GPT2_OK;
    int32_t *ids = dst + ids_off;
    const int32_t *idx = dst + feed_idx_off, *rows = dst + feed_row_off;
    if (im->latest < 0)
        return error_set(err, GPT2_ERR_INTERNAL, "upload_ints: nothing was sampled yet to feed");
    const CpuSampleSlot *sl = &im->slot[im->latest];
    for (int i = 0; i < n_feeds; i++) {
        if (rows[i] < 0 || rows[i] >= sl->R)
            return error_set(err, GPT2_ERR_INTERNAL, "upload_ints: fed row %d of %d", rows[i], sl->R);
        ids[idx[i]] = sl->tokens[rows[i]] > 0 ? sl->tokens[rows[i]] : 0;
    }
    return GPT2_OK;
}

static Status cpu_fence(Backend *b, int i, Error *err)
{
    (void)b;
    if (i < 0 || i >= BACKEND_FENCES) return error_set(err, GPT2_ERR_INTERNAL, "fence %d", i);
    return GPT2_OK;                 /* every CPU op has finished when it returns */
}

static void cpu_destroy(Backend *b)
{
    if (!b) return;
    CpuImpl *im = b->impl;
    if (im)
        for (int i = 0; i < 2; i++) {
            CpuSampleSlot *sl = &im->slot[i];
            free(sl->tokens); free(sl->ranks); free(sl->logprobs);
            free(sl->top_ids); free(sl->top_lps);
        }
    free(im);
    free(b);
}

static const BackendOps cpu_ops = {
    .alloc = cpu_alloc,
    .free = cpu_free,
    .alloc_host = cpu_alloc,
    .free_host = cpu_free,
    .copy_h2d = cpu_copy,
    .copy_d2h = cpu_copy,
    .copy_d2d = cpu_copy,
    .memset_zero = cpu_memset_zero,
    .synchronize = cpu_synchronize,
    .mem_info = cpu_mem_info,
    .embed = cpu_embed,
    .layernorm = cpu_layernorm,
    .matmul = cpu_matmul,
    .layernorm_matmul = cpu_layernorm_matmul,
    .reshape_and_cache = cpu_reshape_and_cache,
    .gather_rows = cpu_gather_rows,
    .to_float = cpu_to_float,
    .sample = cpu_sample,
    .sample_launch = cpu_sample_launch,
    .sample_wait = cpu_sample_wait,
    .upload_ints = cpu_upload_ints,
    .fence_record = cpu_fence,
    .fence_wait = cpu_fence,
    .graph_capture_begin = NULL,
    .graph_capture_end = NULL,
    .graph_launch = NULL,
    .destroy = cpu_destroy,
};

Status backend_cpu_create(Backend **out, DType dtype, Error *err)
{
    *out = NULL;
    if (dtype != DTYPE_F32)
        return error_set(err, GPT2_ERR_VALUE,
                         "the CPU backend computes in float32 only (dtype='%s' needs "
                         "device='cuda'); use dtype='float32' or 'auto'", dtype_name(dtype));
    Backend *b = calloc(1, sizeof *b);
    CpuImpl *im = calloc(1, sizeof *im);
    if (!b || !im) {
        free(b);
        free(im);
        return error_set(err, GPT2_ERR_NOMEM, "out of memory creating the CPU backend");
    }
    im->latest = -1;
    b->impl = im;
    b->name = "cpu";
    b->dtype = dtype;
    b->ops = &cpu_ops;
    *out = b;
    return GPT2_OK;
}
