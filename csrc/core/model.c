/* model.c — the GPT-2 forward pass (see model.h), backend-agnostic. */
#include "model.h"

#define CHECK(call) do { if ((call) != GPT2_OK) goto fail; } while (0)

Status model_forward(const ModelContext *m, const ForwardBuffers *buf, const ForwardBatch *batch,
                     Error *err)
{
    const GPT2Config *cfg = m->config;
    const GPT2Weights *w = m->weights;
    Backend *b = m->backend;
    const BackendOps *op = b->ops;
    const int T = batch->num_tokens, R = batch->num_logits;
    const int C = cfg->n_embd, H = cfg->n_head, D = cfg->head_size;
    const float eps = cfg->layer_norm_epsilon;

    if (m->fused_decode && T == 1 && R == 1) {
        const FusedDecodeStep s = {batch->input_ids, batch->positions, batch->slot_mapping,
                                   batch->attn.seq_lens, batch->attn.block_tables, buf->logits};
        return op->fused_decode(b, m->fused_decode, &s, err);
    }

    CHECK(op->embed(b, buf->residual, batch->input_ids, batch->positions, w->wte, w->wpe, T, C,
                    err));
    for (int l = 0; l < cfg->n_layer; l++) {
        const GPT2LayerWeights *lw = &w->layers[l];
        /* qkv rows are [q | k | v], each H*D wide; k and v also go to the cache */
        const CacheWrite cw = {m->key_cache[l], m->value_cache[l], batch->slot_mapping, H, D,
                               m->block_size};
        CHECK(op->layernorm_matmul(b, buf->qkv, buf->residual, lw->ln_1_w, lw->ln_1_b, eps,
                                   buf->ln, lw->c_attn_w, lw->c_attn_b, T, C, 3 * C, 0,
                                   cfg->activation, &cw, err));
        CHECK(m->attn->forward(m->attn_state, b, buf->attn, buf->qkv, 3 * C, m->key_cache[l],
                               m->value_cache[l], &batch->attn, err));
        CHECK(op->matmul(b, buf->residual, buf->attn, lw->attn_proj_w, lw->attn_proj_b, T, C, C,
                         MATMUL_ACCUMULATE, cfg->activation, err));
        CHECK(op->layernorm_matmul(b, buf->fc, buf->residual, lw->ln_2_w, lw->ln_2_b, eps,
                                   buf->ln, lw->c_fc_w, lw->c_fc_b, T, C, 4 * C, MATMUL_GELU,
                                   cfg->activation, NULL, err));
        CHECK(op->matmul(b, buf->residual, buf->fc, lw->mlp_proj_w, lw->mlp_proj_b, T, 4 * C, C,
                         MATMUL_ACCUMULATE, cfg->activation, err));
    }
    if (R == 0) return GPT2_OK;
    /* only the rows whose logits are wanted go through ln_f and the lm_head */
    CHECK(op->gather_rows(b, buf->ln, buf->residual, batch->logits_indices, R, C, err));
    CHECK(op->layernorm_matmul(b, buf->logits, buf->ln, w->ln_f_w, w->ln_f_b, eps, buf->hidden,
                               w->wte, NULL, R, C, m->logits_ld, MATMUL_W_NK, cfg->activation,
                               NULL, err));
    return GPT2_OK;
fail:
    return err->code;
}
