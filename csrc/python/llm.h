/* llm.h — the Engine object layout, shared by llm.c (the type), llm_inputs.c
 * (arguments -> engine arrays), llm_outputs.c (engine outputs -> tuples) and
 * kv_cache.c. */
#ifndef GPT2_PY_LLM_H
#define GPT2_PY_LLM_H

#include "pyutil.h"
#include "engine.h"

typedef struct EngineObject {
    PyObject_HEAD
    Engine *engine;          /* NULL once closed */
    int busy;                /* a call with the GIL released is running */
    int num_views;           /* live NumPy views into the KV cache */
    PyObject *tokenizer;     /* lazily created gpt2_engine.Tokenizer */
    PyObject *tokenizer_dir; /* str */
    PyObject **id_objs;      /* (num_id_objs) the int object of each id below vocab_size,
                              * made on first use (llm_outputs.c); NULL until a step reports */
    int num_id_objs;
} EngineObject;

/* ---- llm_inputs.c ---- */

/* list[int] (or any sequence of ints) -> malloc'ed int32 array; NULL with an
 * exception set. `what` names the argument in messages. */
int32_t *ids_from_sequence(PyObject *seq, int *n_out, const char *what);

/* The arguments of Engine.add_requests as engine_add_requests takes them. The
 * id strings and params are borrowed from the Python objects held here. */
typedef struct RequestBatch {
    int n;
    const char **ids;               /* (n) UTF-8 request ids */
    const int32_t **prompts;        /* (n) pointers into tokens */
    int *num_prompt;                /* (n) */
    const SamplingParamsC **params; /* (n) NULL entries: the defaults */
    int32_t *tokens;                /* (sum of num_prompt) every prompt, back to back */
    PyObject *id_seq, *prompt_seq, *param_seq;
} RequestBatch;

/* ids: list/tuple of str; prompts: list/tuple of n lists/tuples of ints (no
 * bools); params: SamplingParams, a list/tuple of n, or None. -1 with TypeError
 * or ValueError set (b freed); 0: call request_batch_free after use. */
int request_batch_init(RequestBatch *b, PyObject *ids, PyObject *prompts, PyObject *params,
                       ModuleState *st);
void request_batch_free(RequestBatch *b);      /* safe on a freed or zeroed batch */

/* ---- llm_outputs.c ---- */

/* (request_id, prompt_token_ids, prompt_logprobs, finished, metrics, seqs): one
 * step output as LLM._make_output (gpt2_engine/llm.py) unpacks it. */
PyObject *request_tuple(EngineObject *self, const RequestOutputC *o);
void id_objects_free(EngineObject *self);      /* safe to call twice */

#endif
