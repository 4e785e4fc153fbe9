/* model.h — the GPT-2 forward pass over one packed batch, written once against
 * the backend and attention-backend interfaces (no device code here).
 *
 *   residual = wte[ids] + wpe[pos]
 *   per layer: ln = LN1(residual); qkv = ln @ c_attn + b; cache K,V (slot mapping);
 *              attn = Attention(q, paged K/V); residual += attn @ proj + b;
 *              ln = LN2(residual); fc = gelu(ln @ c_fc + b); residual += fc @ proj + b
 *   hidden = LN_f(residual[logits_indices]); logits = hidden @ wte^T (tied lm_head)
 *
 * A step of one token that wants its logits (batch-1 decode) runs all of that as
 * the backend's fused_decode when the runner prepared one (m->fused_decode).
 */
#ifndef GPT2_MODEL_H
#define GPT2_MODEL_H

#include "attention.h"
#include "checkpoint.h"

typedef struct ForwardBuffers {
    void *residual;   /* (T, C) */
    void *ln;         /* (T, C) */
    void *qkv;        /* (T, 3C) */
    void *attn;       /* (T, C) */
    void *fc;         /* (T, 4C) */
    void *hidden;     /* (R, C) */
    void *logits;     /* (R, logits_ld) compute dtype: what the sampler reads */
    float *logits_f32;/* (R, V) fp32 copy for the host (runner_logits_to_host); may alias logits */
} ForwardBuffers;

typedef struct ForwardBatch {
    int num_tokens;                 /* T */
    int num_logits;                 /* R */
    const int32_t *input_ids;       /* (T) device */
    const int32_t *positions;       /* (T) device */
    const int32_t *slot_mapping;    /* (T) device */
    const int32_t *logits_indices;  /* (R) device */
    AttentionMetadata attn;         /* the rest of the batch, for attention */
} ForwardBatch;

typedef struct ModelContext {
    const GPT2Config *config;
    const GPT2Weights *weights;     /* device pointers */
    Backend *backend;
    const AttentionBackend *attn;
    void *attn_state;
    void *const *key_cache;         /* (L) each (num_blocks, H, block_size, D) */
    void *const *value_cache;
    int block_size;
    int logits_ld;                  /* lm_head output row length: V, or V rounded up to 8 so
                                     * every row is 16-byte aligned for the GEMM (the extra
                                     * rows of wte^T read whatever follows wte in the weight
                                     * allocation; their logits are dropped by to_float) */
    void *fused_decode;             /* the backend's one-kernel T = 1 step, or NULL */
} ModelContext;

Status model_forward(const ModelContext *m, const ForwardBuffers *buf, const ForwardBatch *batch,
                     Error *err);

#endif
