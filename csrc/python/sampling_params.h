/* sampling_params.h — the binding-side accessor of gpt2_engine._C.SamplingParams
 * (sampling_params.c) for the other binding files (llm.c), plus the test-only
 * sampler entry point's registration hook (sampler_debug.c). */
#ifndef GPT2_PY_SAMPLING_PARAMS_H
#define GPT2_PY_SAMPLING_PARAMS_H

#include "engine.h"
#include "pyutil.h"

/* The validated SamplingParamsC held by obj (borrowed: valid while obj lives);
 * NULL with a TypeError set when obj is not a SamplingParams. */
const SamplingParamsC *sampling_params_get(PyObject *obj, ModuleState *st);

/* Adds the test-only function _C._sample_cpu (see sampler_debug.c). */
int sampler_debug_register(PyObject *module, ModuleState *st);

#endif
