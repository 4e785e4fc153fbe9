/* engine.c — the step loop (engine.h): schedule -> pack a StepInput (decodes
 * first) -> runner_execute -> SamplingRows + TokenAdjusts -> runner_sample ->
 * append tokens, incremental detokenize, stop checks, free finished requests.
 *
 * Choices worth knowing:
 *   - engine_compute_logits needs an idle engine (GPT2_ERR_VALUE otherwise): it
 *     runs an internal request alone, chunked by the token budget and the
 *     logits-row cap, without prefix-cache hits; an abort not yet reported is
 *     still reported by the next engine_step.
 *   - a finished (or aborted) request is reported once by engine_step and its
 *     memory released at the start of the following step (or engine_destroy).
 *   - several stop strings in one step: the earliest match in the text wins
 *     (vLLM takes the first in list order).
 * Not thread-safe: one engine, one caller at a time.
 */
#define _POSIX_C_SOURCE 200809L
#include "engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "block_manager.h"
#include "detokenizer.h"
#include "request.h"
#include "sampler.h"
#include "scheduler.h"

struct SeqText {
    Detokenizer d;
};

typedef enum RowKind { ROW_PROMPT_LP = 0, ROW_SAMPLE, ROW_LOGITS } RowKind;

typedef struct RowInfo {
    Request *req;
    int seq;        /* sequence receiving the sampled token */
    int pos;        /* ROW_PROMPT_LP / ROW_LOGITS: prompt position whose logits these are */
    RowKind kind;
} RowInfo;

struct Engine {
    ModelRunner *runner;
    Tokenizer *tok;
    BlockManager bm;
    Scheduler sched;
    int block_size, max_model_len, vocab, tok_vocab, stride;
    int32_t eos_id;
    int enable_prefix_caching;
    uint64_t seed, arrival_counter;
    Request **reqs;         /* (n_reqs) live, to-report and reported-finished requests */
    int n_reqs, cap_reqs;
    /* step buffers, sized once: T tokens, S sequences, R logits rows */
    int T, S, R;
    int32_t *input_ids, *positions, *slots, *qsl, *seq_lens, *block_tables, *logits_idx;
    SchedEntry *order;      /* (S) entries, decodes first */
    RowInfo *rinfo;         /* (R) */
    SamplingRow *rows;      /* (R) */
    AdjBuf adj;
    int32_t *s_tokens, *s_ranks, *s_top_ids;
    float *s_logprobs, *s_top_lps;
    int s_top_cap;          /* rows * max_logprobs capacity of the top arrays */
    const RequestOutputC **outputs;
    int n_outputs, cap_outputs;
    EngineStats stats;
    int in_compute_logits;  /* internal steps report nothing (kept for the user's next step) */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- requests ---- */

static void request_free(Request *req)
{
    if (!req) return;
    for (int k = 0; req->seqs && k < req->n; k++) {
        Sequence *sq = &req->seqs[k];
        free(sq->tokens);
        block_table_free(&sq->blocks);
        token_counts_free(&sq->counts);
        free(sq->logprobs); free(sq->ranks); free(sq->top_ids); free(sq->top_logprobs);
        if (sq->text) detokenizer_free(&sq->text->d);
        free(sq->text);
    }
    free(req->seqs);
    free(req->seq_outs);
    free(req->id);
    sampling_params_free(&req->params);
    sampler_bias_free(&req->bias);
    free(req->prompt_logprobs); free(req->prompt_ranks); free(req->prompt_top_ids);
    free(req->prompt_top_logprobs);
    free(req);
}

/* The unfinished request with this id (a finished one may linger until the next
 * step releases it; its id is free for reuse already). */
static Request *find_request(const Engine *e, const char *id)
{
    for (int i = 0; i < e->n_reqs; i++)
        if (!e->reqs[i]->compute_logits && e->reqs[i]->state != REQ_FINISHED &&
            strcmp(e->reqs[i]->id, id) == 0)
            return e->reqs[i];
    return NULL;
}

static void *alloc_zero(size_t n, size_t size) { return calloc(n ? n : 1, size); }
#define ALLOC(p, n) ((p) = alloc_zero((size_t)(n), sizeof *(p)))

static Status request_build(Engine *e, Request **out, const char *id, const int32_t *prompt,
                            int P, const SamplingParamsC *params, int compute_logits, Error *err)
{
    Request *req = calloc(1, sizeof *req);
    if (!req) return error_set(err, GPT2_ERR_NOMEM, "out of memory for a request");
    Status s = sampling_params_copy(&req->params, params, err);
    if (s) { free(req); return s; }
    const SamplingParamsC *p = &req->params;
    req->id = strdup(id ? id : "");
    req->num_prompt = P;
    req->n = compute_logits ? 1 : p->n;
    req->num_live = req->n;
    req->compute_logits = compute_logits;
    req->no_prefix_hits = compute_logits || p->prompt_logprobs >= 0;
    req->arrival_index = compute_logits ? e->arrival_counter : e->arrival_counter++;
    req->arrival_time = now_s();
    uint64_t rseed = p->has_seed ? p->seed : sampler_request_seed(e->seed, req->arrival_index);
    int M = compute_logits ? 0 : p->max_tokens;
    int ntop = p->logprobs > 0 ? p->logprobs : 0;
    if (!req->id || !ALLOC(req->seqs, req->n) || !ALLOC(req->seq_outs, req->n)) goto nomem;
    if ((s = sampler_bias_init(&req->bias, p, e->eos_id, err))) goto fail;
    for (int k = 0; k < req->n; k++) {
        Sequence *sq = &req->seqs[k];
        sq->index = k;
        sq->cap_tokens = P + M;
        sq->seed = sampler_seq_seed(rseed, k);
        if (!ALLOC(sq->tokens, P + M) || !ALLOC(sq->text, 1)) goto nomem;
        memcpy(sq->tokens, prompt, (size_t)P * sizeof *prompt);
        sq->num_tokens = P;
        if ((s = block_table_reserve(&sq->blocks, (P + M + e->block_size - 1) / e->block_size,
                                     err)))
            goto fail;
        if (!compute_logits && sampler_penalties_on(p) &&
            (s = token_counts_init(&sq->counts, prompt, P, err)))
            goto fail;
        if (p->logprobs >= 0) {
            if (!ALLOC(sq->logprobs, M) || !ALLOC(sq->ranks, M)) goto nomem;
            if (ntop && (!ALLOC(sq->top_ids, (size_t)M * ntop) ||
                         !ALLOC(sq->top_logprobs, (size_t)M * ntop)))
                goto nomem;
        }
        detokenizer_init(&sq->text->d, e->tok, p->skip_special_tokens);
    }
    if (!compute_logits && p->prompt_logprobs >= 0) {
        int k = p->prompt_logprobs;
        if (!ALLOC(req->prompt_logprobs, P) || !ALLOC(req->prompt_ranks, P)) goto nomem;
        if (k && (!ALLOC(req->prompt_top_ids, (size_t)P * k) ||
                  !ALLOC(req->prompt_top_logprobs, (size_t)P * k)))
            goto nomem;
        req->prompt_logprobs[0] = NAN;      /* entry 0 is None */
        req->prompt_lp_filled = 1;
    }
    *out = req;
    return GPT2_OK;
nomem:
    s = error_set(err, GPT2_ERR_NOMEM, "out of memory for request '%s'", id ? id : "");
fail:
    request_free(req);
    return s;
}

static Status reqs_push(Engine *e, Request *req, Error *err)
{
    if (e->n_reqs == e->cap_reqs) {
        int c = e->cap_reqs ? 2 * e->cap_reqs : 64;
        Request **p = realloc(e->reqs, (size_t)c * sizeof *p);
        if (!p) return error_set(err, GPT2_ERR_NOMEM, "out of memory");
        e->reqs = p;
        e->cap_reqs = c;
    }
    e->reqs[e->n_reqs++] = req;
    return GPT2_OK;
}

/* ---- life cycle ---- */

void engine_destroy(Engine *e)
{
    if (!e) return;
    for (int i = 0; i < e->n_reqs; i++) request_free(e->reqs[i]);
    free(e->reqs);
    scheduler_free(&e->sched);
    block_manager_free(&e->bm);
    runner_destroy(e->runner);
    tokenizer_free(e->tok);
    free(e->input_ids); free(e->positions); free(e->slots); free(e->qsl); free(e->seq_lens);
    free(e->block_tables); free(e->logits_idx); free(e->order); free(e->rinfo); free(e->rows);
    adj_buf_free(&e->adj);
    free(e->s_tokens); free(e->s_ranks); free(e->s_top_ids); free(e->s_logprobs);
    free(e->s_top_lps);
    free(e->outputs);
    free(e);
}

Status engine_create(Engine **out, const EngineConfig *cfg, Error *err)
{
    *out = NULL;
    Engine *e = calloc(1, sizeof *e);
    if (!e) return error_set(err, GPT2_ERR_NOMEM, "out of memory for the engine");
    Status s;
    if (!cfg->tokenizer_dir) {
        s = error_set(err, GPT2_ERR_VALUE, "tokenizer directory is required");
        goto fail;
    }
    if ((s = tokenizer_load_dir(&e->tok, cfg->tokenizer_dir, err))) goto fail;
    if ((s = runner_create(&e->runner, cfg->model_dir, &cfg->runner, err))) goto fail;
    ModelRunner *r = e->runner;
    e->block_size = r->rc.block_size;
    e->max_model_len = r->rc.max_model_len;
    e->vocab = r->config.vocab_size;
    e->tok_vocab = tokenizer_vocab_size(e->tok);
    e->eos_id = tokenizer_eos_token_id(e->tok);
    if (e->eos_id >= e->vocab) e->eos_id = -1;    /* small random models: never sampled */
    e->stride = r->max_blocks_per_seq;
    e->enable_prefix_caching = cfg->enable_prefix_caching;
    e->seed = cfg->seed;
    if ((s = block_manager_init(&e->bm, r->num_kv_blocks, e->block_size,
                                cfg->enable_prefix_caching, err)))
        goto fail;
    SchedulerConfig sc = {r->rc.max_num_seqs, r->rc.max_num_batched_tokens, r->max_logits_rows,
                          cfg->enable_prefix_caching};
    if ((s = scheduler_init(&e->sched, &sc, err))) goto fail;
    e->T = r->rc.max_num_batched_tokens;
    e->S = r->rc.max_num_seqs;
    e->R = r->max_logits_rows;
    if (!ALLOC(e->input_ids, e->T) || !ALLOC(e->positions, e->T) || !ALLOC(e->slots, e->T) ||
        !ALLOC(e->qsl, e->S + 1) || !ALLOC(e->seq_lens, e->S) ||
        !ALLOC(e->block_tables, (size_t)e->S * e->stride) || !ALLOC(e->logits_idx, e->R) ||
        !ALLOC(e->order, e->S) || !ALLOC(e->rinfo, e->R) || !ALLOC(e->rows, e->R) ||
        !ALLOC(e->s_tokens, e->R) || !ALLOC(e->s_ranks, e->R) || !ALLOC(e->s_logprobs, e->R)) {
        s = error_set(err, GPT2_ERR_NOMEM, "out of memory for the engine's step buffers");
        goto fail;
    }
    *out = e;
    return GPT2_OK;
fail:
    engine_destroy(e);
    return s;
}

/* ---- adding / aborting ---- */

static Status validate_request(const Engine *e, const char *id, const int32_t *prompt, int P,
                               const SamplingParamsC *p, int M, int n, Error *err)
{
    if (id && find_request(e, id))
        return error_set(err, GPT2_ERR_VALUE, "request id '%s' is already in use", id);
    if (P < 1) return error_set(err, GPT2_ERR_VALUE, "prompt must contain at least one token");
    for (int i = 0; i < P; i++)
        if (prompt[i] < 0 || prompt[i] >= e->vocab)
            return error_set(err, GPT2_ERR_VALUE, "prompt token id %d at position %d is out of "
                             "range [0, %d)", prompt[i], i, e->vocab);
    if ((int64_t)P + M > e->max_model_len)
        return error_set(err, GPT2_ERR_VALUE, "prompt (%d tokens) + max_tokens (%d) = %lld "
                         "exceeds max_model_len=%d", P, M, (long long)P + M, e->max_model_len);
    int64_t need = scheduler_max_blocks(P, M, n, e->block_size);
    if (need > e->bm.num_blocks)
        return error_set(err, GPT2_ERR_VALUE, "request needs up to %lld KV blocks (prompt %d + "
                         "max_tokens %d, n=%d, block_size %d) but the cache has only %d; raise "
                         "num_kv_blocks or lower max_tokens", (long long)need, P, M, n,
                         e->block_size, e->bm.num_blocks);
    if (!p) return GPT2_OK;
    if (n < 1 || n > e->S || n > e->R)
        return error_set(err, GPT2_ERR_VALUE, "n=%d must be in [1, %d] (max_num_seqs)", n,
                         GPT2_MIN(e->S, e->R));
    if (M < 1) return error_set(err, GPT2_ERR_VALUE, "max_tokens must be >= 1, got %d", M);
    if (p->logprobs > e->vocab || p->prompt_logprobs > e->vocab)
        return error_set(err, GPT2_ERR_VALUE, "logprobs/prompt_logprobs must be <= vocab size %d",
                         e->vocab);
    for (int i = 0; i < p->n_logit_bias; i++)
        if (p->logit_bias_ids[i] < 0 || p->logit_bias_ids[i] >= e->vocab)
            return error_set(err, GPT2_ERR_VALUE, "logit_bias token id %d is out of range "
                             "[0, %d)", p->logit_bias_ids[i], e->vocab);
    for (int i = 0; i < p->n_stop_token_ids; i++)
        if (p->stop_token_ids[i] < 0 || p->stop_token_ids[i] >= e->vocab)
            return error_set(err, GPT2_ERR_VALUE, "stop_token_ids entry %d is out of range "
                             "[0, %d)", p->stop_token_ids[i], e->vocab);
    return GPT2_OK;
}

Status engine_add_request(Engine *e, const char *request_id, const int32_t *prompt_ids,
                          int num_prompt, const SamplingParamsC *params, Error *err)
{
    if (!request_id) return error_set(err, GPT2_ERR_VALUE, "request_id must not be NULL");
    SamplingParamsC defaults;
    if (!params) { sampling_params_default(&defaults); params = &defaults; }
    Status s = validate_request(e, request_id, prompt_ids, num_prompt, params,
                                params->max_tokens, params->n, err);
    if (s) return s;
    Request *req;
    if ((s = request_build(e, &req, request_id, prompt_ids, num_prompt, params, 0, err)))
        return s;
    if ((s = reqs_push(e, req, err))) { request_free(req); return s; }
    if ((s = scheduler_add(&e->sched, req, err))) {
        e->n_reqs--;
        request_free(req);
        return s;
    }
    return GPT2_OK;
}

static void request_finish(Engine *e, Request *req, FinishReason why)
{
    for (int k = 0; k < req->n; k++) {
        Sequence *sq = &req->seqs[k];
        if (!sq->finished) {
            sq->finished = 1;
            sq->out.finish_reason = why;
        }
    }
    req->num_live = 0;
    scheduler_remove(&e->sched, &e->bm, req);
    req->state = REQ_FINISHED;
    req->finished_time = now_s();
}

void engine_abort_request(Engine *e, const char *request_id)
{
    if (!e || !request_id) return;
    Request *req = find_request(e, request_id);
    if (!req || req->state == REQ_FINISHED) return;
    request_finish(e, req, FINISH_ABORT);
}

int engine_num_unfinished(const Engine *e)
{
    int n = 0;
    for (int i = 0; i < e->n_reqs; i++) n += e->reqs[i]->state != REQ_FINISHED;
    return n;
}

int engine_has_unfinished(const Engine *e) { return engine_num_unfinished(e) > 0; }

/* ---- text, stops ---- */

/* Length of the visible text of a live sequence: the trailing bytes that could
 * still begin a stop string are withheld (streaming never shows a stop string). */
static size_t visible_len(const Request *req, const Sequence *sq)
{
    const Detokenizer *d = &sq->text->d;
    size_t len = d->text_len;
    if (sq->finished || req->params.include_stop_str_in_output) return len;
    size_t hold = 0;
    for (int i = 0; i < req->params.n_stop; i++) {
        const char *st = req->params.stop[i];
        size_t sl = strlen(st);
        for (size_t l = GPT2_MIN(sl ? sl - 1 : 0, len); l > hold; l--)
            if (memcmp(d->text + len - l, st, l) == 0) { hold = l; break; }
    }
    return len - hold;
}

/* Earliest stop string ending in the bytes appended since old_len; -1 if none. */
static int find_stop(const Request *req, const Detokenizer *d, size_t old_len, size_t *at)
{
    int best = -1;
    size_t best_at = 0;
    for (int i = 0; i < req->params.n_stop; i++) {
        const char *st = req->params.stop[i];
        size_t sl = strlen(st);
        if (sl == 0 || d->text_len < sl) continue;
        size_t from = old_len + 1 > sl ? old_len + 1 - sl : 0;
        for (size_t j = from; j + sl <= d->text_len; j++)
            if (memcmp(d->text + j, st, sl) == 0) {
                if (best < 0 || j < best_at) { best = i; best_at = j; }
                break;
            }
    }
    *at = best_at;
    return best;
}

static int is_stop_token(const SamplingParamsC *p, int32_t t)
{
    for (int i = 0; i < p->n_stop_token_ids; i++)
        if (p->stop_token_ids[i] == t) return 1;
    return 0;
}

/* Appends one sampled token (row i of the sampler output) to a sequence, then
 * detokenizes and checks every stop condition (vLLM v1 order). */
static Status seq_append(Engine *e, Request *req, Sequence *sq, int i, int max_lp, Error *err)
{
    const SamplingParamsC *p = &req->params;
    int32_t t = e->s_tokens[i];
    int k = sq->num_tokens - req->num_prompt;     /* index of this output token */
    if (k >= p->max_tokens || sq->num_tokens >= sq->cap_tokens)
        return error_set(err, GPT2_ERR_INTERNAL, "sequence overran max_tokens");
    sq->tokens[sq->num_tokens++] = t;
    sq->cumulative_logprob += e->s_logprobs[i];
    if (sq->logprobs) {
        sq->logprobs[k] = e->s_logprobs[i];
        sq->ranks[k] = e->s_ranks[i];
        int nt = p->logprobs;
        if (nt > 0) {
            memcpy(sq->top_ids + (size_t)k * nt, e->s_top_ids + (size_t)i * max_lp,
                   (size_t)nt * sizeof(int32_t));
            memcpy(sq->top_logprobs + (size_t)k * nt, e->s_top_lps + (size_t)i * max_lp,
                   (size_t)nt * sizeof(float));
        }
    }
    if (sampler_penalties_on(p)) {
        Status s = token_counts_add_output(&sq->counts, t, err);
        if (s) return s;
    }
    e->stats.generation_tokens++;
    int num_out = k + 1;
    FinishReason fin = FINISH_NONE;
    int kind = 0;
    if (num_out >= p->max_tokens || sq->num_tokens >= e->max_model_len) {
        fin = FINISH_LENGTH;
    } else if (num_out >= p->min_tokens) {
        if (!p->ignore_eos && t == e->eos_id) fin = FINISH_STOP;
        else if (is_stop_token(p, t)) { fin = FINISH_STOP; kind = 1; }
    }
    Detokenizer *d = &sq->text->d;
    size_t old_len = d->text_len;
    int skip_text = fin == FINISH_STOP && !p->include_stop_str_in_output;
    if (!skip_text && t < e->tok_vocab) {
        size_t nb;
        Status s = detokenizer_push(d, t, &nb, err);
        if (s) return s;
    }
    if (fin != FINISH_NONE) {
        Status s = detokenizer_flush(d, NULL, err);
        if (s) return s;
    }
    if (p->n_stop > 0 && num_out > p->min_tokens && d->text) {
        size_t at;
        int which = find_stop(req, d, old_len, &at);
        if (which >= 0) {
            fin = FINISH_STOP;
            kind = 2;
            size_t cut = at + (p->include_stop_str_in_output ? strlen(p->stop[which]) : 0);
            d->text_len = cut;
            d->text[cut] = '\0';
            sq->out.stop_str = p->stop[which];
        }
    }
    if (fin != FINISH_NONE) {
        sq->finished = 1;
        sq->out.finish_reason = fin;
        sq->out.stop_reason_kind = kind;
        sq->out.stop_token = kind == 1 ? t : 0;
        block_manager_release_table(&e->bm, &sq->blocks);
        if (--req->num_live == 0) request_finish(e, req, fin);
    }
    return GPT2_OK;
}

/* ---- one step ---- */

static Status ensure_top_cap(Engine *e, int rows, int max_lp, Error *err)
{
    int need = rows * max_lp;
    if (need <= e->s_top_cap) return GPT2_OK;
    int32_t *ids = realloc(e->s_top_ids, (size_t)need * sizeof *ids);
    if (ids) e->s_top_ids = ids;
    float *lps = realloc(e->s_top_lps, (size_t)need * sizeof *lps);
    if (lps) e->s_top_lps = lps;
    if (!ids || !lps) return error_set(err, GPT2_ERR_NOMEM, "out of memory for logprobs");
    e->s_top_cap = need;
    return GPT2_OK;
}

/* Packs the scheduled entries (decodes first) into e's step buffers. */
static void pack_step(Engine *e, StepInput *in)
{
    const Scheduler *s = &e->sched;
    int ns = 0, nd = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < s->n_entries; i++)
            if ((s->entries[i].len == 1) == (pass == 0)) {
                e->order[ns++] = s->entries[i];
                nd += pass == 0;
            }
    int T = 0, R = 0, bs = e->block_size;
    e->qsl[0] = 0;
    for (int i = 0; i < ns; i++) {
        const SchedEntry *en = &e->order[i];
        Request *req = en->req;
        Sequence *sq = &req->seqs[en->seq];
        int off = T;
        for (int pos = en->start; pos < en->start + en->len; pos++, T++) {
            e->input_ids[T] = sq->tokens[pos];
            e->positions[T] = pos;
            e->slots[T] = sq->blocks.ids[pos / bs] * bs + pos % bs;
        }
        e->qsl[i + 1] = T;
        e->seq_lens[i] = en->start + en->len;
        int32_t *bt = e->block_tables + (size_t)i * e->stride;
        memcpy(bt, sq->blocks.ids, (size_t)sq->blocks.n * sizeof *bt);
        memset(bt + sq->blocks.n, 0, (size_t)(e->stride - sq->blocks.n) * sizeof *bt);
        for (int pos = en->lp_from; pos < en->lp_to; pos++, R++) {
            e->logits_idx[R] = off + (pos - en->start);
            e->rinfo[R] = (RowInfo){req, en->seq, pos,
                                    req->compute_logits ? ROW_LOGITS : ROW_PROMPT_LP};
        }
        for (int j = 0; j < en->num_samples; j++, R++) {
            int target_seq = en->seq;
            if (en->num_samples > 1) {   /* shared prompt done: one row per live sequence */
                int c = 0;
                for (int k = 0; k < req->n; k++)
                    if (!req->seqs[k].finished && c++ == j) { target_seq = k; break; }
            }
            e->logits_idx[R] = off + en->len - 1;
            e->rinfo[R] = (RowInfo){req, target_seq, -1, ROW_SAMPLE};
        }
    }
    *in = (StepInput){.num_seqs = ns, .num_tokens = T, .num_decodes = nd,
                      .input_ids = e->input_ids, .positions = e->positions,
                      .slot_mapping = e->slots, .query_start_loc = e->qsl,
                      .seq_lens = e->seq_lens, .block_tables = e->block_tables,
                      .block_table_stride = e->stride, .num_logits = R,
                      .logits_indices = e->logits_idx};
}

/* Forks the other live sequences of a request whose shared prompt just finished. */
static Status fork_shared(Engine *e, Request *req, Error *err)
{
    Sequence *lead = &req->seqs[req->leader];
    for (int k = 0; k < req->n; k++) {
        Sequence *sq = &req->seqs[k];
        if (k == req->leader || sq->finished) continue;
        Status s = block_manager_fork(&e->bm, &sq->blocks, &lead->blocks, err);
        if (s) return s;
        sq->num_computed = req->num_prompt;
    }
    req->shared = 0;
    return GPT2_OK;
}

static Status collect_outputs(Engine *e, Error *err);

Status engine_step(Engine *e, int *num_outputs, Error *err)
{
    *num_outputs = 0;
    e->n_outputs = 0;
    /* release requests whose finish was reported by the previous step */
    int w = 0;
    for (int i = 0; i < e->n_reqs; i++) {
        Request *req = e->reqs[i];
        if (req->state == REQ_FINISHED && req->reported_finished) request_free(req);
        else e->reqs[w++] = req;
    }
    e->n_reqs = w;
    for (int i = 0; i < e->n_reqs; i++) e->reqs[i]->made_progress = 0;

    Status s = scheduler_schedule(&e->sched, &e->bm, err);
    if (s) return s;
    e->stats.num_preemptions = e->sched.num_preemptions;
    e->stats.prefix_cache_queries = e->sched.prefix_queries;
    e->stats.prefix_cache_hits = e->sched.prefix_hits;
    if (e->sched.n_entries == 0) {
        if (engine_has_unfinished(e) && e->sched.num_preempted_step == 0)
            return error_set(err, GPT2_ERR_INTERNAL, "scheduler could not run any of %d "
                             "unfinished requests (%d free blocks of %d)",
                             engine_num_unfinished(e), block_manager_num_free(&e->bm),
                             e->bm.num_blocks);
        s = collect_outputs(e, err);
        if (!s) *num_outputs = e->n_outputs;
        return s;
    }
    ModelRunner *r = e->runner;
    if (e->sched.n_cow > 0 &&
        (s = runner_copy_blocks(r, e->sched.cow_src, e->sched.cow_dst, e->sched.n_cow, err)))
        return s;
    StepInput in;
    pack_step(e, &in);
    if ((s = runner_execute(r, &in, err))) return s;
    e->stats.num_steps++;
    double t_now = now_s();

    /* logits-only rows (compute_logits runs alone: they are rows [0, n)) */
    int R = in.num_logits, n_logit_rows = 0;
    while (n_logit_rows < R && e->rinfo[n_logit_rows].kind == ROW_LOGITS) n_logit_rows++;
    if (n_logit_rows > 0) {
        const RowInfo *ri = &e->rinfo[0];
        if ((s = runner_logits_to_host(r, n_logit_rows,
                                       ri->req->logits_out + (size_t)ri->pos * e->vocab, err)))
            return s;
    }
    /* sampling rows */
    int max_lp = 0;
    e->adj.n = 0;
    for (int i = n_logit_rows; i < R; i++) {
        const RowInfo *ri = &e->rinfo[i];
        Request *req = ri->req;
        SamplingRow *row = &e->rows[i];
        if (ri->kind == ROW_LOGITS)
            return error_set(err, GPT2_ERR_INTERNAL, "compute_logits rows mixed with others");
        if (ri->kind == ROW_PROMPT_LP) {
            sampler_fill_target_row(req->seqs[0].tokens[ri->pos + 1], req->params.prompt_logprobs,
                                    row);
        } else {
            const Sequence *sq = &req->seqs[ri->seq];
            s = sampler_fill_row(&req->params, &req->bias, sq->counts.cap ? &sq->counts : NULL,
                                 sq->num_tokens - req->num_prompt, sq->seed, &e->adj, row, err);
            if (s) return s;
        }
        max_lp = GPT2_MAX(max_lp, row->num_logprobs);
    }
    int n_samp = R - n_logit_rows;
    if (n_samp > 0) {
        if (n_logit_rows > 0)
            return error_set(err, GPT2_ERR_INTERNAL, "compute_logits rows mixed with others");
        if ((s = ensure_top_cap(e, n_samp, max_lp, err))) return s;
        SamplerOutput so = {e->s_tokens, e->s_logprobs, e->s_ranks,
                            max_lp ? e->s_top_ids : NULL, max_lp ? e->s_top_lps : NULL};
        if ((s = runner_sample(r, n_samp, e->rows, e->adj.a, e->adj.n, max_lp, &so, err)))
            return s;
    }

    /* advance computed tokens, fork finished shared prompts */
    for (int i = 0; i < in.num_seqs; i++) {
        const SchedEntry *en = &e->order[i];
        Request *req = en->req;
        Sequence *sq = &req->seqs[en->seq];
        sq->num_computed = en->start + en->len;
        if (!req->first_scheduled_time) req->first_scheduled_time = t_now;
        if (req->shared && en->seq == req->leader && sq->num_computed == req->num_prompt &&
            (s = fork_shared(e, req, err)))
            return s;
        block_manager_cache_full(&e->bm, &sq->blocks, sq->tokens, sq->num_computed);
        if (req->compute_logits && sq->num_computed == req->num_prompt) {
            e->stats.prompt_tokens += req->num_prompt;
            request_finish(e, req, FINISH_LENGTH);
            req->reported_finished = 1;        /* internal: never reported */
        }
    }
    /* rows: prompt logprobs, then sampled tokens */
    for (int i = 0; i < n_samp; i++) {
        const RowInfo *ri = &e->rinfo[i];
        Request *req = ri->req;
        if (ri->kind == ROW_PROMPT_LP) {
            int j = ri->pos + 1, k = req->params.prompt_logprobs;
            req->prompt_logprobs[j] = e->s_logprobs[i];
            req->prompt_ranks[j] = e->s_ranks[i];
            if (k > 0) {
                memcpy(req->prompt_top_ids + (size_t)j * k, e->s_top_ids + (size_t)i * max_lp,
                       (size_t)k * sizeof(int32_t));
                memcpy(req->prompt_top_logprobs + (size_t)j * k,
                       e->s_top_lps + (size_t)i * max_lp, (size_t)k * sizeof(float));
            }
            if (j + 1 > req->prompt_lp_filled) req->prompt_lp_filled = j + 1;
            continue;
        }
        if (req->state == REQ_FINISHED) continue;
        Sequence *sq = &req->seqs[ri->seq];
        if (sq->finished) continue;
        if (!req->ever_sampled) {
            req->ever_sampled = 1;
            req->first_token_time = t_now;
            e->stats.prompt_tokens += req->num_prompt;
        }
        if ((s = seq_append(e, req, sq, i, max_lp, err))) return s;
        req->made_progress = 1;
    }
    s = collect_outputs(e, err);
    if (!s) *num_outputs = e->n_outputs;
    return s;
}

/* Fills the RequestOutputC views of this step's reported requests. */
static Status collect_outputs(Engine *e, Error *err)
{
    e->n_outputs = 0;
    if (e->in_compute_logits) return GPT2_OK;
    for (int i = 0; i < e->n_reqs; i++) {
        Request *req = e->reqs[i];
        int finished_unreported = req->state == REQ_FINISHED && !req->reported_finished;
        if (!req->made_progress && !finished_unreported) continue;
        if (req->compute_logits) continue;
        if (e->n_outputs == e->cap_outputs) {
            int c = e->cap_outputs ? 2 * e->cap_outputs : 64;
            const RequestOutputC **p = realloc(e->outputs, (size_t)c * sizeof *p);
            if (!p) return error_set(err, GPT2_ERR_NOMEM, "out of memory for outputs");
            e->outputs = p;
            e->cap_outputs = c;
        }
        const SamplingParamsC *p = &req->params;
        for (int k = 0; k < req->n; k++) {
            Sequence *sq = &req->seqs[k];
            SeqOutput *o = &sq->out;
            o->index = k;
            o->num_tokens = sq->num_tokens - req->num_prompt;
            o->token_ids = sq->tokens + req->num_prompt;
            o->text = sq->text->d.text ? sq->text->d.text : "";
            o->text_len = sq->text->d.text ? visible_len(req, sq) : 0;
            o->cumulative_logprob = sq->cumulative_logprob;
            o->logprobs = sq->logprobs;
            o->ranks = sq->ranks;
            o->top_ids = sq->top_ids;
            o->top_logprobs = sq->top_logprobs;
            o->num_top = p->logprobs > 0 ? p->logprobs : 0;
            if (!sq->finished) o->finish_reason = FINISH_NONE;
            if (o->stop_reason_kind != 2) o->stop_str = NULL;
            req->seq_outs[k] = *o;
        }
        RequestOutputC *o = &req->out;
        o->request_id = req->id;
        o->prompt_ids = req->seqs[0].tokens;
        o->num_prompt = req->num_prompt;
        o->prompt_logprobs = req->prompt_logprobs;
        o->prompt_ranks = req->prompt_ranks;
        o->prompt_top_ids = req->prompt_top_ids;
        o->prompt_top_logprobs = req->prompt_top_logprobs;
        o->prompt_num_top = p->prompt_logprobs > 0 ? p->prompt_logprobs : 0;
        o->num_seqs = req->n;
        o->seqs = req->seq_outs;
        o->finished = req->state == REQ_FINISHED;
        o->arrival_time = req->arrival_time;
        o->first_scheduled_time = req->first_scheduled_time;
        o->first_token_time = req->first_token_time;
        o->finished_time = req->finished_time;
        o->num_cached_tokens = req->num_cached_tokens;
        if (o->finished) req->reported_finished = 1;
        e->outputs[e->n_outputs++] = o;
    }
    return GPT2_OK;
}

const RequestOutputC *engine_output(const Engine *e, int i)
{
    if (i < 0 || i >= e->n_outputs) return NULL;
    return e->outputs[i];
}

/* ---- compute_logits ---- */

Status engine_compute_logits(Engine *e, const int32_t *prompt_ids, int num_prompt, float *out,
                             Error *err)
{
    if (engine_has_unfinished(e))
        return error_set(err, GPT2_ERR_VALUE, "compute_logits needs an idle engine (%d requests "
                         "are unfinished)", engine_num_unfinished(e));
    Status s = validate_request(e, NULL, prompt_ids, num_prompt, NULL, 0, 1, err);
    if (s) return s;
    SamplingParamsC p;
    sampling_params_default(&p);
    p.max_tokens = 0;
    Request *req;
    if ((s = request_build(e, &req, "<compute_logits>", prompt_ids, num_prompt, &p, 1, err)))
        return s;
    req->logits_out = out;
    if ((s = reqs_push(e, req, err))) { request_free(req); return s; }
    if ((s = scheduler_add(&e->sched, req, err))) {
        e->n_reqs--;
        request_free(req);
        return s;
    }
    e->in_compute_logits = 1;
    while (req->state != REQ_FINISHED) {
        int n;
        if ((s = engine_step(e, &n, err))) break;
    }
    e->in_compute_logits = 0;
    if (req->state != REQ_FINISHED) request_finish(e, req, FINISH_ABORT);
    for (int i = 0; i < e->n_reqs; i++)      /* the internal request goes away now */
        if (e->reqs[i] == req) {
            memmove(e->reqs + i, e->reqs + i + 1, (size_t)(e->n_reqs - i - 1) * sizeof *e->reqs);
            e->n_reqs--;
            break;
        }
    request_free(req);
    e->n_outputs = 0;
    return s;
}

/* ---- introspection ---- */

const ModelRunner *engine_runner(const Engine *e) { return e->runner; }
const Tokenizer *engine_tokenizer(const Engine *e) { return e->tok; }
const EngineStats *engine_stats(const Engine *e) { return &e->stats; }
int engine_num_free_blocks(const Engine *e) { return block_manager_num_free(&e->bm); }
int engine_num_blocks(const Engine *e) { return e->bm.num_blocks; }

int engine_block_table(const Engine *e, const char *request_id, int seq, const int32_t **ids)
{
    *ids = NULL;
    const Request *req = request_id ? find_request(e, request_id) : NULL;
    if (!req || req->state == REQ_FINISHED || seq < 0 || seq >= req->n) return -1;
    *ids = req->seqs[seq].blocks.ids;
    return req->seqs[seq].blocks.n;
}
