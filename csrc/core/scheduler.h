/* scheduler.h — continuous batching: which sequences run this step and how many
 * tokens each. Pure C over request.h and block_manager.h (no runner, no tokenizer).
 *
 * Each step has a token budget (max_num_batched_tokens), a sequence cap
 * (max_num_seqs) and a logits-row cap (max_logits_rows). Running decodes go
 * first, then running prefills (unfinished chunks, resumed requests), each in
 * admission order, then waiting requests FCFS; a prompt longer than the remaining budget is chunked
 * (chunked prefill), so one step mixes decode tokens and prefill chunks. When a
 * running request needs blocks and none are free, the most recently admitted
 * running request not yet scheduled in this step is preempted by recompute (blocks freed, put back at the
 * front of the waiting queue, generated tokens kept); if that is the request
 * itself, it is preempted and the step stops there. No waiting request is
 * admitted in a step that preempted, nor while admitting it would leave fewer
 * than 1% of the blocks free for the running requests (unless none runs). Blocks (and copy-on-write targets) for
 * every scheduled token are allocated here; the engine runs the step and then
 * advances num_computed.
 *
 * A sequence's work: tokens [num_computed, target) where target is num_prompt
 * for the leader of a request in its shared phase (see request.h) and
 * num_tokens otherwise; the step that reaches target samples (num_samples rows).
 */
#ifndef GPT2_SCHEDULER_H
#define GPT2_SCHEDULER_H

#include "block_manager.h"
#include "request.h"

typedef struct SchedulerConfig {
    int max_num_seqs;
    int max_num_batched_tokens;
    int max_logits_rows;
    int enable_prefix_caching;
} SchedulerConfig;

typedef struct SchedEntry {
    Request *req;
    int seq;            /* index into req->seqs */
    int start, len;     /* tokens [start, start + len) of the sequence run this step */
    int num_samples;    /* rows sampled at the chunk's last position (0, 1 or n) */
    int lp_from, lp_to; /* positions [lp_from, lp_to) wanting a logits row each
                         * (prompt_logprobs / compute_logits) */
} SchedEntry;

typedef struct Scheduler {
    SchedulerConfig cfg;
    Request **waiting;  /* (n_waiting) FCFS; preempted requests go to the front */
    int n_waiting, cap_waiting;
    Request **running;  /* (n_running) admission order */
    int n_running, cap_running;
    SchedEntry *entries;/* (n_entries) this step's plan */
    int n_entries, cap_entries;
    int32_t *cow_src, *cow_dst; /* (n_cow) KV block copies to do before the step */
    int n_cow, cap_cow;
    int num_tokens, num_rows;   /* this step's totals */
    int num_preempted_step;
    uint64_t step_id;           /* stamps the requests scheduled in this step */
    int64_t num_preemptions;
    int64_t prefix_queries, prefix_hits;  /* tokens */
} Scheduler;

Status scheduler_init(Scheduler *s, const SchedulerConfig *cfg, Error *err);
void scheduler_free(Scheduler *s);   /* the queues only; requests belong to the caller */

Status scheduler_add(Scheduler *s, Request *req, Error *err);
/* Takes req out of whichever queue holds it and releases every block it holds. */
void scheduler_remove(Scheduler *s, BlockManager *bm, Request *req);
/* Plans one step into s->entries (decodes are not sorted first: the engine orders). */
Status scheduler_schedule(Scheduler *s, BlockManager *bm, Error *err);

/* Tokens a sequence still has to run, and the position that ends them. */
int scheduler_seq_target(const Request *req, int seq);
/* Worst-case blocks of a request (prompt blocks shared by its n sequences). */
int64_t scheduler_max_blocks(int num_prompt, int max_tokens, int n, int block_size);

#endif /* GPT2_SCHEDULER_H */
