/* engine_step.c — the step loop (engine.h): schedule -> pack a StepInput
 * (decodes first) -> runner_launch -> SamplingRows + TokenAdjusts ->
 * runner_sample_launch -> wait -> commit (computed counts, forks, prefix cache)
 * -> apply rows (append tokens, incremental detokenize, stop checks).
 *
 * Async scheduling (engine_step_async): a step may be left in flight, its
 * commit done with each sampled sequence's coming token marked pending; the
 * next call schedules with those tokens counted, launches with them fed from
 * the device (StepInput feeds), and only then waits for the previous step and
 * applies its rows. A sequence that stopped on a token in that step has run one
 * step too many: its row is skipped, its request kept until that step is done.
 *
 * Choices worth knowing:
 *   - a finished (or aborted) request is reported once by engine_step and its
 *     memory released at the start of the following step (or engine_destroy),
 *     unless the step in flight still refers to it;
 *   - several stop strings in one step: the earliest match in the text wins
 *     (vLLM takes the first in list order).
 */
#define _POSIX_C_SOURCE 200809L
#include "engine.h"

#include <limits.h>
#include <string.h>

#include "engine_impl.h"

/* ---- one step: pack, launch, commit, finish ---- */

/* Packs the scheduled entries (decodes first) into e's step buffers. A token the
 * host does not have yet (Sequence.pending) becomes a feed: the device copies it
 * from the sampler output of the step in flight. */
static Status pack_step(Engine *e, StepInput *in, Error *err)
{
    const Scheduler *s = &e->sched;
    int ns = 0, nd = 0, nf = 0;
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
            if (pos < sq->num_tokens) {
                e->input_ids[T] = sq->tokens[pos];
            } else if (sq->pending && pos == sq->num_tokens) {
                e->input_ids[T] = 0;
                e->feed_idx[nf] = T;
                e->feed_row[nf++] = sq->pending_row;
            } else {
                return error_set(err, GPT2_ERR_INTERNAL, "step input past the tokens of %s",
                                 req->id);
            }
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
                      .logits_indices = e->logits_idx, .num_feeds = nf,
                      .feed_index = e->feed_idx, .feed_row = e->feed_row};
    return GPT2_OK;
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

/* Adds the time since *t to *acc and moves *t to now. */
static void lap(double *t, double *acc)
{
    double n = now_s();
    *acc += n - *t;
    *t = n;
}

/* Launches the scheduled step: pack, forward (or graph replay), logits-only
 * rows to the host, sampling rows, the sampler queued behind the forward. */
static Status launch_step(Engine *e, StepRun *st, double *t, Error *err)
{
    EngineStats *stats = &e->stats;
    ModelRunner *r = e->runner;
    *st = (StepRun){.ticket = -1};
    st->order = e->order = e->order_buf[e->buf_next];
    st->rinfo = e->rinfo = e->rinfo_buf[e->buf_next];
    e->buf_next ^= 1;
    StepInput in;
    Status s;
    if ((s = pack_step(e, &in, err)) || (s = runner_prepare(r, &in, err))) return s;
    lap(t, &stats->time_prepare_s);
    if ((s = runner_launch(r, err))) return s;
    stats->num_steps++;
    lap(t, &stats->time_forward_s);
    st->t_launch = *t;
    st->id = e->launch_seq = e->launch_seq == INT_MAX ? 1 : e->launch_seq + 1;
    st->ns = in.num_seqs;
    st->R = in.num_logits;
    for (int i = 0; i < st->ns; i++) st->order[i].req->inflight_stamp = st->id;

    /* logits-only rows (compute_logits runs alone: they are rows [0, n)) */
    int R = st->R, n_logit_rows = 0;
    while (n_logit_rows < R && st->rinfo[n_logit_rows].kind == ROW_LOGITS) n_logit_rows++;
    st->n_logit_rows = n_logit_rows;
    if (n_logit_rows > 0) {
        const RowInfo *ri = &st->rinfo[0];
        if ((s = runner_logits_to_host(r, n_logit_rows,
                                       ri->req->logits_out + (size_t)ri->pos * e->vocab, err)))
            return s;
    }
    /* sampling rows */
    int max_lp = 0;
    e->adj.n = 0;
    for (int i = n_logit_rows; i < R; i++) {
        const RowInfo *ri = &st->rinfo[i];
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
                                 sq->num_tokens + sq->pending - req->num_prompt, sq->seed,
                                 &e->adj, row, err);
            if (s) return s;
        }
        max_lp = GPT2_MAX(max_lp, row->num_logprobs);
    }
    st->n_samp = R - n_logit_rows;
    st->max_lp = max_lp;
    if (st->n_samp > 0) {
        if (n_logit_rows > 0)
            return error_set(err, GPT2_ERR_INTERNAL, "compute_logits rows mixed with others");
        if ((s = runner_sample_launch(r, st->n_samp, e->rows, e->adj.a, e->adj.n, max_lp,
                                      &st->ticket, err)))
            return s;
    }
    st->active = 1;
    lap(t, &stats->time_sample_setup_s);
    return GPT2_OK;
}

/* Advances the step's sequences (their K/V are computed, or queued before any
 * later step), forks finished shared prompts, fills the prefix cache. With
 * `pending` (async: the tokens are not on the host yet) each sampled sequence
 * that will not finish by length gets its coming token marked Sequence.pending,
 * so that the next step can be scheduled and launched before it arrives. */
static Status commit_step(Engine *e, const StepRun *st, int pending, Error *err)
{
    for (int i = 0; i < st->ns; i++) {
        const SchedEntry *en = &st->order[i];
        Request *req = en->req;
        Sequence *sq = &req->seqs[en->seq];
        if (req->state == REQ_FINISHED || sq->finished) continue;
        sq->num_computed = en->start + en->len;
        if (!req->first_scheduled_time) req->first_scheduled_time = st->t_launch;
        Status s;
        if (req->shared && en->seq == req->leader && sq->num_computed == req->num_prompt &&
            (s = fork_shared(e, req, err)))
            return s;
        block_manager_cache_full(&e->bm, &sq->blocks, sq->tokens, sq->num_computed);
        if (req->compute_logits && sq->num_computed == req->num_prompt) {
            e->stats.prompt_tokens += req->num_prompt;
            request_finish(e, req, FINISH_LENGTH);
            req->reported_finished = 1;        /* internal: never reported */
            e->need_release = 1;
        }
    }
    for (int i = st->n_logit_rows; pending && i < st->R; i++) {
        const RowInfo *ri = &st->rinfo[i];
        Sequence *sq = &ri->req->seqs[ri->seq];
        if (ri->kind != ROW_SAMPLE || ri->req->state == REQ_FINISHED || sq->finished ||
            seq_finished_by_length(e, ri->req, sq->num_tokens + 1))
            continue;
        sq->pending = 1;
        sq->pending_row = i;
    }
    return GPT2_OK;
}

/* Waits for the step's sampler output (into e->s_*). */
static Status wait_step(Engine *e, StepRun *st, Error *err)
{
    st->active = 0;
    if (st->ticket < 0) return GPT2_OK;
    Status s = ensure_top_cap(e, st->n_samp, st->max_lp, err);
    SamplerOutput so = {e->s_tokens, e->s_logprobs, e->s_ranks,
                        st->max_lp ? e->s_top_ids : NULL, st->max_lp ? e->s_top_lps : NULL};
    Status w = runner_sample_wait(e->runner, st->ticket, s ? &(SamplerOutput){0} : &so, err);
    return s ? s : w;
}

/* Applies the step's rows: prompt logprobs, then sampled tokens (seq_append:
 * logprobs, stop checks, text), each replacing its Sequence.pending mark. */
static Status apply_rows(Engine *e, const StepRun *st, Error *err)
{
    const int max_lp = st->max_lp;
    for (int i = 0; i < st->n_samp; i++) {
        const RowInfo *ri = &st->rinfo[i];
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
        Sequence *sq = &req->seqs[ri->seq];
        if (sq->pending && sq->pending_row == i) sq->pending = 0;
        if (req->state == REQ_FINISHED || sq->finished) continue;
        if (!req->ever_sampled) {
            req->ever_sampled = 1;
            req->first_token_time = st->t_launch;
            e->stats.prompt_tokens += req->num_prompt;
        }
        Status s = seq_append(e, req, sq, i, max_lp, err);
        if (s) return s;
        req->made_progress = e->step_seq;
    }
    return GPT2_OK;
}

/* A launched step whose sampling failed: its sequences give back the step
 * (pending marks cleared, computed counts as before it) so that the next one
 * runs it again, as a synchronous step that failed would. */
static void undo_step(const StepRun *st)
{
    for (int i = 0; i < st->ns; i++) {
        const SchedEntry *en = &st->order[i];
        Sequence *sq = &en->req->seqs[en->seq];
        if (sq->num_computed > en->start) sq->num_computed = en->start;
    }
    for (int i = st->n_logit_rows; i < st->R; i++) {
        const RowInfo *ri = &st->rinfo[i];
        ri->req->seqs[ri->seq].pending = 0;
    }
}

/* Finishes the step left in flight: wait, apply its rows. */
static Status finish_inflight(Engine *e, double *t, Error *err)
{
    StepRun *st = &e->inflight;
    if (!st->active) return GPT2_OK;
    Status s = wait_step(e, st, err);
    lap(t, &e->stats.time_sample_s);
    if (s) {
        undo_step(st);
        return s;
    }
    s = apply_rows(e, st, err);
    lap(t, &e->stats.time_update_s);
    return s;
}

/* Frees the requests whose finish a step reported, except those the step in
 * flight still refers to. */
static void release_reported(Engine *e)
{
    if (!e->need_release) return;
    int w = 0, kept = 0;
    for (int i = 0; i < e->n_reqs; i++) {
        Request *req = e->reqs[i];
        int done = req->state == REQ_FINISHED && req->reported_finished;
        if (done && e->inflight.active && req->inflight_stamp == e->inflight.id) kept = 1;
        else if (done) { request_free(req); continue; }
        e->reqs[w++] = req;
    }
    e->n_reqs = w;
    e->need_release = kept;
}

/* The scheduler's decision for the next step; *none: nothing to run. */
static Status schedule(Engine *e, int *none, Error *err)
{
    Status s = scheduler_schedule(&e->sched, &e->bm, err);
    if (s) return s;
    e->stats.num_preemptions = e->sched.num_preemptions;
    e->stats.prefix_cache_queries = e->sched.prefix_queries;
    e->stats.prefix_cache_hits = e->sched.prefix_hits;
    *none = e->sched.n_entries == 0;
    if (*none && !e->inflight.active && engine_has_unfinished(e) &&
        e->sched.num_preempted_step == 0)
        return error_set(err, GPT2_ERR_INTERNAL, "scheduler could not run any of %d "
                         "unfinished requests (%d free blocks of %d)",
                         engine_num_unfinished(e), block_manager_num_free(&e->bm),
                         e->bm.num_blocks);
    return GPT2_OK;
}

/* Drops scheduled entries of sequences that finished since scheduling. */
static void drop_finished_entries(Engine *e)
{
    Scheduler *s = &e->sched;
    int w = 0;
    for (int i = 0; i < s->n_entries; i++) {
        const SchedEntry *en = &s->entries[i];
        if (en->req->state == REQ_FINISHED || en->req->seqs[en->seq].finished) continue;
        s->entries[w++] = *en;
    }
    s->n_entries = w;
}

/* 1 when the scheduled step may launch before the step in flight is finished:
 * nothing in it needs that step's tokens on the host. */
static int can_launch_ahead(const Engine *e)
{
    const Scheduler *s = &e->sched;
    if (s->n_cow > 0 || s->num_preempted_step > 0) return 0;
    for (int i = 0; i < s->n_entries; i++) {
        const Request *req = s->entries[i].req;
        if (req->seqs[s->entries[i].seq].pending && sampler_penalties_on(&req->params))
            return 0;
    }
    return 1;
}

/* 1 when a launched step may stay in flight: its sampling cannot fail. */
static int can_stay_in_flight(const Engine *e, const StepRun *st)
{
    if (!e->async || e->in_compute_logits || st->n_logit_rows > 0) return 0;
    for (int i = 0; i < st->R; i++)
        if (st->rinfo[i].req->may_mask_all) return 0;
    return 1;
}

/* One step. async: the previous step may still be in flight (it is finished
 * here, after this one launched when nothing in this one needs its tokens) and
 * this one may be left in flight. */
static Status step_impl(Engine *e, int async, double t, Error *err)
{
    EngineStats *st = &e->stats;
    release_reported(e);
    e->step_seq = e->step_seq == INT_MAX ? 1 : e->step_seq + 1;   /* older made_progress
                                                                      * values stop matching */
    Status s;
    int none;
    if (!async && (s = finish_inflight(e, &t, err))) return s;
    if ((s = schedule(e, &none, err))) return s;
    int ahead = e->inflight.active && !none && can_launch_ahead(e);
    if (e->inflight.active && !ahead) {
        if ((s = finish_inflight(e, &t, err))) return s;
        drop_finished_entries(e);
        none = e->sched.n_entries == 0;
    }
    if (none) {
        lap(&t, &st->time_schedule_s);
        return GPT2_OK;
    }
    ModelRunner *r = e->runner;
    if (e->sched.n_cow > 0 &&
        (s = runner_copy_blocks(r, e->sched.cow_src, e->sched.cow_dst, e->sched.n_cow, err)))
        return s;
    lap(&t, &st->time_schedule_s);
    StepRun next;
    s = launch_step(e, &next, &t, err);   /* a failed launch leaves nothing to wait for */
    if (ahead) {
        st->num_steps_ahead += next.active;
        Status f = finish_inflight(e, &t, err);
        if (f && next.active) {           /* it was fed that step's tokens: give it back */
            Error ignored = {0};
            wait_step(e, &next, &ignored);
            undo_step(&next);
        }
        if (f) return f;
    }
    if (s) return s;
    if (async && can_stay_in_flight(e, &next)) {
        e->inflight = next;
        return commit_step(e, &e->inflight, 1, err);
    }
    s = wait_step(e, &next, err);
    lap(&t, &st->time_sample_s);
    if (s) return s;
    if ((s = commit_step(e, &next, 0, err)) || (s = apply_rows(e, &next, err))) return s;
    lap(&t, &st->time_update_s);
    return GPT2_OK;
}

static Status report(Engine *e, int finished_only, int *num_outputs, double t, Error *err)
{
    e->finished_only = finished_only;
    Status s = collect_outputs(e, err);
    if (!s) *num_outputs = e->n_outputs;
    lap(&t, &e->stats.time_outputs_s);
    e->last_step_end = now_s();
    return s;
}

static double step_begin(Engine *e)
{
    double t0 = now_s();
    if (e->last_step_end > 0) e->stats.time_between_steps_s += t0 - e->last_step_end;
    e->n_outputs = 0;
    return t0;
}

Status engine_step(Engine *e, int finished_only, int *num_outputs, Error *err)
{
    *num_outputs = 0;
    double t = step_begin(e);
    e->finished_only = finished_only;
    Status s = step_impl(e, 0, t, err);
    if (s) {
        e->last_step_end = now_s();
        return s;
    }
    return report(e, finished_only, num_outputs, now_s(), err);
}

Status engine_step_async(Engine *e, Error *err)
{
    double t = step_begin(e);
    Status s = step_impl(e, e->async, t, err);
    e->last_step_end = now_s();
    return s;
}

Status engine_step_async_end(Engine *e, int finished_only, int *num_outputs, Error *err)
{
    if (num_outputs) *num_outputs = 0;
    double t = step_begin(e);
    Status s = finish_inflight(e, &t, err);
    if (s || !num_outputs) {
        e->last_step_end = now_s();
        return s;
    }
    return report(e, finished_only, num_outputs, t, err);
}

int engine_async_scheduling(const Engine *e) { return e->async; }
int engine_has_unreported(const Engine *e) { return e->have_unreported; }

