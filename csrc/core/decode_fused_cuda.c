/* decode_fused_cuda.c — the CUDA backend's batch-1 step outside the per-layer kernels,
 * and the dispatch between its two forms (GPT2_ENGINE_FUSED_DECODE):
 *   unset: two kernels per layer (decode_layer_cuda.c, kernels/decode_layer.cu) when the
 *                      model fits them and its layers are small enough (that file says),
 *                      else the per-layer kernels; "layers": them whenever they fit;
 *   "1" (or "persistent"): the whole step in ONE persistent kernel (kernels/decode_fused.cu,
 *                      below): checks that the model and GPU fit it, builds its per-layer
 *                      pointer table and work buffers once, and launches it;
 *   "0": off, every step runs the per-layer kernels.
 * The persistent kernel is slower than the per-layer kernels under programmatic dependent
 * launch on an H200 (gpt2 0.445 against 0.377 ms per token, gpt2-xl 3.76 against 2.09:
 * docs/performance_notes.md has the phase trace). GPT2_ENGINE_FUSED_LOOKAHEAD_MB sets how
 * many MB of weights it keeps in flight toward L2 (default 4); GPT2_ENGINE_FUSED_TRACE=1
 * (or =PATH) times its phases (CTA 0's view) and prints their means to stderr (appends
 * them to PATH) when the engine closes. */
#include "backend_cuda.h"
#include "config.h"
#include "kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct FusedDecode {
    int mode;                  /* FUSED_MODE_PERSISTENT: first member (the dispatch's tag) */
    FusedDecodeArgs args;      /* the step-independent part; a step fills in its pointers */
    FusedDecodeLayer *layers;  /* device (n_layer) */
    void *work;                /* device: 2 * work_floats fp32, then the 2 sync words */
    unsigned long long *trace; /* device, FUSED_TRACE_SLOTS counters, or NULL */
    char trace_to[256];        /* GPT2_ENGINE_FUSED_TRACE: "1" (stderr) or a file to append to */
    int grid;
    size_t smem;
} FusedDecode;

int fused_act_code(int activation)
{
    return activation == ACT_GELU_ERF ? ACT_CODE_GELU_ERF
           : activation == ACT_RELU   ? ACT_CODE_RELU
                                      : ACT_CODE_GELU_TANH;
}

const char *fused_weights_misaligned(const FusedDecodeModel *m)
{
    const void *p[4] = {m->wte, m->wpe, m->ln_f_w, m->ln_f_b};
    for (int i = 0; i < 4; i++)
        if ((uintptr_t)p[i] & 15) return "a weight is not 16-byte aligned";
    for (int i = 0; i < m->n_layer * 12; i++)
        if ((uintptr_t)m->layer_weights[i] & 15) return "a weight is not 16-byte aligned";
    return NULL;
}

/* Why the kernel can't serve this model on this GPU, or NULL. */
static const char *unfit(const Backend *b, const FusedDecodeModel *m, int D, int grid,
                         char *buf, size_t n)
{
    const int C = m->n_embd, H = m->n_head;
    if (b->dtype != DTYPE_F16 && b->dtype != DTYPE_BF16)
        return "float32 models run the per-layer kernels";
    if (b->compute_capability < 90)
        return "needs compute capability 9.0 (it is built and was measured only for Hopper)";
    if (C % 64 || C > 2048 || D * H != C || D % 32 || D > 128) {
        snprintf(buf, n, "n_embd=%d, head size %d: needs n_embd %% 64 == 0, <= 2048 and a head "
                 "size that is a multiple of 32, <= 128", C, D);
        return buf;
    }
    if (4 * C / 64 > grid || H > grid) {
        snprintf(buf, n, "n_embd=%d needs %d multiprocessors, the GPU has %d", C,
                 GPT2_MAX(4 * C / 64, H), grid);
        return buf;
    }
    return fused_weights_misaligned(m);
}

static void persistent_destroy(Backend *b, FusedDecode *f);

static Status persistent_create(Backend *b, const FusedDecodeModel *m, void **state, char *why,
                                size_t why_len, Error *err)
{
    CudaImpl *im = cuda_impl(b);
    FusedDecode *f = NULL;
    FusedDecodeLayer *host = NULL;
    *state = NULL;
    char buf[160];
    const int C = m->n_embd, H = m->n_head, D = H ? C / H : 0;
    const char *no = unfit(b, m, D, im->num_sms, buf, sizeof buf);
    const size_t smem = fused_decode_smem_bytes(C, D);
    if (!no && fused_decode_blocks_per_sm((int)b->dtype, C, smem) < 1)
        no = "the kernel does not fit on one multiprocessor";
    if (no) {
        snprintf(why, why_len, "off: %s", no);
        return GPT2_OK;
    }
    CUDA_CHECK(cuda_use_device(b));
    f = calloc(1, sizeof *f);
    host = calloc((size_t)m->n_layer, sizeof *host);
    if (!f || !host) {
        error_set(err, GPT2_ERR_NOMEM, "out of host memory");
        goto fail;
    }
    f->mode = FUSED_MODE_PERSISTENT;
    f->grid = im->num_sms;
    f->smem = smem;
    const int nsplit = GPT2_MAX(1, GPT2_MIN(f->grid / H, 32));
    const size_t wf = fused_decode_work_floats(C, H, D, nsplit, f->grid);
    for (int l = 0; l < m->n_layer; l++) {
        const void *const *w = m->layer_weights + 12 * l;
        host[l] = (FusedDecodeLayer){w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8],
                                     w[9], w[10], w[11], m->key_cache[l], m->value_cache[l]};
    }
    CUDA_CHECK(cudaMalloc((void **)&f->layers, sizeof *host * (size_t)m->n_layer));
    const size_t work_bytes = 2 * wf * sizeof(float) + 2 * sizeof(unsigned);   /* + sync */
    CUDA_CHECK(cudaMalloc(&f->work, work_bytes));
    CUDA_CHECK(cudaMemcpy(f->layers, host, sizeof *host * (size_t)m->n_layer,
                          cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemset(f->work, 0, work_bytes));
    long long lookahead = (long long)4 << 20;   /* 0, 4, 12 and 25 MB measured: 4 best */
    const char *la = getenv("GPT2_ENGINE_FUSED_LOOKAHEAD_MB");
    if (la && *la) lookahead = (long long)(atof(la) * 1048576.0);
    f->args = (FusedDecodeArgs){
        .layers = f->layers, .wte = m->wte, .wpe = m->wpe, .lnf_w = m->ln_f_w,
        .lnf_b = m->ln_f_b, .work = (float *)f->work, .work_floats = (int)wf,
        .sync = (unsigned *)((float *)f->work + 2 * wf), .n_layer = m->n_layer, .C = C, .H = H,
        .D = D, .V = m->vocab_size, .block_size = m->block_size,
        .act = fused_act_code(m->activation), .nsplit = nsplit, .eps = m->eps, .scale = m->scale,
        .lookahead = lookahead,
    };
    const char *tr = getenv("GPT2_ENGINE_FUSED_TRACE");
    if (tr && *tr && strcmp(tr, "0") != 0) {
        CUDA_CHECK(cudaMalloc((void **)&f->trace, FUSED_TRACE_SLOTS * sizeof *f->trace));
        CUDA_CHECK(cudaMemset(f->trace, 0, FUSED_TRACE_SLOTS * sizeof *f->trace));
        f->args.trace = f->trace;
        snprintf(f->trace_to, sizeof f->trace_to, "%s", tr);
    }
    free(host);
    snprintf(why, why_len, "on: one kernel per batch-1 step (%d CTAs, %d key splits, %.0f MB "
             "L2 lookahead)", f->grid, nsplit, (double)lookahead / 1048576.0);
    *state = f;
    return GPT2_OK;
fail:
    free(host);
    persistent_destroy(b, f);
    return err->code;
}

static Status persistent_step(Backend *b, FusedDecode *f, const FusedDecodeStep *s, Error *err)
{
    CudaImpl *im = cuda_impl(b);
    FusedDecodeArgs a = f->args;
    a.input_ids = s->input_ids;
    a.positions = s->positions;
    a.slot_mapping = s->slot_mapping;
    a.seq_lens = s->seq_lens;
    a.block_tables = s->block_tables;
    a.logits = s->logits;
    CUDA_CHECK(cuda_use_device(b));
    CUDA_CHECK(fused_decode_cuda(&a, (int)b->dtype, f->grid, f->smem, im->stream));
    return GPT2_OK;
fail:
    return err->code;
}

/* The means of the kernel's phase times (trace_mark in decode_fused.cu), per layer. */
static void print_trace(const FusedDecode *f)
{
    unsigned long long tr[FUSED_TRACE_SLOTS];
    if (cudaMemcpy(tr, f->trace, sizeof tr, cudaMemcpyDeviceToHost) != cudaSuccess ||
        !tr[FUSED_TRACE_SLOTS - 1])
        return;
    const double n = (double)tr[FUSED_TRACE_SLOTS - 1], L = f->args.n_layer;
    FILE *fp = strcmp(f->trace_to, "1") != 0 ? fopen(f->trace_to, "a") : NULL;
    FILE *o = fp ? fp : stderr;
    static const char *names[5] = {"A qkv", "B attention", "C0 proj", "C fc", "D mlp proj"};
    fprintf(o, "fused decode trace (C=%d, %d layers, %llu launches), us per layer: "
            "input / compute / to the end of the next barrier\n", f->args.C, f->args.n_layer,
            tr[FUSED_TRACE_SLOTS - 1]);
    for (int k = 0; k < 5; k++)
        fprintf(o, "  %-12s %6.2f %6.2f %6.2f\n", names[k], tr[3 * k] / n / L / 1e3,
                tr[3 * k + 1] / n / L / 1e3, tr[3 * k + 2] / n / L / 1e3);
    fprintf(o, "  final residual + ln_f %.2f us, lm_head %.2f us per launch\n",
            tr[15] / n / 1e3, tr[16] / n / 1e3);
    if (fp) fclose(fp);
}

static void persistent_destroy(Backend *b, FusedDecode *f)
{
    if (!f) return;
    if (cuda_use_device(b) == cudaSuccess) {
        if (f->trace) print_trace(f);
        cudaFree(f->trace);
        cudaFree(f->layers);
        cudaFree(f->work);
    }
    cudaGetLastError();
    free(f);
}

/* ---- the dispatch (backend.h's fused_decode_*) ---- */

Status cuda_fused_decode_create(Backend *b, const FusedDecodeModel *m, void **state, char *why,
                                size_t why_len, Error *err)
{
    *state = NULL;
    const char *env = getenv("GPT2_ENGINE_FUSED_DECODE");
    if (env && strcmp(env, "0") == 0) {
        snprintf(why, why_len, "off: GPT2_ENGINE_FUSED_DECODE=0");
        return GPT2_OK;
    }
    if (env && (strcmp(env, "1") == 0 || strcmp(env, "persistent") == 0))
        return persistent_create(b, m, state, why, why_len, err);
    if (env && *env && strcmp(env, "layers") != 0) {
        snprintf(why, why_len, "off: GPT2_ENGINE_FUSED_DECODE=%.40s is none of 0, 1, "
                 "persistent, layers", env);
        return GPT2_OK;
    }
    return cuda_layer_decode_create(b, m, env && strcmp(env, "layers") == 0, state, why, why_len,
                                    err);
}

Status cuda_fused_decode(Backend *b, void *state, const FusedDecodeStep *s, Error *err)
{
    if (*(const int *)state == FUSED_MODE_LAYERS) return cuda_layer_decode(b, state, s, err);
    return persistent_step(b, state, s, err);
}

void cuda_fused_decode_destroy(Backend *b, void *state)
{
    if (!state) return;
    if (*(const int *)state == FUSED_MODE_LAYERS) cuda_layer_decode_destroy(b, state);
    else persistent_destroy(b, state);
}
