/* model_runner.c — the device side of an engine: loads weights onto the
 * backend, sizes the KV cache and the activation buffers once, uploads each
 * step's inputs in one copy, runs model_forward (or replays a CUDA graph for a
 * decode-only batch), and hands logits to the sampler. */
#include "model_runner.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call) do { if ((call) != GPT2_OK) goto fail; } while (0)

/* Where each int32 input lives inside dev_ints / host_ints, for a batch of
 * T tokens, S sequences, block-table stride B, R logits rows and F fed tokens
 * (StepInput.num_feeds; last, so that they move nothing else). A graph for
 * bucket b always uses (b, b, max_blocks_per_seq, b, *), so its addresses are fixed. */
typedef struct IntLayout {
    size_t ids, pos, slot, qsl, seq_lens, bt, logits_idx, feed_idx, feed_row, total;
} IntLayout;

static IntLayout int_layout(int T, int S, int B, int R, int F)
{
    IntLayout L;
    size_t o = 0;
    L.ids = o; o += (size_t)T;
    L.pos = o; o += (size_t)T;
    L.slot = o; o += (size_t)T;
    L.qsl = o; o += (size_t)S + 1;
    L.seq_lens = o; o += (size_t)S;
    L.bt = o; o += (size_t)S * (size_t)B;
    L.logits_idx = o; o += (size_t)R;
    L.feed_idx = o; o += (size_t)F;
    L.feed_row = o; o += (size_t)F;
    L.total = o;
    return L;
}

static size_t align_up(size_t x) { return (x + 255) & ~(size_t)255; }

/* ---- weights ---- */

static Status load_weights(ModelRunner *r, Error *err)
{
    Backend *b = r->backend;
    if (strcmp(b->name, "cpu") == 0)   /* compute straight out of the mmap when we can */
        return checkpoint_load_weights(r->checkpoint, b->dtype, 1, &r->weights, err);

    GPT2Weights hw = {0};
    CHECK(checkpoint_load_weights(r->checkpoint, b->dtype, 0, &hw, err));
    CHECK(b->ops->alloc(b, &r->weights_device, hw.nbytes, err));
    CHECK(b->ops->copy_h2d(b, r->weights_device, hw.storage, hw.nbytes, err));
    CHECK(b->ops->synchronize(b, err));
    {
        const int L = r->config.n_layer;
        char *dev = r->weights_device, *host = hw.storage;
#define XLATE(p) ((void *)(dev + ((char *)(p) - host)))
        r->weights = hw;
        r->weights.storage = NULL;
        r->weights.layers = calloc((size_t)L, sizeof(GPT2LayerWeights));
        if (!r->weights.layers) {
            error_set(err, GPT2_ERR_NOMEM, "out of memory");
            goto fail;
        }
        r->weights.wte = XLATE(hw.wte);
        r->weights.wpe = XLATE(hw.wpe);
        r->weights.ln_f_w = XLATE(hw.ln_f_w);
        r->weights.ln_f_b = XLATE(hw.ln_f_b);
        for (int l = 0; l < L; l++) {
            const GPT2LayerWeights *h = &hw.layers[l];
            GPT2LayerWeights *d = &r->weights.layers[l];
            d->ln_1_w = XLATE(h->ln_1_w); d->ln_1_b = XLATE(h->ln_1_b);
            d->c_attn_w = XLATE(h->c_attn_w); d->c_attn_b = XLATE(h->c_attn_b);
            d->attn_proj_w = XLATE(h->attn_proj_w); d->attn_proj_b = XLATE(h->attn_proj_b);
            d->ln_2_w = XLATE(h->ln_2_w); d->ln_2_b = XLATE(h->ln_2_b);
            d->c_fc_w = XLATE(h->c_fc_w); d->c_fc_b = XLATE(h->c_fc_b);
            d->mlp_proj_w = XLATE(h->mlp_proj_w); d->mlp_proj_b = XLATE(h->mlp_proj_b);
        }
#undef XLATE
    }
    gpt2_weights_free(&hw);
    checkpoint_close(r->checkpoint);   /* the device copy is all we need */
    r->checkpoint = NULL;
    return GPT2_OK;
fail:
    gpt2_weights_free(&hw);
    return err->code;
}

/* ---- buffers ---- */

static Status alloc_activations(ModelRunner *r, Error *err)
{
    Backend *b = r->backend;
    const size_t ds = dtype_size(b->dtype);
    const size_t T = (size_t)r->rc.max_num_batched_tokens, R = (size_t)r->max_logits_rows;
    const size_t C = (size_t)r->config.n_embd, V = (size_t)r->config.vocab_size;
    const size_t LD = (size_t)r->logits_ld;
    const int alias = b->dtype == DTYPE_F32 && LD == V;   /* fp32 logits are the output itself */
    size_t sizes[8] = {T * C * ds, T * C * ds, 3 * T * C * ds, T * C * ds, 4 * T * C * ds,
                       R * C * ds, R * LD * ds, alias ? 0 : R * V * 4};
    size_t total = 0;
    for (int i = 0; i < 8; i++) total += align_up(sizes[i]);
    CHECK(b->ops->alloc(b, &r->act_storage, total, err));
    {
        char *p = r->act_storage;
        void **slots[8] = {&r->act.residual, &r->act.ln, &r->act.qkv, &r->act.attn, &r->act.fc,
                           &r->act.hidden, &r->act.logits, (void **)&r->act.logits_f32};
        for (int i = 0; i < 8; i++) { *slots[i] = p; p += align_up(sizes[i]); }
        if (alias) r->act.logits_f32 = r->act.logits;
    }
    IntLayout L = int_layout((int)T, r->rc.max_num_seqs, r->max_blocks_per_seq, (int)R,
                             r->rc.max_num_seqs);
    r->ints_capacity = L.total;
    CHECK(b->ops->alloc(b, (void **)&r->dev_ints, L.total * sizeof(int32_t), err));
    for (int i = 0; i < 2; i++)
        CHECK(b->ops->alloc_host(b, (void **)&r->host_bufs[i], L.total * sizeof(int32_t), err));
    r->host_ints = r->host_bufs[0];
    return GPT2_OK;
fail:
    return err->code;
}

static Status alloc_kv_cache(ModelRunner *r, Error *err)
{
    Backend *b = r->backend;
    const GPT2Config *c = &r->config;
    const size_t block_bytes = (size_t)c->n_head * r->rc.block_size * c->head_size *
                               dtype_size(b->dtype);        /* one layer, K or V */
    const size_t per_block = 2 * (size_t)c->n_layer * block_bytes;
    const int needed = (r->rc.max_model_len + r->rc.block_size - 1) / r->rc.block_size;
    long long blocks = r->rc.num_kv_blocks;
    if (blocks <= 0) {
        size_t budget;
        if (strcmp(b->name, "cpu") == 0) {
            budget = r->rc.cpu_kv_cache_bytes;
        } else {
            size_t free_b = 0, total_b = 0;
            CHECK(b->ops->mem_info(b, &free_b, &total_b, err));
            double allowed = (double)total_b * r->rc.gpu_memory_utilization;
            double used = (double)(total_b - free_b);
            double reserve = 512.0 * 1024 * 1024;     /* graphs, cuBLAS, sampler staging */
            double room = allowed - used - reserve;
            budget = room > 0 ? (size_t)room : 0;
        }
        blocks = (long long)(budget / per_block);
        if (blocks < needed)
            return error_set(err, GPT2_ERR_VALUE, "the KV cache budget (%.1f MiB) holds %lld "
                             "blocks but one sequence of max_model_len=%d needs %d; raise "
                             "gpu_memory_utilization, lower max_model_len or set num_kv_blocks",
                             budget / 1048576.0, blocks, r->rc.max_model_len, needed);
        if (blocks > (long long)INT32_MAX / r->rc.block_size)
            blocks = (long long)INT32_MAX / r->rc.block_size;
    }
    r->num_kv_blocks = (int)blocks;
    r->kv_bytes = per_block * (size_t)blocks;
    r->key_cache = calloc((size_t)c->n_layer, sizeof(void *));
    r->value_cache = calloc((size_t)c->n_layer, sizeof(void *));
    if (!r->key_cache || !r->value_cache)
        return error_set(err, GPT2_ERR_NOMEM, "out of host memory");
    if (b->ops->alloc(b, &r->kv_storage, r->kv_bytes, err) != GPT2_OK)
        return error_set(err, GPT2_ERR_NOMEM, "cannot allocate the KV cache: %d blocks, %.1f "
                         "MiB (%s); set num_kv_blocks lower", r->num_kv_blocks,
                         r->kv_bytes / 1048576.0, err->msg);
    if (strcmp(b->name, "cpu") != 0)    /* finite values even where padding reads */
        CHECK(b->ops->memset_zero(b, r->kv_storage, r->kv_bytes, err));
    for (int l = 0; l < c->n_layer; l++) {
        char *base = (char *)r->kv_storage + (size_t)l * 2 * block_bytes * (size_t)blocks;
        r->key_cache[l] = base;
        r->value_cache[l] = base + block_bytes * (size_t)blocks;
    }
    return GPT2_OK;
fail:
    return err->code;
}

/* ---- one step ---- */

/* Packs `in` into host_ints following L (padding up to T/S/R of the layout when
 * the layout is a graph bucket) and builds the ForwardBatch over dev_ints. */
static void pack_step(ModelRunner *r, const StepInput *in, const IntLayout *L, int T, int S,
                      int B, int R, ForwardBatch *fb)
{
    int32_t *h = r->host_ints;
    memcpy(h + L->ids, in->input_ids, (size_t)in->num_tokens * 4);
    memcpy(h + L->pos, in->positions, (size_t)in->num_tokens * 4);
    memcpy(h + L->slot, in->slot_mapping, (size_t)in->num_tokens * 4);
    memcpy(h + L->qsl, in->query_start_loc, ((size_t)in->num_seqs + 1) * 4);
    memcpy(h + L->seq_lens, in->seq_lens, (size_t)in->num_seqs * 4);
    for (int s = 0; s < in->num_seqs; s++)
        memcpy(h + L->bt + (size_t)s * B, in->block_tables + (size_t)s * in->block_table_stride,
               (size_t)in->block_table_stride * 4);
    memcpy(h + L->logits_idx, in->logits_indices, (size_t)in->num_logits * 4);
    if (in->num_feeds > 0) {
        memcpy(h + L->feed_idx, in->feed_index, (size_t)in->num_feeds * 4);
        memcpy(h + L->feed_row, in->feed_row, (size_t)in->num_feeds * 4);
    }
    /* graph padding: extra one-token sequences that write nothing (slot -1) */
    for (int t = in->num_tokens; t < T; t++) h[L->ids + t] = 0, h[L->pos + t] = 0, h[L->slot + t] = -1;
    for (int s = in->num_seqs; s < S; s++) {
        h[L->qsl + s + 1] = h[L->qsl + s] + 1;
        h[L->seq_lens + s] = 1;
        memset(h + L->bt + (size_t)s * B, 0, (size_t)B * 4);
    }
    for (int i = in->num_logits; i < R; i++) h[L->logits_idx + i] = i;

    int max_q = 0, max_ctx = 0;
    for (int s = 0; s < in->num_seqs; s++) {
        int q = in->query_start_loc[s + 1] - in->query_start_loc[s];
        if (q > max_q) max_q = q;
        if (in->seq_lens[s] > max_ctx) max_ctx = in->seq_lens[s];
    }
    const int32_t *d = r->dev_ints;
    *fb = (ForwardBatch){
        .num_tokens = T, .num_logits = R,
        .input_ids = d + L->ids, .positions = d + L->pos, .slot_mapping = d + L->slot,
        .logits_indices = d + L->logits_idx,
        .attn = {
            .num_seqs = S, .num_tokens = T,
            .num_decodes = in->num_decodes + (S - in->num_seqs),
            .max_query_len = max_q > 0 ? max_q : 1, .max_seq_len = max_ctx > 0 ? max_ctx : 1,
            .block_table_stride = B,
            .query_start_loc = d + L->qsl, .seq_lens = d + L->seq_lens, .block_tables = d + L->bt,
            .host_query_start_loc = h + L->qsl, .host_seq_lens = h + L->seq_lens,
            .graph_capture = 0,
        },
    };
}

static ModelContext model_context(const ModelRunner *r)
{
    return (ModelContext){
        .config = &r->config, .weights = &r->weights, .backend = r->backend, .attn = r->attn,
        .attn_state = r->attn_state, .key_cache = r->key_cache, .value_cache = r->value_cache,
        .block_size = r->rc.block_size, .logits_ld = r->logits_ld,
        .fused_decode = r->fused_decode,
    };
}

/* The bucket serving a decode-only batch of n sequences, or -1 (not decode-only,
 * or no buckets on this backend). */
static int decode_bucket(const ModelRunner *r, const StepInput *in)
{
    if (r->num_buckets == 0 || in->num_decodes != in->num_seqs ||
        in->num_tokens != in->num_seqs || in->num_logits != in->num_seqs ||
        in->block_table_stride != r->max_blocks_per_seq)
        return -1;
    for (int i = 0; i < in->num_logits; i++)
        if (in->logits_indices[i] != i) return -1;
    for (int g = 0; g < r->num_buckets; g++)
        if (r->bucket_sizes[g] >= in->num_seqs) return g;
    return -1;
}

static Status validate_step(const ModelRunner *r, const StepInput *in, Error *err)
{
    if (in->num_tokens < 1 || in->num_tokens > r->rc.max_num_batched_tokens)
        return error_set(err, GPT2_ERR_INTERNAL, "step has %d tokens (budget %d)",
                         in->num_tokens, r->rc.max_num_batched_tokens);
    if (in->num_seqs < 1 || in->num_seqs > r->rc.max_num_seqs)
        return error_set(err, GPT2_ERR_INTERNAL, "step has %d sequences (max_num_seqs %d)",
                         in->num_seqs, r->rc.max_num_seqs);
    if (in->num_logits < 0 || in->num_logits > r->max_logits_rows)
        return error_set(err, GPT2_ERR_INTERNAL, "step wants %d logits rows (max %d)",
                         in->num_logits, r->max_logits_rows);
    if (in->block_table_stride < 1 || in->block_table_stride > r->max_blocks_per_seq)
        return error_set(err, GPT2_ERR_INTERNAL, "block table stride %d (max %d)",
                         in->block_table_stride, r->max_blocks_per_seq);
    if (in->query_start_loc[0] != 0 || in->query_start_loc[in->num_seqs] != in->num_tokens)
        return error_set(err, GPT2_ERR_INTERNAL, "query_start_loc does not cover the tokens");
    const int V = r->config.vocab_size, P = r->config.n_positions;
    for (int t = 0; t < in->num_tokens; t++) {
        if (in->input_ids[t] < 0 || in->input_ids[t] >= V)
            return error_set(err, GPT2_ERR_VALUE, "token id %d out of range [0, %d)",
                             in->input_ids[t], V);
        if (in->positions[t] < 0 || in->positions[t] >= P)
            return error_set(err, GPT2_ERR_VALUE, "position %d out of range [0, %d)",
                             in->positions[t], P);
        if (in->slot_mapping[t] >= r->num_kv_blocks * r->rc.block_size)
            return error_set(err, GPT2_ERR_INTERNAL, "slot %d past the KV cache",
                             in->slot_mapping[t]);
    }
    for (int i = 0; i < in->num_logits; i++)
        if (in->logits_indices[i] < 0 || in->logits_indices[i] >= in->num_tokens)
            return error_set(err, GPT2_ERR_INTERNAL, "logits index %d out of range",
                             in->logits_indices[i]);
    if (in->num_feeds < 0 || in->num_feeds > in->num_tokens ||
        in->num_feeds > r->rc.max_num_seqs)
        return error_set(err, GPT2_ERR_INTERNAL, "step feeds %d tokens", in->num_feeds);
    for (int i = 0; i < in->num_feeds; i++)
        if (in->feed_index[i] < 0 || in->feed_index[i] >= in->num_tokens || in->feed_row[i] < 0)
            return error_set(err, GPT2_ERR_INTERNAL, "fed token %d -> %d out of range",
                             in->feed_row[i], in->feed_index[i]);
    return GPT2_OK;
}

Status runner_prepare(ModelRunner *r, const StepInput *in, Error *err)
{
    r->has_staged = 0;
    CHECK(validate_step(r, in, err));
    /* host_ints is one of two staging buffers that launches alternate between:
     * the upload out of it two launches ago may still be queued */
    if (r->host_fenced[r->host_buf]) {
        CHECK(r->backend->ops->fence_wait(r->backend, r->host_buf, err));
        r->host_fenced[r->host_buf] = 0;
    }
    int g = decode_bucket(r, in);
    int T = in->num_tokens, S = in->num_seqs, B = in->block_table_stride, R = in->num_logits;
    if (g >= 0) T = S = R = r->bucket_sizes[g], B = r->max_blocks_per_seq;
    IntLayout L = int_layout(T, S, B, R, in->num_feeds);
    pack_step(r, in, &L, T, S, B, R, &r->staged);
    r->staged_feeds = in->num_feeds;
    r->staged_feed_idx = L.feed_idx;
    r->staged_feed_row = L.feed_row;
    if (g >= 0) {              /* the launch shapes the graph was captured with */
        r->staged.attn.graph_capture = 1;
        r->staged.attn.max_seq_len = r->rc.max_model_len;
    }
    r->staged_graph = g;
    r->staged_ints = L.total;
    r->has_staged = 1;
    return GPT2_OK;
fail:
    return err->code;
}

Status runner_launch(ModelRunner *r, Error *err)
{
    Backend *b = r->backend;
    if (!r->has_staged)
        return error_set(err, GPT2_ERR_INTERNAL, "runner_launch without runner_prepare");
    r->has_staged = 0;
    int g = r->staged_graph;
    /* the ints, then the previous step's tokens straight from the device (the feed) */
    CHECK(b->ops->upload_ints(b, r->dev_ints, r->host_ints, (int)r->staged_ints,
                              (int)((const int32_t *)r->staged.input_ids - r->dev_ints),
                              (int)r->staged_feed_idx, (int)r->staged_feed_row, r->staged_feeds,
                              err));
    CHECK(b->ops->fence_record(b, r->host_buf, err));
    r->host_fenced[r->host_buf] = 1;
    r->host_buf ^= 1;
    r->host_ints = r->host_bufs[r->host_buf];
    if (g >= 0 && g < r->num_graphs) {
        CHECK(b->ops->graph_launch(b, g, err));
        r->num_graph_replays++;
    } else {
        ModelContext m = model_context(r);
        CHECK(model_forward(&m, &r->act, &r->staged, err));
        r->num_eager_steps++;
    }
    return GPT2_OK;
fail:
    return err->code;
}

Status runner_execute(ModelRunner *r, const StepInput *in, Error *err)
{
    Status s = runner_prepare(r, in, err);
    return s ? s : runner_launch(r, err);
}

/* ---- CUDA graphs ---- */

static void make_buckets(ModelRunner *r)
{
    int cap = GPT2_MIN(r->rc.max_num_seqs, GPT2_MIN(r->rc.max_num_batched_tokens,
                                                      r->max_logits_rows));
    static const int ladder[] = {1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256,
                                 320, 384, 448, 512, 640, 768, 896, 1024};
    int n = 0;
    for (size_t i = 0; i < sizeof ladder / sizeof ladder[0] && ladder[i] <= cap; i++)
        r->bucket_sizes[n++] = ladder[i];
    if (n < 32 && (n == 0 || r->bucket_sizes[n - 1] < cap)) r->bucket_sizes[n++] = cap;
    r->num_buckets = n;
}

static Status capture_graphs(ModelRunner *r, Error *err)
{
    Backend *b = r->backend;
    const int n = r->num_buckets;
    int max_b = r->bucket_sizes[n - 1];
    int32_t *zeros = calloc((size_t)max_b * (size_t)(r->max_blocks_per_seq + 1) + 1, 4);
    int32_t *iota = malloc(((size_t)max_b + 1) * 4), *ones = malloc((size_t)max_b * 4);
    int32_t *neg = malloc((size_t)max_b * 4);
    if (!zeros || !iota || !ones || !neg) {
        error_set(err, GPT2_ERR_NOMEM, "out of host memory");
        goto fail;
    }
    for (int i = 0; i <= max_b; i++) iota[i] = i;
    for (int i = 0; i < max_b; i++) ones[i] = 1, neg[i] = -1;
    ModelContext m = model_context(r);
    for (int g = 0; g < n; g++) {
        int bs = r->bucket_sizes[g];
        StepInput in = {
            .num_seqs = bs, .num_tokens = bs, .num_decodes = bs, .input_ids = zeros,
            .positions = zeros, .slot_mapping = neg, .query_start_loc = iota, .seq_lens = ones,
            .block_tables = zeros, .block_table_stride = r->max_blocks_per_seq,
            .num_logits = bs, .logits_indices = iota,
        };
        IntLayout L = int_layout(bs, bs, r->max_blocks_per_seq, bs, 0);
        ForwardBatch fb;
        pack_step(r, &in, &L, bs, bs, r->max_blocks_per_seq, bs, &fb);
        CHECK(b->ops->copy_h2d(b, r->dev_ints, r->host_ints, L.total * sizeof(int32_t), err));
        CHECK(model_forward(&m, &r->act, &fb, err));          /* warm-up: plans, handles */
        CHECK(b->ops->synchronize(b, err));
        fb.attn.graph_capture = 1;
        fb.attn.max_seq_len = r->rc.max_model_len;
        CHECK(b->ops->graph_capture_begin(b, err));
        Status st = model_forward(&m, &r->act, &fb, err);
        Error end_err = {0};
        Status st_end = b->ops->graph_capture_end(b, g, &end_err);
        if (st != GPT2_OK) goto fail;
        if (st_end != GPT2_OK) { *err = end_err; goto fail; }
    }
    r->num_graphs = n;
    free(zeros); free(iota); free(ones); free(neg);
    return GPT2_OK;
fail:
    free(zeros); free(iota); free(ones); free(neg);
    return error_prefix(err, "capturing CUDA graphs (enforce_eager=True skips them)");
}

/* One full-budget prefill at start-up (vLLM's profile run): max_num_batched_tokens
 * tokens in sequences of at most max_model_len, so the library plans of the
 * shapes a loaded engine runs most (cuBLASLt heuristics, kernel attributes) are
 * built now, not inside the user's first generate(). Nothing is written to the
 * KV cache (negative slots); the outputs are discarded. */
static Status warm_up_prefill(ModelRunner *r, Error *err)
{
    Backend *b = r->backend;
    const int per = r->rc.max_model_len;
    const int T = GPT2_MIN(r->rc.max_num_batched_tokens, r->rc.max_num_seqs * per);
    const int S = (T + per - 1) / per, B = r->max_blocks_per_seq;
    const int R = GPT2_MIN(S, r->max_logits_rows);
    int32_t *zeros = calloc((size_t)T + (size_t)S * B + 1, 4), *neg = malloc((size_t)T * 4);
    int32_t *qsl = malloc(((size_t)S + 1) * 4), *lens = malloc((size_t)S * 4);
    int32_t *last = malloc((size_t)S * 4);
    Status st = GPT2_OK;
    if (!zeros || !neg || !qsl || !lens || !last) {
        st = error_set(err, GPT2_ERR_NOMEM, "out of host memory");
        goto done;
    }
    for (int i = 0; i < T; i++) neg[i] = -1;
    qsl[0] = 0;
    for (int i = 0; i < S; i++) {
        lens[i] = GPT2_MIN(per, T - i * per);
        qsl[i + 1] = qsl[i] + lens[i];
        last[i] = qsl[i + 1] - 1;
    }
    StepInput in = {
        .num_seqs = S, .num_tokens = T, .num_decodes = 0, .input_ids = zeros,
        .positions = zeros, .slot_mapping = neg, .query_start_loc = qsl, .seq_lens = lens,
        .block_tables = zeros, .block_table_stride = B, .num_logits = R, .logits_indices = last,
    };
    IntLayout L = int_layout(T, S, B, R, 0);
    ForwardBatch fb;
    pack_step(r, &in, &L, T, S, B, R, &fb);
    ModelContext m = model_context(r);
    if ((st = b->ops->copy_h2d(b, r->dev_ints, r->host_ints, L.total * sizeof(int32_t), err)) ||
        (st = model_forward(&m, &r->act, &fb, err)) || (st = b->ops->synchronize(b, err)))
        error_prefix(err, "start-up warm-up forward");
done:
    free(zeros); free(neg); free(qsl); free(lens); free(last);
    return st;
}

/* ---- life cycle ---- */

/* The backend's one-kernel batch-1 step, when it has one that serves this model. */
static Status prepare_fused_decode(ModelRunner *r, Error *err)
{
    Backend *b = r->backend;
    const GPT2Config *c = &r->config;
    if (!b->ops->fused_decode_create) {
        snprintf(r->fused_reason, sizeof r->fused_reason, "off: the %s backend has none",
                 b->name);
        return GPT2_OK;
    }
    const void **lw = malloc(sizeof *lw * 12 * (size_t)c->n_layer);
    if (!lw) return error_set(err, GPT2_ERR_NOMEM, "out of host memory");
    for (int l = 0; l < c->n_layer; l++) {
        const GPT2LayerWeights *w = &r->weights.layers[l];
        const void *p[12] = {w->ln_1_w, w->ln_1_b, w->c_attn_w, w->c_attn_b, w->attn_proj_w,
                             w->attn_proj_b, w->ln_2_w, w->ln_2_b, w->c_fc_w, w->c_fc_b,
                             w->mlp_proj_w, w->mlp_proj_b};
        memcpy(lw + 12 * l, p, sizeof p);
    }
    const FusedDecodeModel m = {
        .n_layer = c->n_layer, .n_embd = c->n_embd, .n_head = c->n_head,
        .vocab_size = c->vocab_size, .block_size = r->rc.block_size,
        .max_model_len = r->rc.max_model_len,
        .activation = c->activation, .eps = c->layer_norm_epsilon,
        .scale = 1.0f / sqrtf((float)c->head_size), .wte = r->weights.wte,
        .wpe = r->weights.wpe, .ln_f_w = r->weights.ln_f_w, .ln_f_b = r->weights.ln_f_b,
        .layer_weights = lw, .key_cache = r->key_cache, .value_cache = r->value_cache,
    };
    Status s = b->ops->fused_decode_create(b, &m, &r->fused_decode, r->fused_reason,
                                           sizeof r->fused_reason, err);
    free(lw);
    return s ? error_prefix(err, "preparing the fused batch-1 decode kernel") : GPT2_OK;
}

static Status check_config(ModelRunner *r, Error *err)
{
    RunnerConfig *rc = &r->rc;
    const GPT2Config *c = &r->config;
    if (rc->block_size != 8 && rc->block_size != 16 && rc->block_size != 32)
        return error_set(err, GPT2_ERR_VALUE, "block_size must be 8, 16 or 32, got %d",
                         rc->block_size);
    if (rc->max_model_len <= 0) rc->max_model_len = c->n_positions;
    if (rc->max_model_len > c->n_positions)
        return error_set(err, GPT2_ERR_VALUE, "max_model_len=%d exceeds the model's "
                         "n_positions=%d", rc->max_model_len, c->n_positions);
    if (rc->max_num_seqs < 1)
        return error_set(err, GPT2_ERR_VALUE, "max_num_seqs must be >= 1, got %d",
                         rc->max_num_seqs);
    if (rc->max_num_batched_tokens < 1)
        return error_set(err, GPT2_ERR_VALUE, "max_num_batched_tokens must be >= 1, got %d",
                         rc->max_num_batched_tokens);
    if (rc->gpu_memory_utilization <= 0 || rc->gpu_memory_utilization > 1)
        return error_set(err, GPT2_ERR_VALUE, "gpu_memory_utilization must be in (0, 1], got "
                         "%g", rc->gpu_memory_utilization);
    r->max_blocks_per_seq = (rc->max_model_len + rc->block_size - 1) / rc->block_size;
    r->max_logits_rows = GPT2_MIN(rc->max_num_batched_tokens, GPT2_MAX(rc->max_num_seqs, 512));
    return GPT2_OK;
}

Status runner_create(ModelRunner **out, const char *model_dir, const RunnerConfig *rc,
                     Error *err)
{
    *out = NULL;
    ModelRunner *r = calloc(1, sizeof *r);
    if (!r) return error_set(err, GPT2_ERR_NOMEM, "out of host memory");
    r->rc = *rc;
    CHECK(checkpoint_open(&r->checkpoint, model_dir, err));
    r->config = *checkpoint_config(r->checkpoint);
    CHECK(check_config(r, err));
    CHECK(backend_create(&r->backend, rc->device, rc->dtype, 0, err));
    r->rc.device = r->backend->name;          /* don't keep the caller's strings */
    CHECK(load_weights(r, err));
    /* On the device wte is followed by wpe in one allocation, so the lm_head can
     * run over V rounded up to 8 rows; on the CPU (zero copy) it can't, nor needs to. */
    r->logits_ld = r->weights_device ? (r->config.vocab_size + 7) & ~7 : r->config.vocab_size;

    AttentionConfig acfg = {
        .num_heads = r->config.n_head, .head_size = r->config.head_size,
        .block_size = r->rc.block_size, .dtype = r->backend->dtype,
        .scale = 1.0f / sqrtf((float)r->config.head_size),
        .max_num_seqs = r->rc.max_num_seqs,
        .max_num_batched_tokens = r->rc.max_num_batched_tokens,
        .max_model_len = r->rc.max_model_len,
        .compute_capability = r->backend->compute_capability, .device = r->backend->name,
    };
    CHECK(attention_select(&r->attn, rc->attention_backend, &acfg, r->attn_reason,
                           sizeof r->attn_reason, err));
    r->rc.attention_backend = NULL;
    CHECK(r->attn->create(&r->attn_state, r->backend, &acfg, err));
    CHECK(alloc_activations(r, err));
    CHECK(alloc_kv_cache(r, err));
    CHECK(prepare_fused_decode(r, err));
    if (r->backend->ops->graph_capture_begin) {
        make_buckets(r);
        CHECK(warm_up_prefill(r, err));
        if (!r->rc.enforce_eager) CHECK(capture_graphs(r, err));
    }
    CHECK(r->backend->ops->synchronize(r->backend, err));
    *out = r;
    return GPT2_OK;
fail:
    runner_destroy(r);
    return err->code;
}

void runner_destroy(ModelRunner *r)
{
    if (!r) return;
    Backend *b = r->backend;
    if (b) {
        if (r->attn && r->attn_state) r->attn->destroy(r->attn_state, b);
        if (r->fused_decode) b->ops->fused_decode_destroy(b, r->fused_decode);
        b->ops->free(b, r->kv_storage);
        b->ops->free(b, r->act_storage);
        b->ops->free(b, r->dev_ints);
        for (int i = 0; i < 2; i++) b->ops->free_host(b, r->host_bufs[i]);
        if (r->weights_device) {
            b->ops->free(b, r->weights_device);
            free(r->weights.layers);
        } else {
            gpt2_weights_free(&r->weights);
        }
        backend_destroy(b);
    } else {
        gpt2_weights_free(&r->weights);
    }
    free(r->key_cache);
    free(r->value_cache);
    checkpoint_close(r->checkpoint);
    free(r);
}

Status runner_sample(ModelRunner *r, int R, const SamplingRow *rows, const TokenAdjust *adj,
                     int n_adj, int max_logprobs, SamplerOutput *out, Error *err)
{
    Backend *b = r->backend;
    /* the lm_head's rows as they are (compute dtype, padded stride): no fp32 copy */
    return b->ops->sample(b, r->act.logits, b->dtype, r->logits_ld, R, r->config.vocab_size,
                          rows, adj, n_adj, max_logprobs, out, err);
}

Status runner_sample_launch(ModelRunner *r, int R, const SamplingRow *rows,
                            const TokenAdjust *adj, int n_adj, int max_logprobs, int *ticket,
                            Error *err)
{
    Backend *b = r->backend;
    return b->ops->sample_launch(b, r->act.logits, b->dtype, r->logits_ld, R,
                                 r->config.vocab_size, rows, adj, n_adj, max_logprobs, ticket,
                                 err);
}

Status runner_sample_wait(ModelRunner *r, int ticket, SamplerOutput *out, Error *err)
{
    return r->backend->ops->sample_wait(r->backend, ticket, out, err);
}

Status runner_copy_blocks(ModelRunner *r, const int32_t *src, const int32_t *dst, int n,
                          Error *err)
{
    Backend *b = r->backend;
    const size_t block_bytes = (size_t)r->config.n_head * r->rc.block_size *
                               r->config.head_size * dtype_size(b->dtype);
    for (int l = 0; l < r->config.n_layer; l++)
        for (int i = 0; i < n; i++) {
            if (src[i] < 0 || src[i] >= r->num_kv_blocks || dst[i] < 0 ||
                dst[i] >= r->num_kv_blocks)
                return error_set(err, GPT2_ERR_INTERNAL, "copy_blocks: block out of range");
            size_t s = (size_t)src[i] * block_bytes, d = (size_t)dst[i] * block_bytes;
            CHECK(b->ops->copy_d2d(b, (char *)r->key_cache[l] + d, (char *)r->key_cache[l] + s,
                                   block_bytes, err));
            CHECK(b->ops->copy_d2d(b, (char *)r->value_cache[l] + d,
                                   (char *)r->value_cache[l] + s, block_bytes, err));
        }
    return GPT2_OK;
fail:
    return err->code;
}

Status runner_logits_to_host(ModelRunner *r, int n, float *out, Error *err)
{
    Backend *b = r->backend;
    const int V = r->config.vocab_size;
    if ((void *)r->act.logits_f32 != r->act.logits && n > 0 &&
        b->ops->to_float(b, r->act.logits_f32, r->act.logits, n, V, r->logits_ld, err) != GPT2_OK)
        return err->code;
    return b->ops->copy_d2h(b, out, r->act.logits_f32, (size_t)n * (size_t)V * sizeof(float),
                            err);
}
