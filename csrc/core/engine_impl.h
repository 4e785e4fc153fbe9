/* engine_impl.h — the engine's private state, shared by its four files:
 * engine.c (life cycle, compute_logits), engine_step.c (the step loop, sync and
 * async), engine_requests.c (adding, validating, finishing and freeing
 * requests) and engine_output.c (appending sampled tokens, detokenizing, stop
 * checks, the reported outputs).
 * Nothing outside those files includes it. */
#ifndef GPT2_ENGINE_IMPL_H
#define GPT2_ENGINE_IMPL_H

#include <stdlib.h>
#include <time.h>

#include "block_manager.h"
#include "detokenizer.h"
#include "engine.h"
#include "request.h"
#include "sampler.h"
#include "scheduler.h"

/* A sequence's text. Detokenizing is lazy where nothing depends on it: a
 * sequence without stop strings feeds its tokens to the detokenizer only when
 * its text is reported or it finishes (seq_catch_up_text), so a step that
 * reports only finished requests (generate()) does no per-token text work. */
struct SeqText {
    Detokenizer d;
    int num_detok;          /* output tokens fed to d (or skipped) so far */
};

typedef enum RowKind { ROW_PROMPT_LP = 0, ROW_SAMPLE, ROW_LOGITS } RowKind;

typedef struct RowInfo {
    Request *req;
    int seq;        /* sequence receiving the sampled token */
    int pos;        /* ROW_PROMPT_LP / ROW_LOGITS: prompt position whose logits these are */
    RowKind kind;
} RowInfo;

/* A launched step: its forward and sampling are queued on the device; what
 * finishing it needs is kept here (async scheduling holds one across calls). */
typedef struct StepRun {
    int active;             /* launched and not yet finished */
    int id;                 /* Engine.launch_seq at launch (Request.inflight_stamp) */
    int ns, R, n_logit_rows, n_samp, max_lp;
    int ticket;             /* runner_sample_launch's, -1: nothing sampled */
    SchedEntry *order;      /* (ns) one of Engine.order_buf */
    RowInfo *rinfo;         /* (R) one of Engine.rinfo_buf */
    double t_launch;
} StepRun;

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
    SchedEntry *order;      /* (S) entries, decodes first: the step being packed */
    RowInfo *rinfo;         /* (R) */
    SchedEntry *order_buf[2];   /* a step in flight keeps its own while the next packs */
    RowInfo *rinfo_buf[2];
    int buf_next;
    int32_t *feed_idx, *feed_row;   /* (S) StepInput feeds of the step being packed */
    int async;              /* async scheduling on (EngineConfig.async_scheduling) */
    StepRun inflight;       /* the step left running between engine_step_async calls */
    int launch_seq;
    SamplingRow *rows;      /* (R) */
    AdjBuf adj;
    int32_t *s_tokens, *s_ranks, *s_top_ids;
    float *s_logprobs, *s_top_lps;
    int s_top_cap;          /* rows * max_logprobs capacity of the top arrays */
    const RequestOutputC **outputs;
    int n_outputs, cap_outputs;
    EngineStats stats;
    double last_step_end;   /* now_s() when engine_step last returned; 0: none to count */
    int in_compute_logits;  /* internal steps report nothing (kept for the user's next step) */
    int finished_only;      /* this step reports only requests that finished */
    /* bookkeeping that spares engine_step loops over every request */
    int step_seq;           /* engine_step calls; Request.made_progress holds the last */
    int num_unfinished;     /* requests not REQ_FINISHED (the internal one included) */
    int have_unreported;    /* a request finished since collect_outputs last looked */
    int need_release;       /* a reported-finished request awaits request_free */
};

/* calloc that never asks for 0 bytes; ALLOC(p, n) zero-allocates n elements of *p */
static inline void *alloc_zero(size_t n, size_t size) { return calloc(n ? n : 1, size); }
#define ALLOC(p, n) ((p) = alloc_zero((size_t)(n), sizeof *(p)))

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* 1 when a sequence of req holding num_tokens tokens is done by length
 * (max_tokens outputs, or max_model_len): seq_append's test, and the async
 * commit's for the token still on its way. */
static inline int seq_finished_by_length(const Engine *e, const Request *req, int num_tokens)
{
    return num_tokens - req->num_prompt >= req->params.max_tokens ||
           num_tokens >= e->max_model_len;
}

/* engine_requests.c */
void request_free(Request *req);
Request *find_request(const Engine *e, const char *id);
Status request_build(Engine *e, Request **out, const char *id, const int32_t *prompt, int P,
                      const SamplingParamsC *params, int compute_logits, Error *err);
Status reqs_push(Engine *e, Request *req, Error *err);
Status validate_request(const Engine *e, const char *id, const int32_t *prompt, int P,
                        const SamplingParamsC *p, int M, int n, Error *err);
void request_finish(Engine *e, Request *req, FinishReason why);

/* engine_output.c */
Status seq_append(Engine *e, Request *req, Sequence *sq, int i, int max_lp, Error *err);
Status ensure_top_cap(Engine *e, int rows, int max_lp, Error *err);
Status collect_outputs(Engine *e, Error *err);
Status seq_catch_up_text(const Engine *e, const Request *req, Sequence *sq, int upto,
                         Error *err);

#endif /* GPT2_ENGINE_IMPL_H */
