/* engine.h — the step loop tying scheduler, block manager, model runner,
 * sampler and detokenizer together. Everything the Python layer calls on a
 * running engine goes through this header; it never includes Python.h.
 *
 * Life of a request: engine_add_request (validate, enqueue) -> engine_step
 * (schedule, run, sample, append, stop checks) ... -> finished, reported once
 * by engine_step's outputs, then released at the start of the next step.
 */
#ifndef GPT2_ENGINE_H
#define GPT2_ENGINE_H

#include "model_runner.h"
#include "tokenizer.h"

/* SamplingParams as the core sees them (csrc/python/sampling_params.c fills one,
 * validated; the engine deep-copies it in engine_add_request). Names and defaults
 * are vLLM's. */
typedef struct SamplingParamsC {
    int n;                        /* 1 */
    float temperature;            /* 1.0; 0 = greedy */
    float top_p;                  /* 1.0, in (0, 1] */
    int top_k;                    /* 0 or -1 = off (vLLM: -1/0), else >= 1 */
    float min_p;                  /* 0.0, in [0, 1] */
    int has_seed;                 /* 0: derive from the engine seed and request order */
    uint64_t seed;
    float presence_penalty;       /* 0.0, in [-2, 2] */
    float frequency_penalty;      /* 0.0, in [-2, 2] */
    float repetition_penalty;     /* 1.0, > 0 */
    int n_logit_bias;
    int32_t *logit_bias_ids;      /* (n_logit_bias) */
    float *logit_bias_values;     /* (n_logit_bias) */
    int min_tokens;               /* 0 */
    int max_tokens;               /* 16, >= 1 */
    int n_stop;
    char **stop;                  /* (n_stop) UTF-8 stop strings */
    int n_stop_token_ids;
    int32_t *stop_token_ids;
    int include_stop_str_in_output;
    int ignore_eos;
    int logprobs;                 /* -1 = None, else number of top logprobs (0: sampled only) */
    int prompt_logprobs;          /* -1 = None */
    int skip_special_tokens;      /* 1 */
} SamplingParamsC;

/* Deep copy / free of the heap parts (logit bias, stop strings, stop ids). */
Status sampling_params_copy(SamplingParamsC *dst, const SamplingParamsC *src, Error *err);
void sampling_params_free(SamplingParamsC *p);
void sampling_params_default(SamplingParamsC *p);

typedef struct EngineConfig {
    const char *model_dir;
    const char *tokenizer_dir;    /* directory with vocab.json + merges.txt */
    RunnerConfig runner;
    int enable_prefix_caching;
    uint64_t seed;                /* engine seed: unseeded requests derive theirs from it */
    /* engine_step_async may leave a step running while it schedules the next one:
     * 1 on, 0 off, -1 on for the CUDA backend (the CPU has nothing to overlap) */
    int async_scheduling;
} EngineConfig;

typedef enum FinishReason { FINISH_NONE = 0, FINISH_STOP, FINISH_LENGTH, FINISH_ABORT } FinishReason;

/* One generated sequence's state as reported to Python (valid until the next step). */
typedef struct SeqOutput {
    int index;                    /* 0..n-1 */
    const int32_t *token_ids;     /* (num_tokens) generated ids */
    int num_tokens;
    const char *text;             /* complete detokenized text so far (stop string handled) */
    size_t text_len;
    double cumulative_logprob;
    const float *logprobs;        /* (num_tokens) sampled tokens' logprobs, NULL if logprobs < 0 */
    const int32_t *ranks;         /* (num_tokens) */
    const int32_t *top_ids;       /* (num_tokens, num_top) */
    const float *top_logprobs;    /* (num_tokens, num_top) */
    int num_top;
    FinishReason finish_reason;
    int stop_reason_kind;         /* 0 none, 1 token id (stop_token), 2 string (stop_str) */
    int32_t stop_token;
    const char *stop_str;
} SeqOutput;

typedef struct RequestOutputC {
    const char *request_id;
    const int32_t *prompt_ids;
    int num_prompt;
    /* prompt logprobs: (num_prompt) entries, entry 0 is None; NULL if not asked for */
    const float *prompt_logprobs;        /* (num_prompt) logprob of prompt token i given < i */
    const int32_t *prompt_ranks;         /* (num_prompt) */
    const int32_t *prompt_top_ids;       /* (num_prompt, prompt_num_top) */
    const float *prompt_top_logprobs;
    int prompt_num_top;
    int num_seqs;
    const SeqOutput *seqs;               /* (num_seqs) */
    int finished;
    /* metrics (seconds, CLOCK_MONOTONIC as the engine saw it) */
    double arrival_time, first_scheduled_time, first_token_time, finished_time;
    int num_cached_tokens;               /* prompt tokens served by the prefix cache */
} RequestOutputC;

typedef struct EngineStats {
    int64_t num_steps;
    int64_t num_steps_ahead;             /* launched before the previous step finished */
    int64_t num_preemptions;
    int64_t prefix_cache_queries;        /* prompt tokens looked up */
    int64_t prefix_cache_hits;           /* prompt tokens found */
    int64_t prompt_tokens, generation_tokens;
    /* Wall time per phase of engine_step, seconds summed over steps (CLOCK_MONOTONIC).
     * On a GPU the forward and sampling kernels run asynchronously: time_forward_s
     * is then only the launch, and the device time shows up in time_sample_s,
     * whose call waits for the sampled tokens. Everything else is host time
     * during which the device idles (unless it still runs queued work). */
    double time_schedule_s;       /* release reported requests, scheduler, copy-on-write */
    double time_prepare_s;        /* batch metadata: engine pack + runner staging */
    double time_forward_s;        /* h2d of the metadata + forward launch (CPU: the forward) */
    double time_sample_setup_s;   /* SamplingRows / TokenAdjusts */
    double time_sample_s;         /* the sample op, incl. waiting for the device */
    double time_update_s;         /* append tokens, detokenize, stop checks, prefix hashes */
    double time_outputs_s;        /* RequestOutputC views of the reported requests */
    double time_between_steps_s;  /* from one engine_step's return to the next call */
    double time_binding_s;        /* part of the above: the Python binding's result objects */
} EngineStats;

typedef struct Engine Engine;

Status engine_create(Engine **out, const EngineConfig *cfg, Error *err);
void engine_destroy(Engine *e);           /* NULL-safe; frees every byte */

/* Validates and enqueues. Errors (GPT2_ERR_VALUE) for: duplicate id, empty prompt,
 * token id out of range, prompt + max_tokens > max_model_len, more blocks than exist. */
Status engine_add_request(Engine *e, const char *request_id, const int32_t *prompt_ids,
                          int num_prompt, const SamplingParamsC *params, Error *err);
/* All or nothing: n requests (request_ids[i], prompt_ids[i] of num_prompt[i] tokens,
 * params[i]; params or an entry NULL = defaults), each validated as above and the
 * ids distinct, before any is queued; on an error none is (the message names the
 * request when n > 1). One call spares the caller n round trips (LLM.generate). */
Status engine_add_requests(Engine *e, int n, const char *const *request_ids,
                           const int32_t *const *prompt_ids, const int *num_prompt,
                           const SamplingParamsC *const *params, Error *err);
/* Unknown or finished ids are ignored. Frees the request's blocks now. */
void engine_abort_request(Engine *e, const char *request_id);
int engine_has_unfinished(const Engine *e);
int engine_num_unfinished(const Engine *e);
/* One scheduler step + forward + sample + update. *num_outputs requests made
 * progress (or finished/aborted) and are readable via engine_output(e, i) until
 * the next call. finished_only: report only the requests that finished (or were
 * aborted); the others' progress is not reported (their text is not brought up
 * to date: a later full step reports it). */
Status engine_step(Engine *e, int finished_only, int *num_outputs, Error *err);
const RequestOutputC *engine_output(const Engine *e, int i);
/* Async scheduling (vLLM's): engine_step_async runs one step like engine_step but
 * reports nothing and may return with it still running on the device; the next
 * call schedules and launches the following step before it waits for that one,
 * the tokens the host has not seen yet going from the sampler straight into the
 * next step's inputs, so host work overlaps the device. A sequence that stops on
 * a token (EOS, stop string) runs one step more than it needs (discarded).
 * Steps whose sampling may fail (a request that can mask every token), or that
 * need the previous tokens on the host (penalties, preemption, copy-on-write)
 * are run as engine_step would. engine_step_async_end finishes a step still
 * running and reports as engine_step does. Every other engine call finishes a
 * running step first. Off (engine_async_scheduling() == 0): the two are one
 * engine_step. engine_step_async_end with num_outputs NULL only finishes the
 * step (an abandoned run): what it finished is reported by the next step. */
Status engine_step_async(Engine *e, Error *err);
Status engine_step_async_end(Engine *e, int finished_only, int *num_outputs, Error *err);
int engine_async_scheduling(const Engine *e);
/* 1 while a request finished (or was aborted) that no step has reported yet */
int engine_has_unreported(const Engine *e);

/* Logits of every position of one prompt, (num_prompt, V) fp32 into out, run
 * through the same scheduler/paged path (chunked by the token budget). */
Status engine_compute_logits(Engine *e, const int32_t *prompt_ids, int num_prompt, float *out,
                             Error *err);

/* Introspection for the Python KVCache / LLM types. */
const ModelRunner *engine_runner(const Engine *e);
const Tokenizer *engine_tokenizer(const Engine *e);
const EngineStats *engine_stats(const Engine *e);
/* The binding reports the time it spent turning a step's outputs into objects. */
void engine_stats_add_binding_time(Engine *e, double seconds);
int engine_num_free_blocks(const Engine *e);   /* blocks no live request holds */
int engine_num_blocks(const Engine *e);
/* Physical block ids of a live request's sequence `seq` (0..n-1); -1 if unknown. */
int engine_block_table(const Engine *e, const char *request_id, int seq, const int32_t **ids);

#endif
