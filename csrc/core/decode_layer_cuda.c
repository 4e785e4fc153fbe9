/* decode_layer_cuda.c — the CUDA backend's batch-1 step in two kernels per layer
 * (kernels/decode_layer.cu): checks that the model and GPU fit them, allocates the
 * residual and partial-sum buffers once, and launches a step:
 *   [attn half, mlp half] x n_layer -> last residual -> ln_f + lm_head GEMV (gemv.cu),
 * the first attn half building x from the embeddings itself (GPT2_ENGINE_LAYER_EMBED=kernel:
 * an embedding kernel first), every launch but the first with programmatic dependent
 * launch, so each kernel's weight copies overlap the kernel before it. It is the default for
 * T = 1 steps when it fits and a layer holds at most 16 MB of weights (measured faster at
 * gpt2's 14 MB, slower at gpt2-xl's 61 MB) (GPT2_ENGINE_FUSED_DECODE=0 turns it off, =1 picks the older
 * one-kernel step of decode_fused_cuda.c instead, =layers forces it for any size);
 * decode_fused_cuda.c dispatches. GPT2_ENGINE_LAYER_TRACE=1 (or =PATH) stamps each block's
 * phases over the last LAYER_TRACE_STEPS steps; decode_layer_trace_cuda.c prints them when
 * the engine closes. */
#include "backend_cuda.h"
#include "config.h"
#include "kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* measured (H200, gpt2, bench_decode, the same run): the next launch may start at entry
 * 0.261, after the wait 0.252, after the layernorm 0.249 ms per token */
#define LAYER_TRIGGER_DEFAULT LAYER_TRIGGER_LN
/* the layernorm's statistics: sent with x through the cluster (1) or two block reductions
 * after it (0) */
#define LAYER_LN_CLUSTER_DEFAULT 1
/* the first layer's attn half builds x from wte and wpe itself (1) or reads the embedding
 * kernel's output (0) */
#define LAYER_EMBED_FUSED_DEFAULT 1

typedef struct LayerDecode {
    int mode;                   /* FUSED_MODE_LAYERS: first member (decode_fused_cuda.c) */
    int n_layer, C, H, D, V, block_size, key_cap, kv_stage, act;
    int trigger;                /* LAYER_TRIGGER_*: GPT2_ENGINE_LAYER_TRIGGER */
    int ln_cluster;             /* layernorm statistics sent with x: GPT2_ENGINE_LAYER_LN */
    int embed_fused;            /* no embedding kernel: GPT2_ENGINE_LAYER_EMBED */
    float eps, scale;
    const void *wte, *wpe, *lnf_w, *lnf_b;
    FusedDecodeLayer *layers;   /* host (n_layer): device pointers */
    void *res[2];               /* device (C) each: the residual, alternating */
    float *part_attn;           /* device (H, C) */
    float *part_mlp;            /* device (mlp_clusters, C) */
    int mlp_clusters;           /* LAYER_DECODE_MLP_CLUSTERS(C): part_mlp's rows */
    unsigned long long *trace;  /* device (LAYER_TRACE_STEPS, 2 n_layer + 1, ...), or NULL */
    unsigned *trace_step;       /* device: steps stamped */
    char trace_to[256];         /* GPT2_ENGINE_LAYER_TRACE: "1" (stderr) or a file */
} LayerDecode;

/* Cached keys per rank that the attn half stages in shared memory: as many as leave room
 * for an mlp-half block on the same SM (the device's shared memory per SM less what it
 * reserves per block: 228 and 1 KB on Hopper), so that under PDL each kernel's copies
 * overlap the one before; GPT2_ENGINE_LAYER_KV_STAGE=N asks for N instead (measuring). */
static int kv_stage_keys(int C, int D, int key_cap)
{
    const char *env = getenv("GPT2_ENGINE_LAYER_KV_STAGE");
    const int asked = env && *env ? atoi(env) : -1;
    if (asked >= 0) return GPT2_MIN(asked, key_cap);
    int dev = 0, per_sm = 0, reserved = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev) !=
            cudaSuccess ||
        cudaDeviceGetAttribute(&reserved, cudaDevAttrReservedSharedMemoryPerBlock, dev) !=
            cudaSuccess) {
        (void)cudaGetLastError();
        return 0;                       /* none staged: every key read from the cache */
    }
    const long long statics = 512;      /* both kernels' static shared memory, rounded up */
    const long long room = (long long)per_sm - 2LL * reserved - statics -
                           (long long)layer_decode_smem(LAYER_DECODE_MLP, C, D, key_cap, 0) -
                           (long long)layer_decode_smem(LAYER_DECODE_ATTN, C, D, key_cap, 0);
    const long long keys = room > 0 ? room / (2LL * (D + 8) * 2) : 0;
    return (int)GPT2_MIN(keys, (long long)key_cap);
}

/* Why the kernels can't serve this model on this GPU, or NULL. */
static const char *unfit(const Backend *b, const FusedDecodeModel *m, int key_cap, int kv_stage,
                         int forced, char *buf, size_t n)
{
    const int C = m->n_embd, H = m->n_head, D = H ? C / H : 0;
    if (b->dtype != DTYPE_F16 && b->dtype != DTYPE_BF16)
        return "float32 models run the per-layer kernels";
    if (b->compute_capability < 90) return "needs compute capability 9.0 (thread-block clusters)";
    if (m->n_layer < 1) return "the model has no layers";
    if (C % 64 || D * H != C || (D != 32 && D != 64 && D != 128)) {
        snprintf(buf, n, "n_embd=%d, head size %d: needs n_embd %% 64 == 0 and a head size "
                 "of 32, 64 or 128", C, D);
        return buf;
    }
    int dev = 0, optin = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return "cannot query the shared memory per block";
    }
    /* measured (H200): gpt2 (14 MB of weights per layer) 0.321 against 0.333 ms per token,
     * gpt2-xl (61 MB) 3.45 against 1.97: a block's share of a big layer is more than its
     * copies before the wait can hide */
    const double layer_mb = 24.0 * C * C / 1048576.0;
    if (!forced && layer_mb > 16.0) {
        snprintf(buf, n, "n_embd=%d: %.0f MB of weights per layer, over the 16 MB up to which "
                 "two kernels per layer beat the per-layer kernels (GPT2_ENGINE_FUSED_DECODE="
                 "layers forces them)", C, layer_mb);
        return buf;
    }
    const size_t need = GPT2_MAX(layer_decode_smem(LAYER_DECODE_ATTN, C, D, key_cap, kv_stage),
                                 layer_decode_smem(LAYER_DECODE_MLP, C, D, key_cap, 0));
    if (need > (size_t)optin) {
        snprintf(buf, n, "n_embd=%d needs %zu bytes of shared memory per block, the GPU has %d",
                 C, need, optin);
        return buf;
    }
    GemvArgs lm = {.in = m->wte, .w = m->wte, .ln_w = m->ln_f_w, .ln_b = m->ln_f_b,
                   .eps = m->eps, .M = 1, .K = C, .N = m->vocab_size};
    if (!gemv_supported(&lm, 1, (int)b->dtype)) return "the lm_head GEMV does not serve n_embd";
    return fused_weights_misaligned(m);
}

void cuda_layer_decode_destroy(Backend *b, void *state)
{
    LayerDecode *f = state;
    if (!f) return;
    if (cuda_use_device(b) == cudaSuccess) {
        cudaFree(f->res[0]);
        cudaFree(f->res[1]);
        cudaFree(f->part_attn);
        cudaFree(f->part_mlp);
        if (f->trace) layer_trace_print(f->trace, f->trace_step, f->n_layer, f->C, f->trace_to);
        cudaFree(f->trace);
        cudaFree(f->trace_step);
    }
    cudaGetLastError();
    free(f->layers);
    free(f);
}

Status cuda_layer_decode_create(Backend *b, const FusedDecodeModel *m, int forced, void **state,
                                char *why, size_t why_len, Error *err)
{
    LayerDecode *f = NULL;
    *state = NULL;
    char buf[160];
    const int C = m->n_embd, H = m->n_head, D = H ? C / H : 0;
    const int key_cap = (GPT2_MAX(m->max_model_len, 1) + AH_RANKS - 1) / AH_RANKS;
    const char *trig = getenv("GPT2_ENGINE_LAYER_TRIGGER");
    const int trigger = !trig || !*trig               ? LAYER_TRIGGER_DEFAULT
                        : strcmp(trig, "entry") == 0 ? LAYER_TRIGGER_ENTRY
                        : strcmp(trig, "wait") == 0  ? LAYER_TRIGGER_WAIT
                        : strcmp(trig, "ln") == 0    ? LAYER_TRIGGER_LN
                                                     : -1;
    const char *lnv = getenv("GPT2_ENGINE_LAYER_LN");
    const int ln_cluster = !lnv || !*lnv               ? LAYER_LN_CLUSTER_DEFAULT
                           : strcmp(lnv, "cluster") == 0 ? 1
                           : strcmp(lnv, "block") == 0   ? 0
                                                         : -1;
    const char *emv = getenv("GPT2_ENGINE_LAYER_EMBED");
    const int embed_fused = !emv || !*emv               ? LAYER_EMBED_FUSED_DEFAULT
                            : strcmp(emv, "fused") == 0  ? 1
                            : strcmp(emv, "kernel") == 0 ? 0
                                                         : -1;
    const int kv_stage = D > 0 ? kv_stage_keys(C, D, key_cap) : 0;
    const char *no = trigger < 0       ? "GPT2_ENGINE_LAYER_TRIGGER is none of entry, wait, ln"
                     : ln_cluster < 0  ? "GPT2_ENGINE_LAYER_LN is none of cluster, block"
                     : embed_fused < 0 ? "GPT2_ENGINE_LAYER_EMBED is none of fused, kernel"
                                       : unfit(b, m, key_cap, kv_stage, forced, buf, sizeof buf);
    if (no) {
        snprintf(why, why_len, "off: %s", no);
        return GPT2_OK;
    }
    CUDA_CHECK(cuda_use_device(b));
    f = calloc(1, sizeof *f);
    if (!f || !(f->layers = calloc((size_t)m->n_layer, sizeof *f->layers))) {
        error_set(err, GPT2_ERR_NOMEM, "out of host memory");
        goto fail;
    }
    f->mode = FUSED_MODE_LAYERS;
    f->n_layer = m->n_layer, f->C = C, f->H = H, f->D = D, f->V = m->vocab_size;
    f->block_size = m->block_size, f->key_cap = key_cap, f->kv_stage = kv_stage;
    f->act = fused_act_code(m->activation);
    f->trigger = trigger;
    f->ln_cluster = ln_cluster;
    f->embed_fused = embed_fused;
    f->eps = m->eps, f->scale = m->scale;
    f->wte = m->wte, f->wpe = m->wpe, f->lnf_w = m->ln_f_w, f->lnf_b = m->ln_f_b;
    for (int l = 0; l < m->n_layer; l++) {
        const void *const *w = m->layer_weights + 12 * l;
        f->layers[l] = (FusedDecodeLayer){w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8],
                                          w[9], w[10], w[11], m->key_cache[l], m->value_cache[l]};
    }
    const size_t es = dtype_size(b->dtype);
    CUDA_CHECK(cudaMalloc(&f->res[0], (size_t)C * es));
    CUDA_CHECK(cudaMalloc(&f->res[1], (size_t)C * es));
    CUDA_CHECK(cudaMalloc((void **)&f->part_attn, (size_t)H * C * sizeof(float)));
    f->mlp_clusters = LAYER_DECODE_MLP_CLUSTERS(C);
    CUDA_CHECK(cudaMalloc((void **)&f->part_mlp, (size_t)f->mlp_clusters * C * sizeof(float)));
    int carveout = 100;   /* every kernel of the step on the same (maximal) carveout */
    const char *cv = getenv("GPT2_ENGINE_LAYER_CARVEOUT");
    if (cv && *cv) carveout = atoi(cv);
    CUDA_CHECK(layer_decode_prepare((int)b->dtype, C, D, key_cap, kv_stage, carveout));
    if (carveout >= 0) CUDA_CHECK(gemv_nk_prefer_carveout((int)b->dtype, carveout));
    const char *tr = getenv("GPT2_ENGINE_LAYER_TRACE");
    if (tr && *tr && strcmp(tr, "0") != 0) {
        const size_t bytes = layer_trace_words(f->n_layer) * sizeof *f->trace;
        CUDA_CHECK(cudaMalloc((void **)&f->trace, bytes));
        CUDA_CHECK(cudaMemset(f->trace, 0, bytes));
        CUDA_CHECK(cudaMalloc((void **)&f->trace_step, sizeof *f->trace_step));
        CUDA_CHECK(cudaMemset(f->trace_step, 0, sizeof *f->trace_step));
        snprintf(f->trace_to, sizeof f->trace_to, "%s", tr);
    }
    snprintf(why, why_len, "on: two kernels per layer (%d x %d and %d x %d blocks, clusters "
             "of %d and %d; %d cached keys per block staged; PDL trigger %s)", H, AH_RANKS,
             f->mlp_clusters, MH_RANKS, AH_RANKS, MH_RANKS, kv_stage,
             trigger == LAYER_TRIGGER_ENTRY ? "at entry"
             : trigger == LAYER_TRIGGER_WAIT ? "after the wait" : "after the layernorm");
    *state = f;
    return GPT2_OK;
fail:
    cuda_layer_decode_destroy(b, f);
    return err->code;
}

Status cuda_layer_decode(Backend *b, void *state, const FusedDecodeStep *s, Error *err)
{
    CudaImpl *im = cuda_impl(b);
    const LayerDecode *f = state;
    const int C = f->C, dt = (int)b->dtype, pdl = im->pdl;
    CUDA_CHECK(cuda_use_device(b));
    /* K1 reads res[1] and writes res[0], K2 the reverse: a kernel never overwrites
     * what the one before it (still finishing under PDL) reads */
    if (!f->embed_fused)
        CUDA_CHECK(embed_cuda(f->res[1], s->input_ids, s->positions, f->wte, f->wpe, 1, C, dt,
                              im->stream));
    for (int l = 0; l < f->n_layer; l++) {
        const FusedDecodeLayer *w = &f->layers[l];
        LayerDecodeArgs a = {
            .res_in = l || !f->embed_fused ? f->res[1] : NULL, .wte = f->wte, .wpe = f->wpe,
            .input_ids = s->input_ids, .positions = s->positions, .part_in = l ? f->part_mlp : NULL,
            .part_bias = l ? f->layers[l - 1].fc2_b : NULL, .P = l ? f->mlp_clusters : 0,
            .res_out = f->res[0], .ln_w = w->ln1_w, .ln_b = w->ln1_b, .w1 = w->qkv_w,
            .b1 = w->qkv_b, .w2 = w->proj_w, .part_out = f->part_attn, .k_cache = w->k_cache,
            .v_cache = w->v_cache, .slot_mapping = s->slot_mapping, .seq_lens = s->seq_lens,
            .block_tables = s->block_tables, .C = C, .H = f->H, .D = f->D,
            .block_size = f->block_size, .key_cap = f->key_cap, .act = f->act,
            .kv_stage = f->kv_stage, .trigger = f->trigger, .ln_cluster = f->ln_cluster,
            .eps = f->eps, .scale = f->scale,
            .trace = f->trace, .trace_step = f->trace_step, .trace_kernel = 2 * l,
            .trace_kernels = 2 * f->n_layer + 1,
        };
        /* the first launch reads the step's inputs before its wait: it must not start
         * before the work that wrote them (no PDL without the embedding kernel before it) */
        CUDA_CHECK(layer_decode_cuda(&a, LAYER_DECODE_ATTN, dt, im->stream,
                                     l || !f->embed_fused ? pdl : 0));
        a.res_in = f->res[0], a.part_in = f->part_attn, a.part_bias = w->proj_b, a.P = f->H;
        a.res_out = f->res[1], a.ln_w = w->ln2_w, a.ln_b = w->ln2_b, a.w1 = w->fc_w;
        a.b1 = w->fc_b, a.w2 = w->fc2_w, a.part_out = f->part_mlp, a.trace_kernel = 2 * l + 1;
        CUDA_CHECK(layer_decode_cuda(&a, LAYER_DECODE_MLP, dt, im->stream, pdl));
    }
    const LayerDecodeArgs r = {.res_in = f->res[1], .part_in = f->part_mlp,
                               .part_bias = f->layers[f->n_layer - 1].fc2_b, .P = f->mlp_clusters,
                               .res_out = f->res[0], .C = C, .trigger = f->trigger,
                               .trace = f->trace, .trace_step = f->trace_step,
                               .trace_kernel = 2 * f->n_layer,
                               .trace_kernels = 2 * f->n_layer + 1};
    CUDA_CHECK(layer_decode_cuda(&r, LAYER_DECODE_RESIDUAL, dt, im->stream, pdl));
    GemvArgs lm = {.out = s->logits, .in = f->res[0], .w = f->wte, .ln_w = f->lnf_w,
                   .ln_b = f->lnf_b, .eps = f->eps, .M = 1, .K = C, .N = f->V,
                   .act = ACT_CODE_NONE, .num_sms = im->num_sms, .clusters = 1, .pdl = pdl};
    CUDA_CHECK(gemv_cuda(&lm, 1, dt, im->stream));
    return GPT2_OK;
fail:
    return err->code;
}
