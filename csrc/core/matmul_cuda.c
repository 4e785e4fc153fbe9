/* matmul_cuda.c — the CUDA backend's GEMMs: the split-K GEMV of kernels/gemv.cu
 * for small batches (M <= GEMV_MAX_M, fp16/bf16; layernorm folded in for
 * layernorm_matmul), otherwise cuBLASLt:
 *     out(M, N) = act(in(M, K) @ w + bias [+ out if MATMUL_ACCUMULATE])
 * w is (K, N) row-major (Conv1D), or (N, K) with MATMUL_W_NK (lm_head = wte).
 *
 * Row-major to cuBLAS's column-major: a row-major X(r, c) is the column-major
 * X^T(c, r), so we compute out^T(N, M) = w^T(N, K) @ in^T(K, M):
 *     A = w   (col-major N x K, ld N; or K x N, ld K with op T for W_NK)
 *     B = in  (col-major K x M, ld K)
 *     C = D = out (col-major N x M, ld N); the bias epilogue adds bias[n] per row
 *     of D, i.e. per output column of the row-major out.
 * Compute type CUBLAS_COMPUTE_32F for every dtype (no TF32: fp32 models match the
 * CPU within 1e-5); scale type fp32; bias in the compute dtype.
 * Epilogues: GELU_BIAS for gelu_new (cuBLASLt's GELU is the tanh form), RELU_BIAS
 * for relu, BIAS + the gelu_erf kernel for the erf GELU.
 * Plans (descriptors, layouts, heuristic algorithm) are cached per
 * (M, K, N, flags, act, bias?, pointer alignments) in CudaImpl.plans, so a steady
 * step does no planning; every GEMM uses the preallocated workspace, which keeps
 * it capturable in a CUDA graph. */
#include "backend_cuda.h"
#include "config.h"
#include "kernels.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* log2 of the pointer's alignment, capped at 256 bytes (8) */
static int align_log2(const void *p)
{
    uintptr_t v = (uintptr_t)p;
    int a = 0;
    while (a < 8 && !(v & ((uintptr_t)1 << a))) a++;
    return a;
}

static void plan_release(MatmulPlan *p)
{
    if (p->op) cublasLtMatmulDescDestroy(p->op);
    if (p->a) cublasLtMatrixLayoutDestroy(p->a);
    if (p->b) cublasLtMatrixLayoutDestroy(p->b);
    if (p->c) cublasLtMatrixLayoutDestroy(p->c);
    memset(p, 0, sizeof *p);
}

void cuda_matmul_plans_free(CudaImpl *im)
{
    for (int i = 0; i < MATMUL_PLAN_SLOTS; i++) plan_release(&im->plans[i]);
}

static cudaDataType_t cuda_dtype(DType dt)
{
    return dt == DTYPE_F32 ? CUDA_R_32F : dt == DTYPE_F16 ? CUDA_R_16F : CUDA_R_16BF;
}

/* Builds descriptors and picks the algorithm for the key already stored in p. */
static Status plan_build(CudaImpl *im, MatmulPlan *p, DType dtype, Error *err)
{
    cublasLtMatmulPreference_t pref = NULL;
    const cudaDataType_t dt = cuda_dtype(dtype);
    const int wnk = (p->flags & MATMUL_W_NK) != 0, act_on = (p->flags & MATMUL_GELU) != 0;
    const cublasOperation_t ta = wnk ? CUBLAS_OP_T : CUBLAS_OP_N, tb = CUBLAS_OP_N;
    cublasLtEpilogue_t ep;
    if (act_on && p->act == ACT_RELU)
        ep = p->has_bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU;
    else if (act_on && p->act != ACT_GELU_ERF)
        ep = p->has_bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
    else
        ep = p->has_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;

    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
    if (wnk)
        CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, dt, (uint64_t)p->K, (uint64_t)p->N, p->K));
    else
        CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, dt, (uint64_t)p->N, (uint64_t)p->K, p->N));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, dt, (uint64_t)p->K, (uint64_t)p->M, p->K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->c, dt, (uint64_t)p->N, (uint64_t)p->M, p->N));

    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = MATMUL_WORKSPACE_BYTES;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    const cublasLtMatmulPreferenceAttributes_t which[3] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES};
    for (int i = 0; i < 3; i++) {
        uint32_t bytes = 1u << ((p->align >> (4 * i)) & 15);
        CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, which[i], &bytes, sizeof bytes));
    }
    uint32_t dbytes = 1u << ((p->align >> 8) & 15);   /* D = C */
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &dbytes, sizeof dbytes));

    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    memset(&res, 0, sizeof res);
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(im->lt, p->op, p->a, p->b, p->c, p->c, pref, 1,
                                                &res, &found));
    if (found < 1) {
        error_set(err, GPT2_ERR_DEVICE, "cuBLASLt has no algorithm for %s GEMM M=%d K=%d N=%d "
                  "flags=%d", dtype_name(dtype), p->M, p->K, p->N, p->flags);
        goto fail;
    }
    p->algo = res.algo;
    cublasLtMatmulPreferenceDestroy(pref);
    p->used = 1;
    return GPT2_OK;
fail:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    plan_release(p);
    return err ? err->code : GPT2_ERR_DEVICE;
}

/* The cached plan for this key, building it (and evicting round-robin) if new. */
static Status plan_get(CudaImpl *im, MatmulPlan **out, DType dtype, int M, int K, int N,
                       int flags, int act, int has_bias, int align, Error *err)
{
    MatmulPlan *free_slot = NULL;
    for (int i = 0; i < MATMUL_PLAN_SLOTS; i++) {
        MatmulPlan *p = &im->plans[i];
        if (!p->used) { if (!free_slot) free_slot = p; continue; }
        if (p->M == M && p->K == K && p->N == N && p->flags == flags && p->act == act &&
            p->has_bias == has_bias && p->align == align) {
            *out = p;
            return GPT2_OK;
        }
    }
    if (!free_slot) {
        free_slot = &im->plans[im->next_evict];
        im->next_evict = (im->next_evict + 1) % MATMUL_PLAN_SLOTS;
        plan_release(free_slot);
    }
    MatmulPlan *p = free_slot;
    p->M = M; p->K = K; p->N = N; p->flags = flags; p->act = act;
    p->has_bias = has_bias; p->align = align;
    Status s = plan_build(im, p, dtype, err);
    if (s != GPT2_OK) return s;
    *out = p;
    return GPT2_OK;
}

/* ---- small batches: the split-K GEMV of kernels/gemv.cu ---- */

Status cuda_gemv_init(CudaImpl *im, Error *err)
{
    (void)err;
    const char *env = getenv("GPT2_ENGINE_GEMV");
    im->gemv_enabled = !(env && strcmp(env, "0") == 0);
    return GPT2_OK;
}

/* Runs the GEMV when it serves this call (returns 1), else 0; *s is the launch status. */
static int try_gemv(Backend *b, GemvArgs *a, int flags, Status *s, Error *err)
{
    CudaImpl *im = cuda_impl(b);
    const int wnk = (flags & MATMUL_W_NK) != 0;
    a->num_sms = im->num_sms;
    a->clusters = b->compute_capability >= 90;
    a->pdl = im->pdl;
    if (!im->gemv_enabled || !gemv_supported(a, wnk, (int)b->dtype)) return 0;
    *s = GPT2_OK;
    CUDA_CHECK(gemv_cuda(a, wnk, (int)b->dtype, im->stream));
    return 1;
fail:
    *s = err ? err->code : GPT2_ERR_DEVICE;
    return 1;
}

static int gemv_act_code(int flags, int act)
{
    if (!(flags & MATMUL_GELU)) return ACT_CODE_NONE;
    return act == ACT_GELU_ERF ? ACT_CODE_GELU_ERF : act == ACT_RELU ? ACT_CODE_RELU
                                                                     : ACT_CODE_GELU_TANH;
}

Status cuda_layernorm_matmul(Backend *b, void *out, const void *in, const void *ln_w,
                             const void *ln_b, float eps, void *ln_out, const void *w,
                             const void *bias, int M, int K, int N, int flags, int act,
                             const CacheWrite *cw, Error *err)
{
    if (M < 0 || K <= 0 || N <= 0)
        return error_set(err, GPT2_ERR_VALUE, "layernorm_matmul: bad shape M=%d K=%d N=%d", M,
                         K, N);
    if (cw && N != 3 * cw->num_heads * cw->head_size)
        return error_set(err, GPT2_ERR_VALUE, "layernorm_matmul: cache write needs N = 3*H*D "
                         "(N=%d H=%d D=%d)", N, cw->num_heads, cw->head_size);
    if (M == 0) return GPT2_OK;
    CudaImpl *im = cuda_impl(b);
    CUDA_CHECK(cuda_use_device(b));
    GemvArgs a = {out, in, w, bias, ln_w, ln_b, eps, M, K, N,
                  (flags & MATMUL_ACCUMULATE) != 0, gemv_act_code(flags, act),
                  cw ? cw->k_cache : NULL, cw ? cw->v_cache : NULL,
                  cw ? cw->slot_mapping : NULL, cw ? cw->num_heads : 0,
                  cw ? cw->head_size : 0, cw ? cw->block_size : 0, 0, 0, 0};
    Status s;
    if (try_gemv(b, &a, flags, &s, err)) return s;
    CUDA_CHECK(layernorm_cuda(ln_out, in, ln_w, ln_b, M, K, eps, b->dtype, im->stream, im->pdl));
    if ((s = cuda_matmul(b, out, ln_out, w, bias, M, K, N, flags, act, err))) return s;
    if (cw) {
        const size_t C = (size_t)cw->num_heads * cw->head_size, es = dtype_size(b->dtype);
        CUDA_CHECK(reshape_and_cache_cuda((char *)out + C * es, (char *)out + 2 * C * es, N,
                                          cw->k_cache, cw->v_cache, cw->slot_mapping, M,
                                          cw->num_heads, cw->head_size, cw->block_size,
                                          b->dtype, im->stream, im->pdl));
    }
    return GPT2_OK;
fail:
    return err ? err->code : GPT2_ERR_DEVICE;
}

/* ---- cuBLASLt for everything else ---- */

Status cuda_matmul(Backend *b, void *out, const void *in, const void *w, const void *bias,
                   int M, int K, int N, int flags, int act, Error *err)
{
    CudaImpl *im = cuda_impl(b);
    if (M < 0 || K <= 0 || N <= 0)
        return error_set(err, GPT2_ERR_VALUE, "matmul: bad shape M=%d K=%d N=%d", M, K, N);
    if (M == 0) return GPT2_OK;
    CUDA_CHECK(cuda_use_device(b));
    {
        GemvArgs a = {out, in, w, bias, NULL, NULL, 0.0f, M, K, N,
                      (flags & MATMUL_ACCUMULATE) != 0, gemv_act_code(flags, act),
                      NULL, NULL, NULL, 0, 0, 0, 0, 0, 0};
        Status s;
        if (try_gemv(b, &a, flags, &s, err)) return s;
    }
    if (!(flags & MATMUL_GELU)) act = 0;   /* act only matters with MATMUL_GELU */
    const int align = align_log2(w) | align_log2(in) << 4 | align_log2(out) << 8 |
                      (bias ? align_log2(bias) : 0) << 12;
    MatmulPlan *p = NULL;
    Status s = plan_get(im, &p, b->dtype, M, K, N, flags, act, bias != NULL, align, err);
    if (s != GPT2_OK) return s;
    if (bias)
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                    &bias, sizeof bias));
    const float alpha = 1.0f, beta = (flags & MATMUL_ACCUMULATE) ? 1.0f : 0.0f;
    CUBLAS_CHECK(cublasLtMatmul(im->lt, p->op, &alpha, w, p->a, in, p->b, &beta, out, p->c, out,
                                p->c, &p->algo, im->workspace, MATMUL_WORKSPACE_BYTES,
                                im->stream));
    if ((flags & MATMUL_GELU) && act == ACT_GELU_ERF)
        CUDA_CHECK(gelu_erf_cuda(out, (size_t)M * N, b->dtype, im->stream));
    return GPT2_OK;
fail:
    return err ? err->code : GPT2_ERR_DEVICE;
}
