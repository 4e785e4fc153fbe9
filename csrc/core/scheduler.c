/* scheduler.c — continuous batching with chunked prefill, FCFS admission,
 * prefix-cache matching at admission and preemption by recompute (see
 * scheduler.h for the policy). */
#include "scheduler.h"

#include <stdlib.h>
#include <string.h>

typedef struct SeqPlan {
    int seq, start, len, samples, lp_from, lp_to, need, cow;
} SeqPlan;

static Status grow_ptrs(Request ***a, int *cap, int want, Error *err)
{
    if (want <= *cap) return GPT2_OK;
    int c = GPT2_MAX(want, *cap ? 2 * *cap : 16);
    Request **p = realloc(*a, (size_t)c * sizeof *p);
    if (!p) return error_set(err, GPT2_ERR_NOMEM, "scheduler: out of memory");
    *a = p;
    *cap = c;
    return GPT2_OK;
}

Status scheduler_init(Scheduler *s, const SchedulerConfig *cfg, Error *err)
{
    memset(s, 0, sizeof *s);
    if (cfg->max_num_seqs < 1 || cfg->max_num_batched_tokens < 1 || cfg->max_logits_rows < 1)
        return error_set(err, GPT2_ERR_VALUE, "scheduler: max_num_seqs (%d), "
                         "max_num_batched_tokens (%d) and max_logits_rows (%d) must be >= 1",
                         cfg->max_num_seqs, cfg->max_num_batched_tokens, cfg->max_logits_rows);
    s->cfg = *cfg;
    return GPT2_OK;
}

void scheduler_free(Scheduler *s)
{
    if (!s) return;
    free(s->waiting); free(s->running); free(s->entries); free(s->cow_src); free(s->cow_dst);
    memset(s, 0, sizeof *s);
}

Status scheduler_add(Scheduler *s, Request *req, Error *err)
{
    Status st = grow_ptrs(&s->waiting, &s->cap_waiting, s->n_waiting + 1, err);
    if (st) return st;
    /* reserve running room now so that admission never allocates */
    st = grow_ptrs(&s->running, &s->cap_running, s->n_running + s->n_waiting + 1, err);
    if (st) return st;
    req->state = REQ_WAITING;
    s->waiting[s->n_waiting++] = req;
    return GPT2_OK;
}

static int remove_ptr(Request **a, int *n, const Request *req)
{
    for (int i = 0; i < *n; i++)
        if (a[i] == req) {
            memmove(a + i, a + i + 1, (size_t)(*n - i - 1) * sizeof *a);
            (*n)--;
            return 1;
        }
    return 0;
}

static void release_all(BlockManager *bm, Request *req)
{
    for (int k = 0; k < req->n; k++) {
        block_manager_release_table(bm, &req->seqs[k].blocks);
        req->seqs[k].num_computed = 0;
    }
}

void scheduler_remove(Scheduler *s, BlockManager *bm, Request *req)
{
    if (!remove_ptr(s->running, &s->n_running, req)) remove_ptr(s->waiting, &s->n_waiting, req);
    release_all(bm, req);
}

int scheduler_seq_target(const Request *req, int seq)
{
    return req->shared ? req->num_prompt : req->seqs[seq].num_tokens + req->seqs[seq].pending;
}

int64_t scheduler_max_blocks(int num_prompt, int max_tokens, int n, int block_size)
{
    int64_t shared = num_prompt / block_size;
    int64_t total = ((int64_t)num_prompt + max_tokens + block_size - 1) / block_size;
    return shared + (int64_t)n * (total - shared);
}

static int seq_samples(const Request *req, int k)
{
    if (req->compute_logits) return 0;
    if (req->shared) return req->seqs[k].num_tokens == req->num_prompt ? req->num_live : 0;
    return 1;
}

/* Logits rows of running tokens [start, start+len) of sequence k. */
static int plan_rows(const Request *req, SeqPlan *p, int target)
{
    int end = p->start + p->len, a = 0, b = 0;
    if (req->compute_logits) {
        a = p->start;
        b = end;
    } else if (req->params.prompt_logprobs >= 0) {
        a = GPT2_MAX(p->start, req->prompt_lp_filled - 1);
        b = GPT2_MIN(end, req->num_prompt - 1);
        if (b < a) b = a;
    }
    p->lp_from = a;
    p->lp_to = b;
    return (b - a) + (end == target ? p->samples : 0);
}

/* Plans every schedulable sequence of req within the budgets (decremented);
 * returns the number of planned sequences and their total block need. */
static int plan_request(const Scheduler *s, const BlockManager *bm, const Request *req,
                        int *tok_budget, int *row_budget, int *seq_budget, SeqPlan *plan,
                        int *total_need)
{
    int np = 0, bs = bm->block_size;
    *total_need = 0;
    for (int k = 0; k < req->n; k++) {
        const Sequence *sq = &req->seqs[k];
        if (sq->finished || (req->shared && k != req->leader)) continue;
        int target = scheduler_seq_target(req, k), pending = target - sq->num_computed;
        if (pending <= 0) continue;
        if (*tok_budget <= 0 || *row_budget <= 0 || *seq_budget <= 0) break;
        SeqPlan p = {.seq = k, .start = sq->num_computed, .samples = seq_samples(req, k)};
        p.len = GPT2_MIN(pending, *tok_budget);
        int rows = plan_rows(req, &p, target);
        while (p.len > 0 && rows > *row_budget) {
            int over = rows - *row_budget;
            p.len -= over < p.len ? over : p.len;
            rows = p.len > 0 ? plan_rows(req, &p, target) : 0;
        }
        if (p.len <= 0) continue;
        p.need = block_manager_blocks_needed(bm, &sq->blocks, p.start + p.len);
        if (p.start % bs != 0 && p.start / bs < sq->blocks.n &&
            bm->ref[sq->blocks.ids[p.start / bs]] > 1) {
            p.cow = 1;
            p.need++;
        }
        *tok_budget -= p.len;
        *row_budget -= rows;
        *seq_budget -= 1;
        *total_need += p.need;
        plan[np++] = p;
    }
    (void)s;
    return np;
}

static Status push_entry(Scheduler *s, SchedEntry e, Error *err)
{
    if (s->n_entries == s->cap_entries) {
        int c = s->cap_entries ? 2 * s->cap_entries : 64;
        SchedEntry *p = realloc(s->entries, (size_t)c * sizeof *p);
        if (!p) return error_set(err, GPT2_ERR_NOMEM, "scheduler: out of memory");
        s->entries = p;
        s->cap_entries = c;
    }
    s->entries[s->n_entries++] = e;
    return GPT2_OK;
}

static Status push_cow(Scheduler *s, int32_t src, int32_t dst, Error *err)
{
    if (s->n_cow == s->cap_cow) {
        int c = s->cap_cow ? 2 * s->cap_cow : 16;
        int32_t *a = realloc(s->cow_src, (size_t)c * sizeof *a);
        if (!a) return error_set(err, GPT2_ERR_NOMEM, "scheduler: out of memory");
        s->cow_src = a;
        int32_t *b = realloc(s->cow_dst, (size_t)c * sizeof *b);
        if (!b) return error_set(err, GPT2_ERR_NOMEM, "scheduler: out of memory");
        s->cow_dst = b;
        s->cap_cow = c;
    }
    s->cow_src[s->n_cow] = src;
    s->cow_dst[s->n_cow++] = dst;
    return GPT2_OK;
}

/* Allocates the planned blocks (copy-on-write first) and records the entries. */
static Status commit_plan(Scheduler *s, BlockManager *bm, Request *req, const SeqPlan *plan,
                          int np, Error *err)
{
    for (int i = 0; i < np; i++) {
        const SeqPlan *p = &plan[i];
        Sequence *sq = &req->seqs[p->seq];
        Status st;
        if (p->cow) {
            int32_t src = -1, dst = -1;
            int copied = 0;
            st = block_manager_cow(bm, &sq->blocks, p->start / bm->block_size, &src, &dst,
                                   &copied, err);
            if (st) return error_prefix(err, "scheduler (internal)");
            if (copied && (st = push_cow(s, src, dst, err))) return st;
        }
        st = block_manager_grow(bm, &sq->blocks, p->start + p->len, err);
        if (st) return error_prefix(err, "scheduler (internal)");
        SchedEntry e = {req, p->seq, p->start, p->len, 0, p->lp_from, p->lp_to};
        e.num_samples = p->start + p->len == scheduler_seq_target(req, p->seq) ? p->samples : 0;
        if ((st = push_entry(s, e, err))) return st;
        s->num_tokens += p->len;
        s->num_rows += (p->lp_to - p->lp_from) + e.num_samples;
    }
    return GPT2_OK;
}

static Status preempt(Scheduler *s, BlockManager *bm, Request *victim, Error *err)
{
    remove_ptr(s->running, &s->n_running, victim);
    release_all(bm, victim);
    victim->shared = 0;
    victim->state = REQ_WAITING;
    Status st = grow_ptrs(&s->waiting, &s->cap_waiting, s->n_waiting + 1, err);
    if (st) return st;
    memmove(s->waiting + 1, s->waiting, (size_t)s->n_waiting * sizeof *s->waiting);
    s->waiting[0] = victim;
    s->n_waiting++;
    s->num_preemptions++;
    s->num_preempted_step++;
    return GPT2_OK;
}

/* 1 if every live sequence of a running request has exactly one token to run. */
static int is_decode(const Request *req)
{
    if (req->shared) return 0;
    for (int k = 0; k < req->n; k++) {
        const Sequence *sq = &req->seqs[k];
        if (!sq->finished && sq->num_tokens + sq->pending - sq->num_computed != 1) return 0;
    }
    return 1;
}

/* Sets up a request leaving the waiting queue: shared phase and prefix hits.
 * Returns the hit tokens (already in the leader's table). */
static int admit_prepare(const Scheduler *s, BlockManager *bm, Request *req)
{
    req->shared = 0;
    req->leader = 0;
    for (int k = 0; k < req->n; k++)
        if (!req->seqs[k].finished) { req->leader = k; break; }
    req->shared = req->num_live >= 2;
    if (!s->cfg.enable_prefix_caching || req->no_prefix_hits) return 0;
    Sequence *sq = &req->seqs[req->leader];
    int target = scheduler_seq_target(req, req->leader);
    int hits = block_manager_match_prefix(bm, &sq->blocks, sq->tokens, target - 1);
    sq->num_computed = hits * bm->block_size;
    return sq->num_computed;
}

Status scheduler_schedule(Scheduler *s, BlockManager *bm, Error *err)
{
    s->n_entries = s->n_cow = s->num_tokens = s->num_rows = s->num_preempted_step = 0;
    int tok = s->cfg.max_num_batched_tokens, rows = s->cfg.max_logits_rows,
        seqs = s->cfg.max_num_seqs;
    SeqPlan stack_plan[64], *plan = stack_plan;
    int max_n = 1;
    for (int i = 0; i < s->n_running; i++) max_n = GPT2_MAX(max_n, s->running[i]->n);
    for (int i = 0; i < s->n_waiting; i++) max_n = GPT2_MAX(max_n, s->waiting[i]->n);
    if (max_n > 64 && !(plan = malloc((size_t)max_n * sizeof *plan)))
        return error_set(err, GPT2_ERR_NOMEM, "scheduler: out of memory");
    Status st = GPT2_OK;

    /* 1. running requests: decodes, then prefill chunks; admission order in each */
    s->step_id++;
    int stop = 0;
    for (int pass = 0; pass < 2 && !stop; pass++) {
        for (int i = 0; i < s->n_running && !stop; i++) {
            Request *req = s->running[i];
            if (req->sched_stamp == s->step_id || is_decode(req) != (pass == 0)) continue;
            int t0 = tok, r0 = rows, s0 = seqs, need;
            int np = plan_request(s, bm, req, &tok, &rows, &seqs, plan, &need);
            if (np == 0) continue;
            while (block_manager_num_free(bm) < need) {
                Request *victim = NULL;   /* newest request not scheduled in this step */
                for (int j = s->n_running - 1; j >= 0 && !victim; j--)
                    if (s->running[j]->sched_stamp != s->step_id) victim = s->running[j];
                if ((st = preempt(s, bm, victim, err))) goto done;
                if (victim == req) { stop = 1; break; }
            }
            if (stop) { tok = t0; rows = r0; seqs = s0; break; }
            if ((st = commit_plan(s, bm, req, plan, np, err))) goto done;
            req->sched_stamp = s->step_id;
            req->ever_scheduled = 1;
            while (s->running[i] != req) i--;     /* preemptions may have shifted it */
        }
    }

    /* 2. waiting requests, FCFS; none in a step that preempted */
    while (s->n_waiting > 0 && s->num_preempted_step == 0 && tok > 0 && rows > 0 && seqs > 0) {
        Request *req = s->waiting[0];
        int hit = admit_prepare(s, bm, req);
        int t0 = tok, r0 = rows, s0 = seqs, need;
        int np = plan_request(s, bm, req, &tok, &rows, &seqs, plan, &need);
        /* keep a small watermark for the running requests' growth (less preemption
         * churn), unless nothing runs: then anything that fits is admitted */
        int watermark = s->n_running > 0 ? GPT2_MAX(1, bm->num_blocks / 100) : 0;
        if (np == 0 || block_manager_num_free(bm) < need + watermark) {
            release_all(bm, req);
            req->shared = 0;
            tok = t0; rows = r0; seqs = s0;
            break;
        }
        memmove(s->waiting, s->waiting + 1, (size_t)(s->n_waiting - 1) * sizeof *s->waiting);
        s->n_waiting--;
        s->running[s->n_running++] = req;   /* room reserved by scheduler_add */
        req->state = REQ_RUNNING;
        if (s->cfg.enable_prefix_caching && !req->no_prefix_hits) {
            s->prefix_queries += scheduler_seq_target(req, req->leader);
            s->prefix_hits += hit;
        }
        if (!req->ever_scheduled) req->num_cached_tokens = hit;
        req->ever_scheduled = 1;
        req->sched_stamp = s->step_id;
        if ((st = commit_plan(s, bm, req, plan, np, err))) goto done;
    }
done:
    if (plan != stack_plan) free(plan);
    return st;
}
