/* module.c — gpt2_engine._C: module init (multi-phase), EngineError, and the
 * mapping from core Status codes to Python exceptions. Each type lives in its
 * own file and registers itself through the table in module_exec. */
#include "pyutil.h"

static struct PyModuleDef module_def;

ModuleState *module_state(PyObject *module) { return (ModuleState *)PyModule_GetState(module); }

ModuleState *module_state_from_type(PyTypeObject *type)
{
    PyObject *module = PyType_GetModuleByDef(type, &module_def);
    if (!module) return NULL;
    return module_state(module);
}

PyObject *raise_error(ModuleState *st, const Error *err)
{
    PyObject *type;
    switch (err->code) {
    case GPT2_ERR_VALUE:
    case GPT2_ERR_FORMAT: type = PyExc_ValueError; break;
    case GPT2_ERR_NOT_FOUND: type = PyExc_FileNotFoundError; break;
    case GPT2_ERR_IO: type = PyExc_OSError; break;
    case GPT2_ERR_NOMEM: type = PyExc_MemoryError; break;
    default: type = st ? st->EngineError : PyExc_RuntimeError; break;
    }
    PyErr_SetString(type, err->msg[0] ? err->msg : "unknown engine error");
    return NULL;
}

typedef int (*RegisterFn)(PyObject *, ModuleState *);

int sampler_debug_register(PyObject *module, ModuleState *st);
int ops_backend_register(PyObject *module, ModuleState *st) __attribute__((weak));
int ops_register(PyObject *module, ModuleState *st) __attribute__((weak));

static int module_exec(PyObject *module)
{
    ModuleState *st = module_state(module);
    st->EngineError = PyErr_NewExceptionWithDoc(
        "gpt2_engine.EngineError",
        "The engine failed (device error, broken invariant, dead worker). A RuntimeError.",
        PyExc_RuntimeError, NULL);
    if (!st->EngineError || PyModule_AddObjectRef(module, "EngineError", st->EngineError) < 0)
        return -1;
    static const RegisterFn registry[] = {
        tokenizer_register, sampling_params_register, kv_cache_register, llm_register,
        sampler_debug_register, ops_register, ops_backend_register,
    };
    for (size_t i = 0; i < sizeof registry / sizeof registry[0]; i++)
        if (registry[i] && registry[i](module, st) < 0) return -1;
#ifdef GPT2_ENGINE_HAVE_CUDA
    if (PyModule_AddIntConstant(module, "built_with_cuda", 1) < 0) return -1;
#else
    if (PyModule_AddIntConstant(module, "built_with_cuda", 0) < 0) return -1;
#endif
    return 0;
}

static int module_traverse(PyObject *module, visitproc visit, void *arg)
{
    ModuleState *st = module_state(module);
    Py_VISIT(st->EngineError);
    Py_VISIT(st->LLMType);
    Py_VISIT(st->SamplingParamsType);
    Py_VISIT(st->KVCacheType);
    Py_VISIT(st->TokenizerType);
    return 0;
}

static int module_clear(PyObject *module)
{
    ModuleState *st = module_state(module);
    Py_CLEAR(st->EngineError);
    Py_CLEAR(st->LLMType);
    Py_CLEAR(st->SamplingParamsType);
    Py_CLEAR(st->KVCacheType);
    Py_CLEAR(st->TokenizerType);
    return 0;
}

static void module_free(void *module) { module_clear((PyObject *)module); }

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gpt2_engine._C",
    .m_doc = "C core of gpt2_engine: loader, tokenizer, scheduler, backends.",
    .m_size = sizeof(ModuleState),
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__C(void) { return PyModuleDef_Init(&module_def); }
