/* engine.c — the engine's life cycle (create, destroy), compute_logits and
 * introspection; the step loop is engine_step.c, requests engine_requests.c,
 * outputs engine_output.c (all share engine_impl.h).
 *
 * Choices worth knowing:
 *   - engine_compute_logits needs an idle engine (GPT2_ERR_VALUE otherwise): it
 *     runs an internal request alone, chunked by the token budget and the
 *     logits-row cap, without prefix-cache hits; an abort not yet reported is
 *     still reported by the next engine_step.
 * Not thread-safe: one engine, one caller at a time.
 */
#define _POSIX_C_SOURCE 200809L
#include "engine.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine_impl.h"

void engine_destroy(Engine *e)
{
    if (!e) return;
    if (e->inflight.active) {              /* its device work writes into runner memory */
        Error ignored = {0};
        runner_sample_wait(e->runner, e->inflight.ticket, &(SamplerOutput){0}, &ignored);
        e->inflight.active = 0;
    }
    for (int i = 0; i < e->n_reqs; i++) request_free(e->reqs[i]);
    free(e->reqs);
    scheduler_free(&e->sched);
    block_manager_free(&e->bm);
    runner_destroy(e->runner);
    tokenizer_free(e->tok);
    free(e->input_ids); free(e->positions); free(e->slots); free(e->qsl); free(e->seq_lens);
    free(e->block_tables); free(e->logits_idx); free(e->rows);
    for (int i = 0; i < 2; i++) free(e->order_buf[i]), free(e->rinfo_buf[i]);
    free(e->feed_idx); free(e->feed_row);
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
    e->async = cfg->async_scheduling < 0 ? strcmp(r->backend->name, "cuda") == 0
                                         : cfg->async_scheduling != 0;
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
        !ALLOC(e->order_buf[0], e->S) || !ALLOC(e->order_buf[1], e->S) ||
        !ALLOC(e->rinfo_buf[0], e->R) || !ALLOC(e->rinfo_buf[1], e->R) ||
        !ALLOC(e->feed_idx, e->S) || !ALLOC(e->feed_row, e->S) || !ALLOC(e->rows, e->R) ||
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
    e->num_unfinished++;
    e->in_compute_logits = 1;
    while (req->state != REQ_FINISHED) {
        int n;
        if ((s = engine_step(e, 1, &n, err))) break;
    }
    e->in_compute_logits = 0;
    e->last_step_end = 0;         /* the user's next step does not count this call */
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
void engine_stats_add_binding_time(Engine *e, double seconds)
{
    e->stats.time_binding_s += seconds;
}
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
