/* llm.h — the Engine object layout, shared by llm.c and kv_cache.c. */
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
} EngineObject;

#endif
