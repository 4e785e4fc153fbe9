/* sampler.c — host-side sampling state: token occurrence counts, merged logit
 * bias / min_tokens masks, and SamplingRow + TokenAdjust construction (see
 * sampler.h). Pure C, no device access. */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

static uint32_t tok_hash(int32_t t) { return (uint32_t)sampling_mix64((uint64_t)(uint32_t)t); }

int token_counts_find(const TokenCounts *c, int32_t tok)
{
    if (!c->nslots) return -1;
    uint32_t m = (uint32_t)c->nslots - 1;
    for (uint32_t i = tok_hash(tok) & m;; i = (i + 1) & m) {
        int32_t s = c->slots[i];
        if (s == 0) return -1;
        if (c->tok[s - 1] == tok) return s - 1;
    }
}

static Status counts_grow(TokenCounts *c, Error *err)
{
    int cap = c->cap ? 2 * c->cap : 16, nslots = 32;
    while (nslots < 2 * cap) nslots *= 2;
    int32_t *tok = realloc(c->tok, (size_t)cap * sizeof *tok);
    if (tok) c->tok = tok;
    int32_t *oc = realloc(c->out_count, (size_t)cap * sizeof *oc);
    if (oc) c->out_count = oc;
    uint8_t *ip = realloc(c->in_prompt, (size_t)cap);
    if (ip) c->in_prompt = ip;
    int32_t *slots = calloc((size_t)nslots, sizeof *slots);
    if (!tok || !oc || !ip || !slots) {
        free(slots);
        return error_set(err, GPT2_ERR_NOMEM, "sampler: out of memory for token counts");
    }
    free(c->slots);
    c->slots = slots;
    c->nslots = nslots;
    c->cap = cap;
    uint32_t m = (uint32_t)nslots - 1;
    for (int k = 0; k < c->n; k++) {
        uint32_t i = tok_hash(c->tok[k]) & m;
        while (slots[i]) i = (i + 1) & m;
        slots[i] = k + 1;
    }
    return GPT2_OK;
}

/* Index of tok, inserting it (counts 0) when absent; -1 on allocation failure. */
static int counts_slot(TokenCounts *c, int32_t tok, Error *err)
{
    int k = token_counts_find(c, tok);
    if (k >= 0) return k;
    if (c->n == c->cap && counts_grow(c, err)) return -1;
    k = c->n++;
    c->tok[k] = tok;
    c->out_count[k] = 0;
    c->in_prompt[k] = 0;
    uint32_t m = (uint32_t)c->nslots - 1, i = tok_hash(tok) & m;
    while (c->slots[i]) i = (i + 1) & m;
    c->slots[i] = k + 1;
    return k;
}

Status token_counts_init(TokenCounts *c, const int32_t *prompt, int n_prompt, Error *err)
{
    memset(c, 0, sizeof *c);
    for (int i = 0; i < n_prompt; i++) {
        int k = counts_slot(c, prompt[i], err);
        if (k < 0) { token_counts_free(c); return GPT2_ERR_NOMEM; }
        c->in_prompt[k] = 1;
    }
    return GPT2_OK;
}

Status token_counts_add_output(TokenCounts *c, int32_t tok, Error *err)
{
    int k = counts_slot(c, tok, err);
    if (k < 0) return GPT2_ERR_NOMEM;
    c->out_count[k]++;
    return GPT2_OK;
}

Status token_counts_copy(TokenCounts *dst, const TokenCounts *src, Error *err)
{
    memset(dst, 0, sizeof *dst);
    if (!src->cap) return GPT2_OK;
    dst->tok = malloc((size_t)src->cap * sizeof *dst->tok);
    dst->out_count = malloc((size_t)src->cap * sizeof *dst->out_count);
    dst->in_prompt = malloc((size_t)src->cap);
    dst->slots = malloc((size_t)src->nslots * sizeof *dst->slots);
    if (!dst->tok || !dst->out_count || !dst->in_prompt || !dst->slots) {
        token_counts_free(dst);
        return error_set(err, GPT2_ERR_NOMEM, "sampler: out of memory for token counts");
    }
    memcpy(dst->tok, src->tok, (size_t)src->n * sizeof *dst->tok);
    memcpy(dst->out_count, src->out_count, (size_t)src->n * sizeof *dst->out_count);
    memcpy(dst->in_prompt, src->in_prompt, (size_t)src->n);
    memcpy(dst->slots, src->slots, (size_t)src->nslots * sizeof *dst->slots);
    dst->n = src->n;
    dst->cap = src->cap;
    dst->nslots = src->nslots;
    return GPT2_OK;
}

void token_counts_free(TokenCounts *c)
{
    if (!c) return;
    free(c->tok); free(c->out_count); free(c->in_prompt); free(c->slots);
    memset(c, 0, sizeof *c);
}

typedef struct BiasItem { int32_t tok; float bias; uint8_t mask; } BiasItem;

static int bias_cmp(const void *a, const void *b)
{
    int32_t x = ((const BiasItem *)a)->tok, y = ((const BiasItem *)b)->tok;
    return (x > y) - (x < y);
}

Status sampler_bias_init(SamplerBias *b, const SamplingParamsC *p, int32_t eos_id, Error *err)
{
    memset(b, 0, sizeof *b);
    int masked = p->min_tokens > 0;
    int cap = p->n_logit_bias + (masked ? p->n_stop_token_ids + 1 : 0);
    if (cap == 0) return GPT2_OK;
    BiasItem *items = malloc((size_t)cap * sizeof *items);
    if (!items) return error_set(err, GPT2_ERR_NOMEM, "sampler: out of memory");
    int n = 0;
    for (int i = 0; i < p->n_logit_bias; i++)
        items[n++] = (BiasItem){p->logit_bias_ids[i], p->logit_bias_values[i], 0};
    if (masked) {
        for (int i = 0; i < p->n_stop_token_ids; i++)
            items[n++] = (BiasItem){p->stop_token_ids[i], 0.0f, 1};
        if (!p->ignore_eos && eos_id >= 0) items[n++] = (BiasItem){eos_id, 0.0f, 1};
    }
    qsort(items, (size_t)n, sizeof *items, bias_cmp);
    b->tok = malloc((size_t)n * sizeof *b->tok);
    b->bias = malloc((size_t)n * sizeof *b->bias);
    b->min_mask = malloc((size_t)n);
    if (!b->tok || !b->bias || !b->min_mask) {
        free(items);
        sampler_bias_free(b);
        return error_set(err, GPT2_ERR_NOMEM, "sampler: out of memory");
    }
    for (int i = 0; i < n; i++) {        /* merge duplicates: biases add, masks or */
        if (b->n > 0 && b->tok[b->n - 1] == items[i].tok) {
            b->bias[b->n - 1] += items[i].bias;
            b->min_mask[b->n - 1] |= items[i].mask;
        } else {
            b->tok[b->n] = items[i].tok;
            b->bias[b->n] = items[i].bias;
            b->min_mask[b->n] = items[i].mask;
            b->n++;
        }
    }
    free(items);
    return GPT2_OK;
}

void sampler_bias_free(SamplerBias *b)
{
    if (!b) return;
    free(b->tok); free(b->bias); free(b->min_mask);
    memset(b, 0, sizeof *b);
}

void adj_buf_free(AdjBuf *b)
{
    if (!b) return;
    free(b->a);
    memset(b, 0, sizeof *b);
}

static Status adj_push(AdjBuf *b, TokenAdjust a, Error *err)
{
    if (b->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 256;
        TokenAdjust *p = realloc(b->a, (size_t)cap * sizeof *p);
        if (!p) return error_set(err, GPT2_ERR_NOMEM, "sampler: out of memory for adjustments");
        b->a = p;
        b->cap = cap;
    }
    b->a[b->n++] = a;
    return GPT2_OK;
}

/* Index of tok in the sorted bias list, or -1. */
static int bias_find(const SamplerBias *b, int32_t tok)
{
    int lo = 0, hi = b->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (b->tok[mid] == tok) return mid;
        if (b->tok[mid] < tok) lo = mid + 1; else hi = mid - 1;
    }
    return -1;
}

static float bias_value(const SamplerBias *b, int i, int num_out, int min_tokens)
{
    if (i < 0) return 0.0f;
    if (b->min_mask[i] && num_out < min_tokens) return -INFINITY;
    return b->bias[i];
}

int sampler_penalties_on(const SamplingParamsC *p)
{
    return p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f ||
           p->repetition_penalty != 1.0f;
}

uint64_t sampler_request_seed(uint64_t engine_seed, uint64_t arrival_index)
{
    return sampling_mix64(engine_seed ^ sampling_mix64(arrival_index ^ 0xa0761d6478bd642fULL));
}

uint64_t sampler_seq_seed(uint64_t request_seed, int index)
{
    return sampling_mix64(request_seed ^ sampling_mix64((uint64_t)index + 0xe7037ed1a0b428dbULL));
}

Status sampler_fill_row(const SamplingParamsC *p, const SamplerBias *b,
                        const TokenCounts *counts, int num_out, uint64_t seed, AdjBuf *buf,
                        SamplingRow *row, Error *err)
{
    row->temperature = p->temperature;
    row->top_k = p->top_k > 0 ? p->top_k : 0;
    row->top_p = p->top_p;
    row->min_p = p->min_p;
    row->presence_penalty = p->presence_penalty;
    row->frequency_penalty = p->frequency_penalty;
    row->repetition_penalty = p->repetition_penalty;
    row->seed = seed;
    row->step = (uint64_t)num_out;
    row->target_token = -1;
    row->num_logprobs = p->logprobs > 0 ? p->logprobs : 0;
    row->adj_start = buf->n;
    int pen = counts && sampler_penalties_on(p);
    if (pen) {
        for (int k = 0; k < counts->n; k++) {
            TokenAdjust a = {counts->tok[k], counts->out_count[k], counts->in_prompt[k],
                             bias_value(b, bias_find(b, counts->tok[k]), num_out, p->min_tokens)};
            Status s = adj_push(buf, a, err);
            if (s) return s;
        }
    }
    for (int i = 0; i < b->n; i++) {
        if (pen && token_counts_find(counts, b->tok[i]) >= 0) continue;   /* already there */
        float v = bias_value(b, i, num_out, p->min_tokens);
        if (v == 0.0f) continue;
        Status s = adj_push(buf, (TokenAdjust){b->tok[i], 0, 0, v}, err);
        if (s) return s;
    }
    row->adj_count = buf->n - row->adj_start;
    return GPT2_OK;
}

void sampler_fill_target_row(int32_t target, int num_logprobs, SamplingRow *row)
{
    memset(row, 0, sizeof *row);
    row->temperature = 0.0f;
    row->top_p = 1.0f;
    row->repetition_penalty = 1.0f;
    row->target_token = target;
    row->num_logprobs = num_logprobs > 0 ? num_logprobs : 0;
}
