/* llm.c — gpt2_engine._C.Engine: the binding over csrc/core/engine.h. The
 * Python class gpt2_engine.LLM (gpt2_engine/llm.py) wraps it; this file holds
 * the type and its methods, llm_inputs.c and llm_outputs.c convert arguments
 * and results. The GIL is released around every call that runs the model, and
 * a busy flag refuses re-entry from another thread. */
#include "pyutil.h"
#include "llm.h"
#include "sampling_params.h"

#define NPY_NO_DEPRECATED_API NPY_1_20_API_VERSION
#include <numpy/arrayobject.h>

#include <string.h>
#include <time.h>

static double monotonic_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static ModuleState *state_of(PyObject *self) { return module_state_from_type(Py_TYPE(self)); }

static int engine_ready(EngineObject *self)
{
    ModuleState *st = state_of((PyObject *)self);
    if (!self->engine) {
        PyErr_SetString(st->EngineError, "the engine is closed");
        return 0;
    }
    if (self->busy) {
        PyErr_SetString(st->EngineError, "the engine is busy in another thread");
        return 0;
    }
    return 1;
}

/* ---- construction ---- */

static int Engine_init(EngineObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"model", "tokenizer", "dtype", "device", "block_size",
                             "max_num_seqs", "max_num_batched_tokens", "max_model_len",
                             "enable_prefix_caching", "gpu_memory_utilization", "num_kv_blocks",
                             "seed", "attention_backend", "enforce_eager", "cpu_kv_cache_bytes",
                             "async_scheduling", NULL};
    const char *model, *tokenizer, *dtype = "float32", *device = "cpu", *attn = NULL;
    int block_size = 16, max_num_seqs = 256, max_tokens = 2048, max_model_len = 0;
    int prefix = 1, num_blocks = 0, eager = 0, async = -1;
    double util = 0.9;
    unsigned long long seed = 0, cpu_kv = 2ull << 30;
    ModuleState *st = state_of((PyObject *)self);
    if (self->engine) {
        PyErr_SetString(PyExc_RuntimeError, "Engine.__init__ called twice");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ss|$ssiiiipdiKzpKi", kwlist, &model,
                                     &tokenizer, &dtype, &device, &block_size, &max_num_seqs,
                                     &max_tokens, &max_model_len, &prefix, &util, &num_blocks,
                                     &seed, &attn, &eager, &cpu_kv, &async))
        return -1;
    DType dt;
    if (!dtype_from_name(dtype, &dt)) {
        PyErr_Format(PyExc_ValueError, "dtype must be 'float32', 'float16' or 'bfloat16', got "
                     "'%s'", dtype);
        return -1;
    }
    EngineConfig cfg = {
        .model_dir = model, .tokenizer_dir = tokenizer,
        .runner = {
            .device = device, .dtype = dt, .block_size = block_size,
            .max_num_seqs = max_num_seqs, .max_num_batched_tokens = max_tokens,
            .max_model_len = max_model_len, .num_kv_blocks = num_blocks,
            .gpu_memory_utilization = util, .cpu_kv_cache_bytes = (size_t)cpu_kv,
            .attention_backend = attn, .enforce_eager = eager,
        },
        .enable_prefix_caching = prefix, .seed = (uint64_t)seed,
        .async_scheduling = async < 0 ? -1 : async != 0,
    };
    Error err = {0};
    Engine *e = NULL;
    Status s;
    Py_BEGIN_ALLOW_THREADS
    s = engine_create(&e, &cfg, &err);
    Py_END_ALLOW_THREADS
    if (s != GPT2_OK) {
        raise_error(st, &err);
        return -1;
    }
    self->engine = e;
    return 0;
}

static void Engine_close_impl(EngineObject *self)
{
    if (self->engine) {
        engine_destroy(self->engine);
        self->engine = NULL;
    }
    id_objects_free(self);
    Py_CLEAR(self->tokenizer);
    Py_CLEAR(self->tokenizer_dir);
}

static PyObject *Engine_close(EngineObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->busy) {
        PyErr_SetString(state_of((PyObject *)self)->EngineError,
                        "the engine is busy in another thread");
        return NULL;
    }
    if (self->num_views > 0) {
        PyErr_Format(state_of((PyObject *)self)->EngineError,
                     "%d KV-cache array view(s) are still alive; delete them before close()",
                     self->num_views);
        return NULL;
    }
    Engine_close_impl(self);
    Py_RETURN_NONE;
}

static void Engine_dealloc(EngineObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Engine_close_impl(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int Engine_traverse(EngineObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->tokenizer);
    Py_VISIT(self->tokenizer_dir);
    return 0;
}

static int Engine_clear(EngineObject *self)
{
    Py_CLEAR(self->tokenizer);
    Py_CLEAR(self->tokenizer_dir);
    return 0;
}

/* ---- requests ---- */

static PyObject *Engine_add_request(EngineObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"request_id", "prompt_token_ids", "params", NULL};
    const char *rid;
    PyObject *ids_obj, *params_obj;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sOO", kwlist, &rid, &ids_obj, &params_obj))
        return NULL;
    if (!engine_ready(self)) return NULL;
    ModuleState *st = state_of((PyObject *)self);
    const SamplingParamsC *params = sampling_params_get(params_obj, st);
    if (!params) return NULL;
    int n = 0;
    int32_t *ids = ids_from_sequence(ids_obj, &n, "prompt_token_ids");
    if (!ids) return NULL;
    Error err = {0};
    Status s = engine_add_request(self->engine, rid, ids, n, params, &err);
    free(ids);
    if (s != GPT2_OK) return raise_error(st, &err);
    Py_RETURN_NONE;
}

static PyObject *Engine_add_requests(EngineObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"request_ids", "prompts", "params", NULL};
    PyObject *ids, *prompts, *params = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O", kwlist, &ids, &prompts, &params))
        return NULL;
    if (!engine_ready(self)) return NULL;
    ModuleState *st = state_of((PyObject *)self);
    RequestBatch b;
    if (request_batch_init(&b, ids, prompts, params, st) < 0) return NULL;
    Error err = {0};
    Status s = engine_add_requests(self->engine, b.n, b.ids, b.prompts, b.num_prompt, b.params,
                                   &err);
    request_batch_free(&b);
    if (s != GPT2_OK) return raise_error(st, &err);
    Py_RETURN_NONE;
}

static PyObject *Engine_abort_request(EngineObject *self, PyObject *arg)
{
    if (!engine_ready(self)) return NULL;
    const char *rid = PyUnicode_AsUTF8(arg);
    if (!rid) return NULL;
    engine_abort_request(self->engine, rid);
    Py_RETURN_NONE;
}

static PyObject *Engine_has_unfinished(EngineObject *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->engine) Py_RETURN_FALSE;
    return PyBool_FromLong(engine_has_unfinished(self->engine));
}

static PyObject *Engine_num_unfinished(EngineObject *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->engine) return PyLong_FromLong(0);
    return PyLong_FromLong(engine_num_unfinished(self->engine));
}

/* ---- results ---- */

/* Ends an async-scheduling run that is abandoned (an error or a signal is being
 * raised): the step in flight is finished. */
static void finish_pipeline_quietly(Engine *e, int finished_only)
{
    Error ignored = {0};
    engine_step_async_end(e, finished_only, NULL, &ignored);   /* reports nothing: the
                                                                  * next step does */
}

static PyObject *Engine_step(EngineObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"finished_only", "max_steps", NULL};
    int finished_only = 0, max_steps = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$pi", kwlist, &finished_only, &max_steps))
        return NULL;
    if (max_steps < 1) {
        PyErr_Format(PyExc_ValueError, "max_steps must be >= 1, got %d", max_steps);
        return NULL;
    }
    if (!engine_ready(self)) return NULL;
    Error err = {0};
    int n = 0;
    Status s;
    /* Steps that report nothing (generate()'s, until a request finishes) follow
     * each other here rather than through Python: a round trip per step is host
     * time the device idles for. Signals are checked between steps, as they are
     * between two calls (Ctrl-C stops the loop; a handler may close the engine). */
    /* With async scheduling (generate()'s case: finished_only, many steps) each
     * step may still run on the device when the call returns to this loop; it is
     * finished by engine_step_async_end before anything is reported or raised. */
    Engine *e = self->engine;
    const int pipelined = finished_only && max_steps > 1 && engine_async_scheduling(e);
    for (int k = 1;; k++) {
        self->busy = 1;
        Py_BEGIN_ALLOW_THREADS
        s = pipelined ? engine_step_async(e, &err) : engine_step(e, finished_only, &n, &err);
        Py_END_ALLOW_THREADS
        self->busy = 0;
        if (s != GPT2_OK) {
            if (pipelined) finish_pipeline_quietly(e, finished_only);
            return raise_error(state_of((PyObject *)self), &err);
        }
        const int reported = pipelined ? engine_has_unreported(e) : n > 0;
        if (reported || k >= max_steps || !engine_has_unfinished(e)) break;
        if (PyErr_CheckSignals() < 0 || !engine_ready(self)) {   /* a handler may close it */
            if (pipelined && self->engine) finish_pipeline_quietly(e, finished_only);
            return NULL;
        }
    }
    if (pipelined) {
        self->busy = 1;
        Py_BEGIN_ALLOW_THREADS
        s = engine_step_async_end(e, finished_only, &n, &err);
        Py_END_ALLOW_THREADS
        self->busy = 0;
        if (s != GPT2_OK) return raise_error(state_of((PyObject *)self), &err);
    }
    double t0 = monotonic_s();
    PyObject *list = PyList_New(n);
    if (!list) return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *t = request_tuple(self, engine_output(self->engine, i));
        if (!t) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, t);
    }
    engine_stats_add_binding_time(self->engine, monotonic_s() - t0);
    return list;
}

static PyObject *Engine_compute_logits(EngineObject *self, PyObject *arg)
{
    if (!engine_ready(self)) return NULL;
    int n = 0;
    int32_t *ids = ids_from_sequence(arg, &n, "prompt_token_ids");
    if (!ids) return NULL;
    const int V = engine_runner(self->engine)->config.vocab_size;
    npy_intp dims[2] = {n, V};
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (!out) { free(ids); return NULL; }
    Error err = {0};
    Status s;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    s = engine_compute_logits(self->engine, ids, n, PyArray_DATA(out), &err);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    free(ids);
    if (s != GPT2_OK) {
        Py_DECREF(out);
        return raise_error(state_of((PyObject *)self), &err);
    }
    return (PyObject *)out;
}

/* ---- properties ---- */

static PyObject *Engine_get_attention_backend(EngineObject *self, void *closure)
{
    (void)closure;
    if (!engine_ready(self)) return NULL;
    return PyUnicode_FromString(engine_runner(self->engine)->attn->name);
}

static PyObject *Engine_get_attention_reason(EngineObject *self, void *closure)
{
    (void)closure;
    if (!engine_ready(self)) return NULL;
    return PyUnicode_FromString(engine_runner(self->engine)->attn_reason);
}

static PyObject *Engine_get_fused_decode(EngineObject *self, void *closure)
{
    (void)closure;
    if (!engine_ready(self)) return NULL;
    return PyBool_FromLong(engine_runner(self->engine)->fused_decode != NULL);
}

static PyObject *Engine_get_fused_decode_reason(EngineObject *self, void *closure)
{
    (void)closure;
    if (!engine_ready(self)) return NULL;
    return PyUnicode_FromString(engine_runner(self->engine)->fused_reason);
}

static PyObject *Engine_get_device(EngineObject *self, void *closure)
{
    (void)closure;
    if (!engine_ready(self)) return NULL;
    return PyUnicode_FromString(engine_runner(self->engine)->backend->name);
}

static PyObject *Engine_get_dtype(EngineObject *self, void *closure)
{
    (void)closure;
    if (!engine_ready(self)) return NULL;
    return PyUnicode_FromString(dtype_name(engine_runner(self->engine)->backend->dtype));
}

static PyObject *Engine_get_max_model_len(EngineObject *self, void *closure)
{
    (void)closure;
    if (!engine_ready(self)) return NULL;
    return PyLong_FromLong(engine_runner(self->engine)->rc.max_model_len);
}

static PyObject *Engine_get_model_config(EngineObject *self, void *closure)
{
    (void)closure;
    if (!engine_ready(self)) return NULL;
    const GPT2Config *c = &engine_runner(self->engine)->config;
    return Py_BuildValue("{sisisisisisisdss}", "n_embd", c->n_embd, "n_layer", c->n_layer,
                         "n_head", c->n_head, "head_size", c->head_size,
                         "n_positions", c->n_positions, "vocab_size", c->vocab_size,
                         "layer_norm_epsilon", (double)c->layer_norm_epsilon,
                         "activation_function", activation_name(c->activation));
}

static PyObject *Engine_get_stats(EngineObject *self, void *closure)
{
    (void)closure;
    if (!engine_ready(self)) return NULL;
    const EngineStats *s = engine_stats(self->engine);
    const ModelRunner *r = engine_runner(self->engine);
    PyObject *d = Py_BuildValue("{sLsLsLsLsLsLsLsLsLsi}", "num_steps", (long long)s->num_steps,
                         "num_steps_ahead", (long long)s->num_steps_ahead,
                         "num_preemptions", (long long)s->num_preemptions,
                         "prefix_cache_queries", (long long)s->prefix_cache_queries,
                         "prefix_cache_hits", (long long)s->prefix_cache_hits,
                         "prompt_tokens", (long long)s->prompt_tokens,
                         "generation_tokens", (long long)s->generation_tokens,
                         "graph_replays", (long long)r->num_graph_replays,
                         "eager_steps", (long long)r->num_eager_steps,
                         "num_cuda_graphs", r->num_graphs);
    if (!d) return NULL;
    /* per-phase wall time of engine_step (engine.h); time_python_s is the time
     * between steps not spent in the binding (the caller's Python) */
    double python = s->time_between_steps_s - s->time_binding_s;
    const struct { const char *key; double v; } times[] = {
        {"time_schedule_s", s->time_schedule_s}, {"time_prepare_s", s->time_prepare_s},
        {"time_forward_s", s->time_forward_s}, {"time_sample_setup_s", s->time_sample_setup_s},
        {"time_sample_s", s->time_sample_s}, {"time_update_s", s->time_update_s},
        {"time_outputs_s", s->time_outputs_s}, {"time_binding_s", s->time_binding_s},
        {"time_python_s", python > 0 ? python : 0.0},
    };
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        PyObject *v = PyFloat_FromDouble(times[i].v);
        if (!v || PyDict_SetItemString(d, times[i].key, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    return d;
}

static PyObject *Engine_get_tokenizer(EngineObject *self, void *closure)
{
    (void)closure;
    if (!self->tokenizer) {
        if (!engine_ready(self)) return NULL;
        ModuleState *st = state_of((PyObject *)self);
        self->tokenizer = PyObject_CallFunctionObjArgs(st->TokenizerType, self->tokenizer_dir,
                                                       NULL);
        if (!self->tokenizer) return NULL;
    }
    return Py_NewRef(self->tokenizer);
}

static PyObject *Engine_get_kv_cache(EngineObject *self, void *closure)
{
    (void)closure;
    if (!engine_ready(self)) return NULL;
    ModuleState *st = state_of((PyObject *)self);
    return PyObject_CallFunctionObjArgs(st->KVCacheType, (PyObject *)self, NULL);
}

static PyObject *Engine_get_async_scheduling(EngineObject *self, void *closure)
{
    (void)closure;
    if (!engine_ready(self)) return NULL;
    return PyBool_FromLong(engine_async_scheduling(self->engine));
}

static PyObject *Engine_get_closed(EngineObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->engine == NULL);
}

static PyGetSetDef Engine_getset[] = {
    {"attention_backend", (getter)Engine_get_attention_backend, NULL,
     "Name of the attention backend in use (CPU, PAGED, FLASH).", NULL},
    {"attention_backend_reason", (getter)Engine_get_attention_reason, NULL,
     "Why that backend was chosen.", NULL},
    {"fused_decode", (getter)Engine_get_fused_decode, NULL,
     "Whether batch-1 steps run as one fused kernel.", NULL},
    {"fused_decode_reason", (getter)Engine_get_fused_decode_reason, NULL,
     "Why the fused batch-1 kernel is on or off.", NULL},
    {"device", (getter)Engine_get_device, NULL, "'cpu' or 'cuda'.", NULL},
    {"async_scheduling", (getter)Engine_get_async_scheduling, NULL,
     "Whether generate() overlaps scheduling with the device (engine.h).", NULL},
    {"dtype", (getter)Engine_get_dtype, NULL, "Compute dtype.", NULL},
    {"max_model_len", (getter)Engine_get_max_model_len, NULL, "Longest sequence served.", NULL},
    {"model_config", (getter)Engine_get_model_config, NULL, "The model's GPT2Config.", NULL},
    {"stats", (getter)Engine_get_stats, NULL, "Counters: steps, preemptions, prefix cache.",
     NULL},
    {"tokenizer", (getter)Engine_get_tokenizer, NULL, "The model's Tokenizer.", NULL},
    {"kv_cache", (getter)Engine_get_kv_cache, NULL, "The paged KV cache (KVCache).", NULL},
    {"closed", (getter)Engine_get_closed, NULL, "True after close().", NULL},
    {NULL},
};

static PyMethodDef Engine_methods[] = {
    {"add_request", (PyCFunction)(void (*)(void))Engine_add_request,
     METH_VARARGS | METH_KEYWORDS, "add_request(request_id, prompt_token_ids, params)"},
    {"add_requests", (PyCFunction)(void (*)(void))Engine_add_requests,
     METH_VARARGS | METH_KEYWORDS,
     "add_requests(request_ids, prompts, params=None): queues len(request_ids) requests, "
     "all or none; prompts: one list of token ids (ints, no bools) per request; params: a "
     "SamplingParams for all, a list with one per request, or None (the defaults)."},
    {"abort_request", (PyCFunction)Engine_abort_request, METH_O, "abort_request(request_id)"},
    {"has_unfinished_requests", (PyCFunction)Engine_has_unfinished, METH_NOARGS, NULL},
    {"num_unfinished_requests", (PyCFunction)Engine_num_unfinished, METH_NOARGS, NULL},
    {"step", (PyCFunction)(void (*)(void))Engine_step, METH_VARARGS | METH_KEYWORDS,
     "step(*, finished_only=False, max_steps=1): runs scheduler steps until one reports "
     "outputs, none is unfinished or max_steps ran; returns the requests that progressed "
     "in the last one (only those that finished, with finished_only)."},
    {"compute_logits", (PyCFunction)Engine_compute_logits, METH_O,
     "compute_logits(prompt_token_ids) -> float32 array (n, vocab_size)"},
    {"close", (PyCFunction)Engine_close, METH_NOARGS, "Frees every byte the engine holds."},
    {NULL},
};

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    (void)kwargs;
    EngineObject *self = (EngineObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    /* the tokenizer dir is the second positional argument or the keyword */
    PyObject *tok = NULL;
    if (PyTuple_Size(args) >= 2) tok = PyTuple_GetItem(args, 1);
    else if (kwargs) tok = PyDict_GetItemString(kwargs, "tokenizer");
    if (tok) self->tokenizer_dir = Py_NewRef(tok);
    return (PyObject *)self;
}

static PyType_Slot Engine_slots[] = {
    {Py_tp_new, Engine_new},
    {Py_tp_init, Engine_init},
    {Py_tp_dealloc, Engine_dealloc},
    {Py_tp_traverse, Engine_traverse},
    {Py_tp_clear, Engine_clear},
    {Py_tp_methods, Engine_methods},
    {Py_tp_getset, Engine_getset},
    {Py_tp_doc, "Engine(model_dir, tokenizer_dir, *, dtype, device, ...): the C engine "
                "behind gpt2_engine.LLM."},
    {0, NULL},
};

static PyType_Spec Engine_spec = {
    .name = "gpt2_engine._C.Engine",
    .basicsize = sizeof(EngineObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Engine_slots,
};

static PyObject *py_checkpoint_dtype(PyObject *module, PyObject *arg)
{
    const char *dir = PyUnicode_AsUTF8(arg);
    if (!dir) return NULL;
    Checkpoint *ck = NULL;
    Error err = {0};
    if (checkpoint_open(&ck, dir, &err) != GPT2_OK) return raise_error(module_state(module), &err);
    DType dt = checkpoint_dtype(ck);
    checkpoint_close(ck);
    return PyUnicode_FromString(dtype_name(dt));
}

static PyObject *py_cuda_device_count(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    int n = 0;
    backend_cuda_available(&n);
    return PyLong_FromLong(n);
}

static PyMethodDef module_functions[] = {
    {"checkpoint_dtype", py_checkpoint_dtype, METH_O,
     "checkpoint_dtype(model_dir) -> stored dtype name of the checkpoint's weights"},
    {"cuda_device_count", py_cuda_device_count, METH_NOARGS,
     "Number of CUDA GPUs visible (0 in a CPU-only build)."},
    {NULL},
};

int llm_register(PyObject *module, ModuleState *st)
{
    if (PyArray_ImportNumPyAPI() < 0) return -1;
    st->LLMType = PyType_FromModuleAndSpec(module, &Engine_spec, NULL);
    if (!st->LLMType) return -1;
    if (PyModule_AddObjectRef(module, "Engine", st->LLMType) < 0) return -1;
    return PyModule_AddFunctions(module, module_functions);
}
