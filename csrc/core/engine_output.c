/* engine_output.c — what a step does with its sampled tokens: append to the
 * sequence, incremental detokenizing, stop tokens and stop strings (with the
 * withheld tail while a stop string may still be forming), logprob storage, and
 * the RequestOutputC views engine_step reports. */
#define _POSIX_C_SOURCE 200809L
#include "engine_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

/* Feeds output tokens [num_detok, upto) of a sequence to its detokenizer (ids
 * past the tokenizer's vocabulary, possible with small random models, add no text). */
Status seq_catch_up_text(const Engine *e, const Request *req, Sequence *sq, int upto,
                         Error *err)
{
    struct SeqText *x = sq->text;
    for (; x->num_detok < upto; x->num_detok++) {
        int32_t t = sq->tokens[req->num_prompt + x->num_detok];
        if (t >= e->tok_vocab) continue;
        Status s = detokenizer_push(&x->d, t, NULL, err);
        if (s) return s;
    }
    return GPT2_OK;
}

/* Appends one sampled token (row i of the sampler output) to a sequence, then
 * checks every stop condition (vLLM v1 order). The text is brought up to date
 * now only when it matters now: stop strings, or the sequence finishing. */
Status seq_append(Engine *e, Request *req, Sequence *sq, int i, int max_lp, Error *err)
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
    if (seq_finished_by_length(e, req, sq->num_tokens)) {
        fin = FINISH_LENGTH;
    } else if (num_out >= p->min_tokens) {
        if (!p->ignore_eos && t == e->eos_id) fin = FINISH_STOP;
        else if (is_stop_token(p, t)) { fin = FINISH_STOP; kind = 1; }
    }
    if (p->n_stop == 0 && fin == FINISH_NONE) return GPT2_OK;   /* text: later */
    Detokenizer *d = &sq->text->d;
    Status s = seq_catch_up_text(e, req, sq, k, err);     /* tokens before this one */
    if (s) return s;
    size_t old_len = d->text_len;
    int skip_text = fin == FINISH_STOP && !p->include_stop_str_in_output;
    if (skip_text) sq->text->num_detok = num_out;         /* the stop token adds no text */
    else if ((s = seq_catch_up_text(e, req, sq, num_out, err))) return s;
    if (fin != FINISH_NONE && (s = detokenizer_flush(d, NULL, err))) return s;
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

Status ensure_top_cap(Engine *e, int rows, int max_lp, Error *err)
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

/* Fills the RequestOutputC views of this step's reported requests. */
Status collect_outputs(Engine *e, Error *err)
{
    e->n_outputs = 0;
    if (e->in_compute_logits) return GPT2_OK;
    if (e->finished_only && !e->have_unreported) return GPT2_OK;
    for (int i = 0; i < e->n_reqs; i++) {
        Request *req = e->reqs[i];
        int finished_unreported = req->state == REQ_FINISHED && !req->reported_finished;
        if (req->made_progress != e->step_seq && !finished_unreported) continue;
        if (req->compute_logits || (e->finished_only && req->state != REQ_FINISHED)) continue;
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
            Status s = seq_catch_up_text(e, req, sq, sq->num_tokens - req->num_prompt, err);
            if (s) return s;
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
        if (o->finished) {
            req->reported_finished = 1;
            e->need_release = 1;
        }
        e->outputs[e->n_outputs++] = o;
    }
    e->have_unreported = 0;             /* every finished request was reported above */
    return GPT2_OK;
}

const RequestOutputC *engine_output(const Engine *e, int i)
{
    if (i < 0 || i >= e->n_outputs) return NULL;
    return e->outputs[i];
}

/* ---- compute_logits ---- */
