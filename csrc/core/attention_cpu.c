/* attention_cpu.c — the "CPU" attention backend: causal attention over the
 * paged KV cache with an online softmax, float32. One pass over the context per
 * (query token, head); K/V rows are found through the block table. */
#include "attention.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct CpuAttnState {
    int H, D, block_size;
    float scale;
    float *acc;     /* (D) running weighted sum of V */
} CpuAttnState;

static Status cpu_attn_check(const AttentionConfig *cfg, Error *err)
{
    if (strcmp(cfg->device, "cpu") != 0)
        return error_set(err, GPT2_ERR_VALUE, "the CPU attention backend needs device='cpu' "
                         "(the model runs on '%s')", cfg->device);
    if (cfg->dtype != DTYPE_F32)
        return error_set(err, GPT2_ERR_VALUE, "the CPU attention backend computes in float32 "
                         "only (model dtype %s)", dtype_name(cfg->dtype));
    return GPT2_OK;
}

static Status cpu_attn_create(void **state, Backend *b, const AttentionConfig *cfg, Error *err)
{
    (void)b;
    CpuAttnState *s = calloc(1, sizeof *s);
    if (s) s->acc = calloc((size_t)cfg->head_size, sizeof(float));
    if (!s || !s->acc) {
        if (s) free(s);
        return error_set(err, GPT2_ERR_NOMEM, "out of memory creating CPU attention state");
    }
    s->H = cfg->num_heads;
    s->D = cfg->head_size;
    s->block_size = cfg->block_size;
    s->scale = cfg->scale;
    *state = s;
    return GPT2_OK;
}

static void cpu_attn_destroy(void *state, Backend *b)
{
    (void)b;
    CpuAttnState *s = state;
    if (!s) return;
    free(s->acc);
    free(s);
}

/* out(H*D) for one query row q(H*D) at absolute position pos of a sequence. */
static void attend_one(const CpuAttnState *s, float *acc, float *out, const float *q,
                       const float *kc, const float *vc, const int32_t *block_table, int pos)
{
    const int H = s->H, D = s->D, bs = s->block_size;
    for (int h = 0; h < H; h++) {
        const float *qh = q + (size_t)h * D;
        float m = -INFINITY, l = 0.0f;
        memset(acc, 0, (size_t)D * sizeof(float));
        for (int j = 0; j <= pos; j++) {
            size_t blk = (size_t)block_table[j / bs];
            size_t row = ((blk * H + h) * bs + (size_t)(j % bs)) * D;
            const float *kr = kc + row, *vr = vc + row;
            float dot = 0.0f;
            for (int d = 0; d < D; d++) dot += qh[d] * kr[d];
            dot *= s->scale;
            if (dot > m) {                       /* rescale what we have so far */
                float c = expf(m - dot);
                l *= c;
                for (int d = 0; d < D; d++) acc[d] *= c;
                m = dot;
            }
            float p = expf(dot - m);
            l += p;
            for (int d = 0; d < D; d++) acc[d] += p * vr[d];
        }
        float inv = 1.0f / l;
        for (int d = 0; d < D; d++) out[(size_t)h * D + d] = acc[d] * inv;
    }
}

static Status cpu_attn_forward(void *state, Backend *b, void *out, const void *q, int q_stride,
                               const void *k_cache, const void *v_cache,
                               const AttentionMetadata *md, Error *err)
{
    (void)b;
    CpuAttnState *s = state;
    const int HD = s->H * s->D;
    for (int seq = 0; seq < md->num_seqs; seq++) {
        int q0 = md->query_start_loc[seq], q1 = md->query_start_loc[seq + 1];
        int ctx = md->seq_lens[seq], qlen = q1 - q0;
        if (qlen < 0 || qlen > ctx)
            return error_set(err, GPT2_ERR_INTERNAL, "attention: sequence %d has %d query "
                             "tokens but context length %d", seq, qlen, ctx);
        const int32_t *bt = md->block_tables + (size_t)seq * md->block_table_stride;
        for (int i = 0; i < qlen; i++) {
            int t = q0 + i;
            attend_one(s, s->acc, (float *)out + (size_t)t * HD,
                       (const float *)q + (size_t)t * q_stride, k_cache, v_cache, bt,
                       ctx - qlen + i);
        }
    }
    return GPT2_OK;
}

const AttentionBackend attention_backend_cpu = {
    .name = "CPU",
    .check = cpu_attn_check,
    .create = cpu_attn_create,
    .destroy = cpu_attn_destroy,
    .forward = cpu_attn_forward,
};
