/* sampler.h — the host side of sampling: turns a request's SamplingParamsC and a
 * sequence's history into one SamplingRow plus its TokenAdjust entries (the
 * sampling.h contract; the backend's `sample` op does the rest).
 *   TokenCounts: distinct tokens of prompt + output with their output counts and
 *                an in-prompt flag, kept incrementally (only when a penalty is on).
 *   SamplerBias: one request's logit_bias merged per token with the min_tokens
 *                mask of eos (unless ignore_eos) and stop_token_ids.
 * Every token appears at most once among a row's adjustments.
 * Seeds: an unseeded request gets sampler_request_seed(engine seed, arrival
 * index); sequence i of a request samples with sampler_seq_seed(seed, i) and
 * RNG step = index of the token within the sequence's output, so a token never
 * depends on the batch or on preemption.
 */
#ifndef GPT2_SAMPLER_H
#define GPT2_SAMPLER_H

#include <stdint.h>

#include "common.h"
#include "sampling.h"

struct SamplingParamsC;

typedef struct TokenCounts {
    int32_t *tok;        /* (n) distinct tokens, first-seen order */
    int32_t *out_count;  /* (n) times generated */
    uint8_t *in_prompt;  /* (n) */
    int n, cap;
    int32_t *slots;      /* (nslots) open addressing: 1 + index into tok, 0 = empty */
    int nslots;          /* power of two, >= 2 * cap */
} TokenCounts;

Status token_counts_init(TokenCounts *c, const int32_t *prompt, int n_prompt, Error *err);
Status token_counts_add_output(TokenCounts *c, int32_t tok, Error *err);
Status token_counts_copy(TokenCounts *dst, const TokenCounts *src, Error *err);
int token_counts_find(const TokenCounts *c, int32_t tok);   /* index or -1 */
void token_counts_free(TokenCounts *c);                      /* safe on zeroed/freed */

typedef struct SamplerBias {
    int32_t *tok;        /* (n) sorted ascending, distinct */
    float *bias;         /* (n) summed logit_bias */
    uint8_t *min_mask;   /* (n) 1: -inf while fewer than min_tokens were generated */
    int n;
} SamplerBias;

Status sampler_bias_init(SamplerBias *b, const struct SamplingParamsC *p, int32_t eos_id,
                         Error *err);
void sampler_bias_free(SamplerBias *b);

/* Growable TokenAdjust list of one step. */
typedef struct AdjBuf {
    TokenAdjust *a;
    int n, cap;
} AdjBuf;
void adj_buf_free(AdjBuf *b);

int sampler_penalties_on(const struct SamplingParamsC *p);
uint64_t sampler_request_seed(uint64_t engine_seed, uint64_t arrival_index);
uint64_t sampler_seq_seed(uint64_t request_seed, int index);

/* Fills row for the num_out-th output token of a sequence (counts may be NULL
 * when no penalty is on) and appends its adjustments to buf. */
Status sampler_fill_row(const struct SamplingParamsC *p, const SamplerBias *b,
                        const TokenCounts *counts, int num_out, uint64_t seed, AdjBuf *buf,
                        SamplingRow *row, Error *err);
/* A prompt-logprobs row: report target's logprob and num_logprobs top entries. */
void sampler_fill_target_row(int32_t target, int num_logprobs, SamplingRow *row);

#endif /* GPT2_SAMPLER_H */
