/* engine_requests.c — requests in and out of the engine: validation at
 * add_request, building a Request (deep-copied params, sequences, logprob
 * storage), finishing, aborting and freeing. */
#define _POSIX_C_SOURCE 200809L
#include "engine_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void request_free(Request *req)
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
Request *find_request(const Engine *e, const char *id)
{
    for (int i = 0; i < e->n_reqs; i++)
        if (!e->reqs[i]->compute_logits && e->reqs[i]->state != REQ_FINISHED &&
            strcmp(e->reqs[i]->id, id) == 0)
            return e->reqs[i];
    return NULL;
}

Status request_build(Engine *e, Request **out, const char *id, const int32_t *prompt, int P,
                      const SamplingParamsC *params, int compute_logits, Error *err)
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
    {
        int masked = 0;
        for (int i = 0; i < req->bias.n; i++)
            masked += req->bias.min_mask[i] || isinf(req->bias.bias[i]);
        req->may_mask_all = masked >= e->vocab;
    }
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

Status reqs_push(Engine *e, Request *req, Error *err)
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

Status validate_request(const Engine *e, const char *id, const int32_t *prompt, int P,
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

static int cmp_id(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The ids of a batch: distinct and none in use by an unfinished request. Looks
 * each live request up in a sorted copy of the batch's ids: O((n + live) log n),
 * where a find_request per new id would take O(n * live). */
static Status check_new_ids(const Engine *e, int n, const char *const *ids, Error *err)
{
    for (int i = 0; i < n; i++)
        if (!ids[i]) return error_set(err, GPT2_ERR_VALUE, "request_id must not be NULL");
    if (n == 1)
        return find_request(e, ids[0]) ? error_set(err, GPT2_ERR_VALUE, "request id '%s' is "
                                                   "already in use", ids[0]) : GPT2_OK;
    if (n < 1) return GPT2_OK;
    const char **sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted) return error_set(err, GPT2_ERR_NOMEM, "out of memory for %d request ids", n);
    memcpy(sorted, ids, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_id);
    Status s = GPT2_OK;
    for (int i = 1; i < n && !s; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0)
            s = error_set(err, GPT2_ERR_VALUE, "request id '%s' appears twice in the batch",
                          sorted[i]);
    for (int i = 0; i < e->n_reqs && !s; i++) {
        const Request *req = e->reqs[i];
        if (!req->compute_logits && req->state != REQ_FINISHED &&
            bsearch(&req->id, sorted, (size_t)n, sizeof *sorted, cmp_id))
            s = error_set(err, GPT2_ERR_VALUE, "request id '%s' is already in use", req->id);
    }
    free(sorted);
    return s;
}

Status engine_add_requests(Engine *e, int n, const char *const *request_ids,
                           const int32_t *const *prompt_ids, const int *num_prompt,
                           const SamplingParamsC *const *params, Error *err)
{
    if (n < 0) return error_set(err, GPT2_ERR_VALUE, "a batch of %d requests", n);
    SamplingParamsC defaults;
    sampling_params_default(&defaults);
    Status s = GPT2_OK;
    /* 1. validate all (ids first): nothing is built before every request is known good */
    if ((s = check_new_ids(e, n, request_ids, err))) return s;
    for (int i = 0; i < n; i++) {
        const SamplingParamsC *p = params && params[i] ? params[i] : &defaults;
        s = validate_request(e, NULL, prompt_ids[i], num_prompt[i], p, p->max_tokens, p->n, err);
        if (s) return n > 1 ? error_prefix(err, "request '%s'", request_ids[i]) : s;
    }
    /* 2. build all; 3. queue all. A failure in either undoes everything, the
     * arrival counter too (unseeded requests derive their seeds from it) */
    const uint64_t arrival0 = e->arrival_counter;
    const int n_reqs0 = e->n_reqs;
    Request **built = alloc_zero((size_t)n, sizeof *built);
    if (!built) return error_set(err, GPT2_ERR_NOMEM, "out of memory for %d requests", n);
    int n_built = 0, n_queued = 0;
    for (; n_built < n; n_built++) {
        const SamplingParamsC *p = params && params[n_built] ? params[n_built] : &defaults;
        if ((s = request_build(e, &built[n_built], request_ids[n_built], prompt_ids[n_built],
                               num_prompt[n_built], p, 0, err)))
            goto undo;
    }
    for (; n_queued < n; n_queued++)
        if ((s = reqs_push(e, built[n_queued], err)) ||
            (s = scheduler_add(&e->sched, built[n_queued], err)))
            goto undo;
    e->num_unfinished += n;
    free(built);
    return GPT2_OK;
undo:
    for (int i = 0; i < n_queued; i++)      /* queued, never scheduled: holds no blocks */
        scheduler_remove(&e->sched, &e->bm, built[i]);
    e->n_reqs = n_reqs0;
    for (int i = 0; i < n_built; i++) request_free(built[i]);
    free(built);
    e->arrival_counter = arrival0;
    return s;
}

Status engine_add_request(Engine *e, const char *request_id, const int32_t *prompt_ids,
                          int num_prompt, const SamplingParamsC *params, Error *err)
{
    return engine_add_requests(e, 1, &request_id, &prompt_ids, &num_prompt, &params, err);
}

void request_finish(Engine *e, Request *req, FinishReason why)
{
    for (int k = 0; k < req->n; k++) {
        Sequence *sq = &req->seqs[k];
        sq->pending = 0;
        if (!sq->finished) {
            sq->finished = 1;
            sq->out.finish_reason = why;
        }
    }
    req->num_live = 0;
    scheduler_remove(&e->sched, &e->bm, req);
    if (req->state != REQ_FINISHED) {
        e->num_unfinished--;
        e->have_unreported = 1;
    }
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

int engine_num_unfinished(const Engine *e) { return e->num_unfinished; }

int engine_has_unfinished(const Engine *e) { return engine_num_unfinished(e) > 0; }

/* ---- text, stops ---- */
