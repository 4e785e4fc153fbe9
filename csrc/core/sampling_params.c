/* sampling_params.c — SamplingParamsC defaults (vLLM's) and deep copy / free of
 * its heap parts (logit bias, stop strings, stop token ids). Validation is the
 * binding's job (csrc/python/sampling_params.c) and the engine's (vocab range). */
#include <stdlib.h>
#include <string.h>

#include "engine.h"

void sampling_params_default(SamplingParamsC *p)
{
    memset(p, 0, sizeof *p);
    p->n = 1;
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->top_k = 0;
    p->min_p = 0.0f;
    p->presence_penalty = 0.0f;
    p->frequency_penalty = 0.0f;
    p->repetition_penalty = 1.0f;
    p->min_tokens = 0;
    p->max_tokens = 16;
    p->logprobs = -1;
    p->prompt_logprobs = -1;
    p->skip_special_tokens = 1;
}

void sampling_params_free(SamplingParamsC *p)
{
    if (!p) return;
    free(p->logit_bias_ids);
    free(p->logit_bias_values);
    if (p->stop)
        for (int i = 0; i < p->n_stop; i++) free(p->stop[i]);
    free(p->stop);
    free(p->stop_token_ids);
    p->logit_bias_ids = NULL;
    p->logit_bias_values = NULL;
    p->stop = NULL;
    p->stop_token_ids = NULL;
    p->n_logit_bias = p->n_stop = p->n_stop_token_ids = 0;
}

static void *dup_bytes(const void *src, size_t n)
{
    if (!src || n == 0) return NULL;
    void *d = malloc(n);
    if (d) memcpy(d, src, n);
    return d;
}

Status sampling_params_copy(SamplingParamsC *dst, const SamplingParamsC *src, Error *err)
{
    *dst = *src;
    dst->logit_bias_ids = NULL;
    dst->logit_bias_values = NULL;
    dst->stop = NULL;
    dst->stop_token_ids = NULL;
    dst->n_logit_bias = dst->n_stop = dst->n_stop_token_ids = 0;
    if (src->n_logit_bias > 0) {
        size_t k = (size_t)src->n_logit_bias;
        dst->logit_bias_ids = dup_bytes(src->logit_bias_ids, k * sizeof(int32_t));
        dst->logit_bias_values = dup_bytes(src->logit_bias_values, k * sizeof(float));
        dst->n_logit_bias = src->n_logit_bias;
        if (!dst->logit_bias_ids || !dst->logit_bias_values) goto nomem;
    }
    if (src->n_stop_token_ids > 0) {
        dst->stop_token_ids = dup_bytes(src->stop_token_ids,
                                        (size_t)src->n_stop_token_ids * sizeof(int32_t));
        dst->n_stop_token_ids = src->n_stop_token_ids;
        if (!dst->stop_token_ids) goto nomem;
    }
    if (src->n_stop > 0) {
        dst->stop = calloc((size_t)src->n_stop, sizeof *dst->stop);
        if (!dst->stop) goto nomem;
        dst->n_stop = src->n_stop;
        for (int i = 0; i < src->n_stop; i++) {
            dst->stop[i] = dup_bytes(src->stop[i], strlen(src->stop[i]) + 1);
            if (!dst->stop[i]) goto nomem;
        }
    }
    return GPT2_OK;
nomem:
    sampling_params_free(dst);
    return error_set(err, GPT2_ERR_NOMEM, "sampling params: out of memory");
}
