/* sampling_params_fields.h — the fields of SamplingParams as the binding sees
 * them (internal to csrc/python/sampling_params*.c): ids in repr order, names,
 * and validated conversion Python <-> SamplingParamsC for one field. */
#ifndef GPT2_PY_SAMPLING_PARAMS_FIELDS_H
#define GPT2_PY_SAMPLING_PARAMS_FIELDS_H

#include "sampling_params.h"

/* Field ids: the getset closure and the repr/pickle order (vLLM's repr order). */
enum Field {
    F_N, F_PRESENCE, F_FREQUENCY, F_REPETITION, F_TEMPERATURE, F_TOP_P, F_TOP_K, F_MIN_P,
    F_SEED, F_STOP, F_STOP_TOKEN_IDS, F_LOGIT_BIAS, F_INCLUDE_STOP, F_IGNORE_EOS, F_MAX_TOKENS,
    F_MIN_TOKENS, F_LOGPROBS, F_PROMPT_LOGPROBS, F_SKIP_SPECIAL, F_COUNT
};


extern const char *const sampling_params_field_names[F_COUNT];

/* Sets field f of p from v, validated (ValueError naming the field and its range,
 * TypeError for a wrong type); p is unchanged on failure. Cross-field rules are
 * sampling_params_check's. */
int sampling_params_field_set(SamplingParamsC *p, int f, PyObject *v);
/* New reference to field f's Python value (vLLM's types: stop -> list[str], ...). */
PyObject *sampling_params_field_get(const SamplingParamsC *p, int f);
/* Cross-field rule min_tokens <= max_tokens; -1 with ValueError. */
int sampling_params_check(const SamplingParamsC *p);

#endif
