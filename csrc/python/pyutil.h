/* pyutil.h — helpers shared by the binding files: raising a core Error as the
 * right Python exception, and the registration hooks each type file exports. */
#ifndef GPT2_PYUTIL_H
#define GPT2_PYUTIL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "common.h"

/* Module state: exception types live here, not in globals (multi-phase init). */
typedef struct ModuleState {
    PyObject *EngineError;
    PyObject *LLMType;
    PyObject *SamplingParamsType;
    PyObject *KVCacheType;
    PyObject *TokenizerType;
} ModuleState;

ModuleState *module_state_from_type(PyTypeObject *type);
ModuleState *module_state(PyObject *module);

/* Sets the Python exception matching err->code (ValueError, FileNotFoundError,
 * OSError, MemoryError, EngineError) with err->msg; returns NULL for `return`. */
PyObject *raise_error(ModuleState *st, const Error *err);

/* Each binding file registers its types on the module (called from module exec). */
int tokenizer_register(PyObject *module, ModuleState *st);
int llm_register(PyObject *module, ModuleState *st);
int sampling_params_register(PyObject *module, ModuleState *st);
int kv_cache_register(PyObject *module, ModuleState *st);
int ops_register(PyObject *module, ModuleState *st);

#endif
