/* request.h — a request and its sequences as the engine core tracks them:
 * scheduling state (shared by scheduler.c and engine.c), per-sequence token
 * history, block table, sampler state and logprob storage. The text state
 * (detokenizer, stop strings) is engine.c's own (struct SeqText, opaque here)
 * so that the scheduler and its unit tests need neither tokenizer nor runner.
 *
 * Token layout of a sequence: tokens = prompt (num_prompt) + output; the prompt
 * part is copied into every sequence so that each one is a flat array.
 */
#ifndef GPT2_REQUEST_H
#define GPT2_REQUEST_H

#include <stdint.h>

#include "block_manager.h"
#include "engine.h"
#include "sampler.h"

typedef enum ReqState { REQ_WAITING = 0, REQ_RUNNING, REQ_FINISHED } ReqState;

struct SeqText;   /* engine.c: detokenizer + visible text */

typedef struct Sequence {
    int index;                    /* 0..n-1 */
    int32_t *tokens;              /* (cap_tokens) prompt + output */
    int num_tokens;               /* prompt + generated so far */
    int cap_tokens;               /* num_prompt + max_tokens */
    int num_computed;             /* tokens whose K/V are in the cache (or queued) */
    /* async scheduling: the token at num_tokens is sampled by a step still in
     * flight (row pending_row of its sampler output); the scheduler counts it */
    int pending;
    int pending_row;
    BlockTable blocks;
    int finished;                 /* FinishReason != NONE */
    uint64_t seed;                /* generator seed of this sequence */
    TokenCounts counts;           /* occurrences for the penalties (when used) */
    /* logprobs, (max_tokens [, num_top]) when asked for */
    float *logprobs;
    int32_t *ranks, *top_ids;
    float *top_logprobs;
    double cumulative_logprob;
    struct SeqText *text;
    SeqOutput out;                /* reported view (copied into Request.seq_outs) */
} Sequence;

typedef struct Request {
    char *id;
    int num_prompt;
    SamplingParamsC params;       /* deep copy */
    SamplerBias bias;             /* logit_bias + min_tokens masks, merged per token */
    ReqState state;
    uint64_t arrival_index;       /* FCFS order */
    int n;                        /* sequences */
    Sequence *seqs;               /* (n) */
    /* shared phase: while >= 2 sequences are live and none has its prompt in the
     * cache, only seqs[leader] computes the prompt; the others are forked from it
     * when the prompt is done (sharing its blocks, copy-on-write). */
    int shared;
    int leader;
    int num_live;                 /* sequences not finished */
    int no_prefix_hits;           /* prompt_logprobs / compute_logits requests */
    int compute_logits;           /* internal engine_compute_logits request */
    float *logits_out;            /* (num_prompt, V) for compute_logits */
    int ever_scheduled, ever_sampled;
    uint64_t sched_stamp;         /* scheduler step that last scheduled it */
    int num_cached_tokens;        /* prefix-cache hits at first admission */
    /* prompt logprobs (num_prompt [, num_top]); entry j is filled once position j-1 ran */
    float *prompt_logprobs;
    int32_t *prompt_ranks, *prompt_top_ids;
    float *prompt_top_logprobs;
    int prompt_lp_filled;         /* entries [0, prompt_lp_filled) are final */
    double arrival_time, first_scheduled_time, first_token_time, finished_time;
    int made_progress;            /* the engine step (Engine.step_seq) it last progressed in */
    int inflight_stamp;           /* the launch (Engine.launch_seq) it last ran in */
    int may_mask_all;             /* its logit_bias / min_tokens masks can cover the vocab:
                                   * a sampling error is possible, so its steps are synchronous */
    int reported_finished;
    RequestOutputC out;
    SeqOutput *seq_outs;          /* (n) contiguous views for out.seqs */
} Request;

#endif /* GPT2_REQUEST_H */
