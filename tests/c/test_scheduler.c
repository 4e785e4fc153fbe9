/* test_scheduler.c — plain C unit tests of scheduler.c over block_manager.c:
 * token budget and chunked prefill, decodes before prefills, max_num_seqs,
 * logits-row cap, FCFS head-of-line, preemption order (most recently admitted
 * first) and resume by recompute, prefix-cache hits at admission, the shared
 * prompt of n > 1 requests. A tiny "engine" (sim_step) advances the state the
 * way engine.c does. Prints "N passed, M failed". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler.h"

static int passed, failed;
#define CHECK(cond) do { if (cond) passed++; else { failed++; \
    fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); } } while (0)

static Request *req_new(int id, int P, int max_tokens, int n, int bs)
{
    Request *r = calloc(1, sizeof *r);
    r->id = malloc(16);
    snprintf(r->id, 16, "r%d", id);
    r->num_prompt = P;
    r->n = r->num_live = n;
    sampling_params_default(&r->params);
    r->params.max_tokens = max_tokens;
    r->params.n = n;
    r->arrival_index = (uint64_t)id;
    r->seqs = calloc((size_t)n, sizeof *r->seqs);
    for (int k = 0; k < n; k++) {
        Sequence *sq = &r->seqs[k];
        sq->index = k;
        sq->cap_tokens = P + max_tokens;
        sq->tokens = malloc((size_t)sq->cap_tokens * sizeof *sq->tokens);
        for (int i = 0; i < P; i++) sq->tokens[i] = 1000 * id + i;
        sq->num_tokens = P;
        block_table_reserve(&sq->blocks, (P + max_tokens + bs - 1) / bs, NULL);
    }
    return r;
}

static void req_free(Request *r)
{
    for (int k = 0; k < r->n; k++) {
        free(r->seqs[k].tokens);
        block_table_free(&r->seqs[k].blocks);
    }
    free(r->seqs);
    free(r->id);
    free(r);
}

/* Advances computed tokens and appends token 5 to every sampled sequence; a
 * sequence finishes at max_tokens. Returns the step's token count. */
static int sim_step(Scheduler *s, BlockManager *bm)
{
    Error err = {0};
    if (scheduler_schedule(s, bm, &err) != GPT2_OK) {
        fprintf(stderr, "schedule: %s\n", err.msg);
        failed++;
        return -1;
    }
    int total = 0;
    for (int i = 0; i < s->n_entries; i++) {   /* invariants of every plan */
        SchedEntry *e = &s->entries[i];
        if (e->req->state != REQ_RUNNING) { failed++; fprintf(stderr, "FAIL entry of a preempted request\n"); }
        if (e->start != e->req->seqs[e->seq].num_computed) { failed++; fprintf(stderr, "FAIL start\n"); }
        if (e->req->seqs[e->seq].blocks.n * bm->block_size < e->start + e->len) {
            failed++; fprintf(stderr, "FAIL blocks do not cover the chunk\n");
        }
        total += e->len;
    }
    if (total != s->num_tokens || total > s->cfg.max_num_batched_tokens ||
        s->n_entries > s->cfg.max_num_seqs || s->num_rows > s->cfg.max_logits_rows) {
        failed++; fprintf(stderr, "FAIL budgets\n");
    }
    for (int i = 0; i < s->n_entries; i++) {
        SchedEntry *e = &s->entries[i];
        Request *r = e->req;
        Sequence *sq = &r->seqs[e->seq];
        sq->num_computed = e->start + e->len;
        block_manager_cache_full(bm, &sq->blocks, sq->tokens, sq->num_computed);
        if (r->shared && sq->num_computed == r->num_prompt) {
            for (int k = 0; k < r->n; k++)
                if (k != e->seq && !r->seqs[k].finished) {
                    block_manager_fork(bm, &r->seqs[k].blocks, &sq->blocks, NULL);
                    r->seqs[k].num_computed = r->num_prompt;
                }
            r->shared = 0;
        }
        if (e->num_samples == 0) continue;
        for (int k = 0; k < r->n; k++) {
            Sequence *t = &r->seqs[k];
            if (t->finished || (e->num_samples == 1 && k != e->seq)) continue;
            t->tokens[t->num_tokens++] = 5 + k;
            if (t->num_tokens - r->num_prompt >= r->params.max_tokens) {
                t->finished = 1;
                block_manager_release_table(bm, &t->blocks);
                if (--r->num_live == 0) {
                    scheduler_remove(s, bm, r);
                    r->state = REQ_FINISHED;
                }
            }
        }
    }
    return s->num_tokens;
}

static SchedEntry *entry_of(Scheduler *s, Request *r, int seq)
{
    for (int i = 0; i < s->n_entries; i++)
        if (s->entries[i].req == r && s->entries[i].seq == seq) return &s->entries[i];
    return NULL;
}

static void setup(Scheduler *s, BlockManager *bm, int blocks, int bs, int seqs, int tokens,
                  int rows, int caching)
{
    SchedulerConfig c = {seqs, tokens, rows, caching};
    scheduler_init(s, &c, NULL);
    block_manager_init(bm, blocks, bs, caching, NULL);
}

static void test_chunked_prefill(void)
{
    Scheduler s; BlockManager bm;
    setup(&s, &bm, 64, 4, 8, 16, 16, 0);
    Request *a = req_new(1, 25, 3, 1, 4), *b = req_new(2, 3, 3, 1, 4);
    scheduler_add(&s, a, NULL);
    scheduler_add(&s, b, NULL);
    CHECK(sim_step(&s, &bm) == 16);                   /* A's first chunk takes the budget */
    CHECK(s.n_entries == 1 && s.entries[0].req == a && s.entries[0].len == 16);
    CHECK(s.entries[0].num_samples == 0);
    CHECK(a->seqs[0].blocks.n == 4);
    CHECK(sim_step(&s, &bm) == 12);                   /* A's last 9 + B's 3 in one step */
    SchedEntry *ea = entry_of(&s, a, 0), *eb = entry_of(&s, b, 0);
    CHECK(ea && ea->start == 16 && ea->len == 9 && ea->num_samples == 1);
    CHECK(eb && eb->start == 0 && eb->len == 3 && eb->num_samples == 1);
    CHECK(s.n_running == 2 && s.n_waiting == 0);
    CHECK(sim_step(&s, &bm) == 2);                    /* two decodes */
    CHECK(entry_of(&s, a, 0)->start == 25 && entry_of(&s, a, 0)->len == 1);
    /* a new long prompt shares the step with the decodes (decodes first) */
    Request *c = req_new(3, 30, 2, 1, 4);
    scheduler_add(&s, c, NULL);
    CHECK(sim_step(&s, &bm) == 16);
    CHECK(s.n_entries == 3 && s.entries[2].req == c && s.entries[2].len == 14);
    while (a->state != REQ_FINISHED || b->state != REQ_FINISHED || c->state != REQ_FINISHED)
        if (sim_step(&s, &bm) <= 0) break;
    CHECK(block_manager_num_free(&bm) == 64);
    CHECK(a->seqs[0].num_tokens == 28 && c->seqs[0].num_tokens == 32);
    req_free(a); req_free(b); req_free(c);
    scheduler_free(&s); block_manager_free(&bm);
}

static void test_seq_cap_and_fcfs(void)
{
    Scheduler s; BlockManager bm;
    setup(&s, &bm, 64, 4, 2, 100, 100, 0);
    Request *r[3];
    for (int i = 0; i < 3; i++) { r[i] = req_new(i, 4, 2, 1, 4); scheduler_add(&s, r[i], NULL); }
    sim_step(&s, &bm);
    CHECK(s.n_entries == 2 && s.n_waiting == 1 && s.waiting[0] == r[2]);   /* max_num_seqs */
    sim_step(&s, &bm);
    sim_step(&s, &bm);
    CHECK(r[0]->state == REQ_FINISHED && r[2]->state == REQ_RUNNING);
    while (r[2]->state != REQ_FINISHED) sim_step(&s, &bm);
    for (int i = 0; i < 3; i++) req_free(r[i]);
    scheduler_free(&s); block_manager_free(&bm);

    /* FCFS head-of-line: a big waiting head blocks a small later request */
    setup(&s, &bm, 6, 4, 8, 100, 100, 0);
    Request *run = req_new(0, 12, 2, 1, 4);           /* holds 3 blocks */
    scheduler_add(&s, run, NULL);
    sim_step(&s, &bm);
    Request *big = req_new(1, 16, 4, 1, 4), *small = req_new(2, 4, 1, 1, 4);
    scheduler_add(&s, big, NULL);
    scheduler_add(&s, small, NULL);
    sim_step(&s, &bm);
    CHECK(big->state == REQ_WAITING && small->state == REQ_WAITING);
    while (run->state != REQ_FINISHED) sim_step(&s, &bm);
    while (big->state != REQ_FINISHED || small->state != REQ_FINISHED) sim_step(&s, &bm);
    CHECK(block_manager_num_free(&bm) == 6);
    req_free(run); req_free(big); req_free(small);
    scheduler_free(&s); block_manager_free(&bm);
}

static void test_preemption(void)
{
    Scheduler s; BlockManager bm;
    /* 6 blocks of 4; three requests of 4-token prompts growing to 12 tokens */
    setup(&s, &bm, 6, 4, 8, 100, 100, 0);
    Request *r[3];
    for (int i = 0; i < 3; i++) { r[i] = req_new(i, 4, 8, 1, 4); scheduler_add(&s, r[i], NULL); }
    sim_step(&s, &bm);                               /* all admitted: 3 blocks */
    CHECK(s.n_running == 3);
    sim_step(&s, &bm);                               /* each needs a 2nd block: 6 used */
    CHECK(block_manager_num_free(&bm) == 0 && s.num_preemptions == 0);
    for (int i = 0; i < 4; i++) sim_step(&s, &bm);
    /* now each needs a 3rd block: the last admitted (r2) is preempted */
    CHECK(s.num_preemptions >= 1);
    CHECK(r[2]->state == REQ_WAITING && s.waiting[0] == r[2]);
    CHECK(r[2]->seqs[0].num_computed == 0 && r[2]->seqs[0].blocks.n == 0);
    CHECK(r[0]->state == REQ_RUNNING);
    int out2 = r[2]->seqs[0].num_tokens;
    CHECK(out2 > 4);                                 /* generated tokens are kept */
    int guard = 0;
    while ((r[0]->state != REQ_FINISHED || r[1]->state != REQ_FINISHED ||
            r[2]->state != REQ_FINISHED) && guard++ < 200)
        sim_step(&s, &bm);
    CHECK(guard < 200);
    CHECK(r[2]->seqs[0].num_tokens == 12);
    CHECK(block_manager_num_free(&bm) == 6);
    for (int i = 0; i < 3; i++) req_free(r[i]);
    scheduler_free(&s); block_manager_free(&bm);

    /* resume re-prefills prompt + output in one chunk */
    setup(&s, &bm, 4, 4, 8, 100, 100, 0);
    Request *a = req_new(0, 4, 8, 1, 4), *b = req_new(1, 4, 8, 1, 4);
    scheduler_add(&s, a, NULL);
    scheduler_add(&s, b, NULL);
    int saw_resume = 0;
    guard = 0;
    while ((a->state != REQ_FINISHED || b->state != REQ_FINISHED) && guard++ < 100) {
        sim_step(&s, &bm);
        SchedEntry *e = entry_of(&s, b, 0);
        if (e && e->start == 0 && e->len > 4) {
            saw_resume = 1;
            CHECK(e->num_samples == 1);
        }
    }
    CHECK(saw_resume && s.num_preemptions >= 1);
    CHECK(block_manager_num_free(&bm) == 4);
    req_free(a); req_free(b);
    scheduler_free(&s); block_manager_free(&bm);
}

static void test_rows_cap(void)
{
    Scheduler s; BlockManager bm;
    setup(&s, &bm, 64, 4, 8, 100, 5, 0);
    Request *a = req_new(0, 12, 2, 1, 4);
    a->params.prompt_logprobs = 1;
    a->prompt_lp_filled = 1;
    a->no_prefix_hits = 1;
    scheduler_add(&s, a, NULL);
    sim_step(&s, &bm);
    CHECK(s.n_entries == 1 && s.entries[0].len == 5 && s.num_rows == 5);
    CHECK(s.entries[0].lp_from == 0 && s.entries[0].lp_to == 5);
    a->prompt_lp_filled = 6;
    sim_step(&s, &bm);
    CHECK(s.entries[0].start == 5 && s.entries[0].len == 5 && s.num_rows == 5);
    a->prompt_lp_filled = 11;
    sim_step(&s, &bm);                               /* positions 10 (lp) and 11 (sample) */
    CHECK(s.entries[0].len == 2 && s.entries[0].lp_from == 10 && s.entries[0].lp_to == 11 &&
          s.entries[0].num_samples == 1 && s.num_rows == 2);
    while (a->state != REQ_FINISHED) sim_step(&s, &bm);
    req_free(a);
    scheduler_free(&s); block_manager_free(&bm);
}

static void test_prefix_hits(void)
{
    Scheduler s; BlockManager bm;
    setup(&s, &bm, 32, 4, 8, 100, 100, 1);
    Request *a = req_new(1, 10, 2, 1, 4);
    scheduler_add(&s, a, NULL);
    while (a->state != REQ_FINISHED) sim_step(&s, &bm);
    Request *b = req_new(1, 10, 2, 1, 4);             /* same prompt tokens */
    scheduler_add(&s, b, NULL);
    sim_step(&s, &bm);
    CHECK(b->num_cached_tokens == 8);
    CHECK(s.entries[0].start == 8 && s.entries[0].len == 2);
    CHECK(s.prefix_hits == 8 && s.prefix_queries == 20);
    while (b->state != REQ_FINISHED) sim_step(&s, &bm);
    /* the whole prompt cached: the last block is recomputed for its logits */
    Request *c = req_new(2, 8, 1, 1, 4);
    scheduler_add(&s, c, NULL);
    while (c->state != REQ_FINISHED) sim_step(&s, &bm);
    Request *d = req_new(2, 8, 1, 1, 4);
    scheduler_add(&s, d, NULL);
    sim_step(&s, &bm);
    CHECK(d->num_cached_tokens == 4 && s.entries[0].start == 4 && s.entries[0].len == 4);
    CHECK(block_manager_num_free(&bm) == 32);
    req_free(a); req_free(b); req_free(c); req_free(d);
    scheduler_free(&s); block_manager_free(&bm);
}

static void test_shared_prompt(void)
{
    Scheduler s; BlockManager bm;
    setup(&s, &bm, 32, 4, 8, 100, 100, 0);
    Request *a = req_new(0, 6, 3, 3, 4);
    scheduler_add(&s, a, NULL);
    sim_step(&s, &bm);
    CHECK(a->shared == 0);                            /* forked by sim_step */
    CHECK(s.n_entries == 1 && s.entries[0].len == 6 && s.entries[0].num_samples == 3);
    CHECK(bm.ref[a->seqs[0].blocks.ids[1]] == 3);     /* partial block shared by 3 */
    CHECK(block_manager_num_free(&bm) == 30);
    sim_step(&s, &bm);                               /* 3 decodes, 2 copy-on-write */
    CHECK(s.n_entries == 3 && s.n_cow == 2);
    CHECK(bm.ref[a->seqs[0].blocks.ids[0]] == 3);     /* full block still shared */
    CHECK(a->seqs[0].blocks.ids[1] != a->seqs[1].blocks.ids[1]);
    CHECK(block_manager_num_free(&bm) == 28);
    while (a->state != REQ_FINISHED) sim_step(&s, &bm);
    CHECK(block_manager_num_free(&bm) == 32);
    CHECK(scheduler_max_blocks(6, 3, 3, 4) == 1 + 3 * 2);
    req_free(a);
    scheduler_free(&s); block_manager_free(&bm);
}

static int rnd(uint64_t *x, int n)
{
    *x = *x * 6364136223846793005ULL + 1442695040888963407ULL;
    return (int)((*x >> 33) % (uint64_t)n);
}

/* Random workloads: every request finishes, ref counts always equal the table
 * entries of live sequences, and every block is free at the end. */
static void test_random(void)
{
    uint64_t x = 12345;
    for (int round = 0; round < 20; round++) {
#define RND(n) rnd(&x, n)
        int bs = 4 << RND(3), blocks = 12 + RND(40);
        Scheduler s; BlockManager bm;
        int max_seqs = 1 + RND(8), max_tok = 8 + RND(64), max_rows = 4 + RND(16);
        setup(&s, &bm, blocks, bs, max_seqs, max_tok, max_rows, RND(2));
        Request *reqs[60];
        int nreq = 0, steps = 0;
        while ((nreq < 60 || s.n_running || s.n_waiting) && steps < 20000) {
            if (nreq < 60 && RND(2)) {
                int P = 1 + RND(40);
                int M = 1 + RND(20);
                int n = 1 + RND(3);
                if (scheduler_max_blocks(P, M, n, bs) <= blocks && n <= s.cfg.max_num_seqs &&
                    n <= s.cfg.max_logits_rows) {
                    Request *r = req_new(nreq % 5, P, M, n, bs);   /* shared prefixes */
                    if (RND(5) == 0) { r->params.prompt_logprobs = 1; r->no_prefix_hits = 1;
                                       r->prompt_lp_filled = 1; }
                    reqs[nreq++] = r;
                    scheduler_add(&s, r, NULL);
                } else {
                    reqs[nreq++] = NULL;
                }
            }
            if (s.n_running || s.n_waiting) {
                if (sim_step(&s, &bm) < 0) break;
                for (int i = 0; i < s.n_entries; i++) {
                    Request *r = s.entries[i].req;
                    if (r->params.prompt_logprobs >= 0) {
                        int j = s.entries[i].lp_to + 1;
                        if (j > r->prompt_lp_filled) r->prompt_lp_filled = j;
                    }
                }
            }
            steps++;
            int64_t refs = 0, held = 0;
            for (int b = 0; b < blocks; b++) refs += bm.ref[b];
            for (int i = 0; i < nreq; i++)
                if (reqs[i])
                    for (int k = 0; k < reqs[i]->n; k++) held += reqs[i]->seqs[k].blocks.n;
            if (refs != held) { failed++; fprintf(stderr, "FAIL refs %lld held %lld\n",
                                                  (long long)refs, (long long)held); break; }
        }
        CHECK(steps < 20000);
        CHECK(block_manager_num_free(&bm) == blocks);
        for (int i = 0; i < nreq; i++)
            if (reqs[i]) {
                CHECK(reqs[i]->state == REQ_FINISHED);
                req_free(reqs[i]);
            }
        scheduler_free(&s); block_manager_free(&bm);
#undef RND
    }
}

int main(void)
{
    test_random();
    test_chunked_prefill();
    test_seq_cap_and_fcfs();
    test_preemption();
    test_rows_cap();
    test_prefix_hits();
    test_shared_prompt();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
