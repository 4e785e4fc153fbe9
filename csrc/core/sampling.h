/* sampling.h — what a backend's `sample` op takes and returns.
 *
 * One row of fp32 logits (V) per sequence that needs a token this step. The host
 * (sampler.c) turns each request's SamplingParams and history into a
 * SamplingRow plus a sparse list of TokenAdjust entries (penalty counts, logit
 * bias, min_tokens masking); the backend applies them, filters, and samples.
 *
 * Order of operations for one row (identical on every backend):
 *   raw = logits                                  (model output, fp32)
 *   logprobs / ranks / top-k are computed from log_softmax(raw)   (vLLM's raw_logprobs)
 *   x = raw; for each adjustment a of the row:
 *       if repetition_penalty != 1 and (a.output_count > 0 or a.in_prompt):
 *           x[t] = x[t] > 0 ? x[t] / rp : x[t] * rp
 *       x[t] -= frequency_penalty * a.output_count + presence_penalty * (a.output_count > 0)
 *       x[t] += a.bias                            (logit_bias; -inf masks, e.g. min_tokens)
 *   if target_token >= 0: no sampling; token = target_token (prompt logprobs)
 *   elif temperature == 0 (greedy): token = argmax x (lowest id on ties)
 *   else: x /= temperature; p = softmax(x)
 *         keep top_k largest (top_k > 0), then the smallest set of largest p whose
 *         mass >= top_p (top_p < 1), then p >= min_p * max p (min_p > 0); ties at a
 *         cut-off are kept; renormalise
 *         u = uniform01(seed, step); token = first id (in id order) whose running
 *         sum of kept p exceeds u * sum(kept p)
 * uniform01 is the counter-based generator below, so a seeded row gives the same
 * token whatever else is in the batch and whatever was preempted.
 */
#ifndef GPT2_SAMPLING_H
#define GPT2_SAMPLING_H

#include <stdint.h>

#include "common.h"

typedef struct SamplingRow {
    float temperature;          /* 0 = greedy */
    int top_k;                  /* <= 0: off */
    float top_p;                /* 1: off */
    float min_p;                /* 0: off */
    float presence_penalty;     /* 0: off */
    float frequency_penalty;    /* 0: off */
    float repetition_penalty;   /* 1: off */
    uint64_t seed;              /* the sequence's generator seed */
    uint64_t step;              /* index of the token being sampled within its sequence */
    int32_t target_token;       /* >= 0: report this token's logprob/rank, don't sample */
    int32_t num_logprobs;       /* top logprobs to report (<= max_logprobs of the call) */
    int32_t adj_start;          /* this row's TokenAdjust entries: [adj_start, adj_start+adj_count) */
    int32_t adj_count;
} SamplingRow;

typedef struct TokenAdjust {
    int32_t token;
    int32_t output_count;       /* times the token was generated so far */
    int32_t in_prompt;          /* 1 if the token occurs in the prompt */
    float bias;                 /* added logit bias (may be -INFINITY) */
} TokenAdjust;

typedef struct SamplerOutput {  /* host arrays, R rows */
    int32_t *tokens;            /* (R) sampled (or target) token */
    float *logprobs;            /* (R) its raw logprob */
    int32_t *ranks;             /* (R) its rank in the raw distribution (1 = most likely) */
    int32_t *topk_ids;          /* (R, max_logprobs) or NULL when max_logprobs == 0 */
    float *topk_logprobs;       /* (R, max_logprobs) */
} SamplerOutput;

/* splitmix64-style hash of (seed, step) to a double-free uniform in [0, 1): 24 bits.
 * Shared verbatim by the CPU sampler and the CUDA kernel. */
static inline uint64_t sampling_mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}
static inline float sampling_uniform01(uint64_t seed, uint64_t step)
{
    uint64_t h = sampling_mix64(seed ^ sampling_mix64(step + 0x632be59bd9b4e019ULL));
    return (float)(h >> 40) * (1.0f / 16777216.0f);
}

/* Checks a sample call's sizes, buffers and every row's inputs (ranges,
 * adjustment indices, token ids); shared by every backend so they reject bad
 * input with the same messages. out == SAMPLING_NO_OUTPUT (sample_launch: the
 * output arrives with sample_wait) skips the output buffers;
 * sampling_validate_output is that check alone (nonzero: a NULL buffer). */
#define SAMPLING_NO_OUTPUT ((const SamplerOutput *)1)
int sampling_validate_output(const SamplerOutput *out, int max_logprobs);
Status sampling_validate(const void *logits, int R, int V, const SamplingRow *rows,
                         const TokenAdjust *adj, int n_adj, int max_logprobs,
                         const SamplerOutput *out, Error *err);

/* The reference implementation of the contract above (sampler_cpu.c); the CPU
 * backend's `sample` op and the oracle for the CUDA kernel. */
Status sample_cpu(const float *logits, int R, int V, const SamplingRow *rows,
                  const TokenAdjust *adj, int n_adj, int max_logprobs, SamplerOutput *out,
                  Error *err);

#endif
