/* kv_cache.c — gpt2_engine._C.KVCache: a read-only window on an engine's paged
 * KV cache (llm.kv_cache). Sizes, usage, block tables and prefix-cache
 * counters; on the CPU, key_cache(layer) / value_cache(layer) are NumPy views
 * of shape (num_blocks, num_heads, block_size, head_size) whose base keeps the
 * engine alive (and makes Engine.close() refuse while a view lives). */
#include "llm.h"

#define NPY_NO_DEPRECATED_API NPY_1_20_API_VERSION
#include <numpy/arrayobject.h>

#include <string.h>

typedef struct KVCacheObject {
    PyObject_HEAD
    EngineObject *owner;
} KVCacheObject;

/* The base object of an exported view: holds the engine and counts itself. */
typedef struct ViewOwner {
    PyObject_HEAD
    EngineObject *owner;
} ViewOwner;

static ModuleState *kv_state(PyObject *self) { return module_state_from_type(Py_TYPE(self)); }

static const Engine *live_engine(KVCacheObject *self)
{
    if (!self->owner->engine) {
        PyErr_SetString(kv_state((PyObject *)self)->EngineError, "the engine is closed");
        return NULL;
    }
    return self->owner->engine;
}

static PyObject *KVCache_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *owner;
    if (kwargs && PyDict_Size(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "KVCache() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O", &owner)) return NULL;
    ModuleState *st = module_state_from_type(type);
    if (!PyObject_TypeCheck(owner, (PyTypeObject *)st->LLMType)) {
        PyErr_SetString(PyExc_TypeError, "KVCache(engine): engine must be a gpt2_engine._C.Engine");
        return NULL;
    }
    KVCacheObject *self = (KVCacheObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->owner = (EngineObject *)Py_NewRef(owner);
    return (PyObject *)self;
}

static void KVCache_dealloc(KVCacheObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->owner);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int KVCache_traverse(KVCacheObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->owner);
    return 0;
}

static int KVCache_clear(KVCacheObject *self)
{
    Py_CLEAR(self->owner);
    return 0;
}

#define RUNNER_INT_GETTER(name, expr)                                              \
    static PyObject *KVCache_get_##name(KVCacheObject *self, void *closure)        \
    {                                                                              \
        (void)closure;                                                             \
        const Engine *e = live_engine(self);                                       \
        if (!e) return NULL;                                                       \
        const ModelRunner *r = engine_runner(e);                                   \
        (void)r;                                                                   \
        return PyLong_FromLongLong((long long)(expr));                            \
    }

RUNNER_INT_GETTER(num_blocks, engine_num_blocks(e))
RUNNER_INT_GETTER(block_size, r->rc.block_size)
RUNNER_INT_GETTER(num_layers, r->config.n_layer)
RUNNER_INT_GETTER(num_heads, r->config.n_head)
RUNNER_INT_GETTER(head_size, r->config.head_size)
RUNNER_INT_GETTER(num_free_blocks, engine_num_free_blocks(e))
RUNNER_INT_GETTER(nbytes, r->kv_bytes)
RUNNER_INT_GETTER(prefix_cache_queries, engine_stats(e)->prefix_cache_queries)
RUNNER_INT_GETTER(prefix_cache_hits, engine_stats(e)->prefix_cache_hits)

static PyObject *KVCache_get_dtype(KVCacheObject *self, void *closure)
{
    (void)closure;
    const Engine *e = live_engine(self);
    if (!e) return NULL;
    return PyUnicode_FromString(dtype_name(engine_runner(e)->backend->dtype));
}

static PyObject *KVCache_get_usage(KVCacheObject *self, void *closure)
{
    (void)closure;
    const Engine *e = live_engine(self);
    if (!e) return NULL;
    int total = engine_num_blocks(e);
    return PyFloat_FromDouble(total ? 1.0 - (double)engine_num_free_blocks(e) / total : 0.0);
}

static PyObject *KVCache_get_hit_rate(KVCacheObject *self, void *closure)
{
    (void)closure;
    const Engine *e = live_engine(self);
    if (!e) return NULL;
    const EngineStats *s = engine_stats(e);
    return PyFloat_FromDouble(s->prefix_cache_queries
                                  ? (double)s->prefix_cache_hits / s->prefix_cache_queries : 0.0);
}

static PyObject *KVCache_block_table(KVCacheObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"request_id", "seq", NULL};
    const char *rid;
    int seq = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s|i", kwlist, &rid, &seq)) return NULL;
    const Engine *e = live_engine(self);
    if (!e) return NULL;
    const int32_t *ids = NULL;
    int n = engine_block_table(e, rid, seq, &ids);
    if (n < 0) {
        PyErr_Format(PyExc_KeyError, "no live request '%s' with sequence %d", rid, seq);
        return NULL;
    }
    PyObject *list = PyList_New(n);
    if (!list) return NULL;
    for (int i = 0; i < n; i++) PyList_SET_ITEM(list, i, PyLong_FromLong(ids[i]));
    return list;
}

/* ---- NumPy views (CPU only) ---- */

static void ViewOwner_dealloc(ViewOwner *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->owner) self->owner->num_views--;
    Py_CLEAR(self->owner);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyType_Slot ViewOwner_slots[] = {
    {Py_tp_dealloc, ViewOwner_dealloc},
    {Py_tp_doc, "Keeps an engine alive while a NumPy view of its KV cache exists."},
    {0, NULL},
};

static PyType_Spec ViewOwner_spec = {
    .name = "gpt2_engine._C._KVCacheViewOwner",
    .basicsize = sizeof(ViewOwner),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = ViewOwner_slots,
};

static PyObject *cache_view(KVCacheObject *self, PyObject *arg, int value)
{
    const Engine *e = live_engine(self);
    if (!e) return NULL;
    const ModelRunner *r = engine_runner(e);
    long layer = PyLong_AsLong(arg);
    if (layer == -1 && PyErr_Occurred()) return NULL;
    if (layer < 0 || layer >= r->config.n_layer) {
        PyErr_Format(PyExc_IndexError, "layer %ld out of range [0, %d)", layer,
                     r->config.n_layer);
        return NULL;
    }
    if (strcmp(r->backend->name, "cpu") != 0) {
        PyErr_SetString(PyExc_ValueError, "key_cache()/value_cache() views exist on the CPU "
                        "only; the cache lives in GPU memory");
        return NULL;
    }
    PyObject *mod = PyType_GetModule(Py_TYPE(self));
    PyObject *owner_type = mod ? PyObject_GetAttrString(mod, "_KVCacheViewOwner") : NULL;
    if (!owner_type) return NULL;
    ViewOwner *owner = PyObject_New(ViewOwner, (PyTypeObject *)owner_type);
    Py_DECREF(owner_type);
    if (!owner) return NULL;
    owner->owner = (EngineObject *)Py_NewRef(self->owner);
    self->owner->num_views++;
    npy_intp dims[4] = {r->num_kv_blocks, r->config.n_head, r->rc.block_size,
                        r->config.head_size};
    void *data = value ? r->value_cache[layer] : r->key_cache[layer];
    PyObject *arr = PyArray_New(&PyArray_Type, 4, dims, NPY_FLOAT32, NULL, data, 0,
                                NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED, NULL);
    if (!arr) { Py_DECREF(owner); return NULL; }
    if (PyArray_SetBaseObject((PyArrayObject *)arr, (PyObject *)owner) < 0) {
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

static PyObject *KVCache_key_cache(KVCacheObject *self, PyObject *arg) { return cache_view(self, arg, 0); }
static PyObject *KVCache_value_cache(KVCacheObject *self, PyObject *arg) { return cache_view(self, arg, 1); }

static PyObject *KVCache_repr(KVCacheObject *self)
{
    if (!self->owner->engine) return PyUnicode_FromString("KVCache(closed)");
    const Engine *e = self->owner->engine;
    const ModelRunner *r = engine_runner(e);
    return PyUnicode_FromFormat("KVCache(num_blocks=%d, block_size=%d, num_layers=%d, "
                                "num_heads=%d, head_size=%d, dtype=%s, num_free_blocks=%d)",
                                engine_num_blocks(e), r->rc.block_size, r->config.n_layer,
                                r->config.n_head, r->config.head_size,
                                dtype_name(r->backend->dtype), engine_num_free_blocks(e));
}

static PyGetSetDef KVCache_getset[] = {
    {"num_blocks", (getter)KVCache_get_num_blocks, NULL, "Physical blocks.", NULL},
    {"block_size", (getter)KVCache_get_block_size, NULL, "Tokens per block.", NULL},
    {"num_layers", (getter)KVCache_get_num_layers, NULL, NULL, NULL},
    {"num_heads", (getter)KVCache_get_num_heads, NULL, NULL, NULL},
    {"head_size", (getter)KVCache_get_head_size, NULL, NULL, NULL},
    {"dtype", (getter)KVCache_get_dtype, NULL, NULL, NULL},
    {"nbytes", (getter)KVCache_get_nbytes, NULL, "Bytes of K and V over all layers.", NULL},
    {"num_free_blocks", (getter)KVCache_get_num_free_blocks, NULL,
     "Blocks no live request holds (cached-but-unreferenced blocks count as free).", NULL},
    {"usage", (getter)KVCache_get_usage, NULL, "Fraction of blocks held by live requests.",
     NULL},
    {"prefix_cache_queries", (getter)KVCache_get_prefix_cache_queries, NULL,
     "Prompt tokens looked up in the prefix cache.", NULL},
    {"prefix_cache_hits", (getter)KVCache_get_prefix_cache_hits, NULL,
     "Prompt tokens served from the prefix cache.", NULL},
    {"prefix_cache_hit_rate", (getter)KVCache_get_hit_rate, NULL, NULL, NULL},
    {NULL},
};

static PyMethodDef KVCache_methods[] = {
    {"block_table", (PyCFunction)(void (*)(void))KVCache_block_table,
     METH_VARARGS | METH_KEYWORDS, "block_table(request_id, seq=0) -> list of block ids"},
    {"key_cache", (PyCFunction)KVCache_key_cache, METH_O,
     "key_cache(layer) -> float32 view (num_blocks, num_heads, block_size, head_size); CPU only"},
    {"value_cache", (PyCFunction)KVCache_value_cache, METH_O,
     "value_cache(layer) -> like key_cache"},
    {NULL},
};

static PyType_Slot KVCache_slots[] = {
    {Py_tp_new, KVCache_new},
    {Py_tp_dealloc, KVCache_dealloc},
    {Py_tp_traverse, KVCache_traverse},
    {Py_tp_clear, KVCache_clear},
    {Py_tp_repr, KVCache_repr},
    {Py_tp_methods, KVCache_methods},
    {Py_tp_getset, KVCache_getset},
    {Py_tp_doc, "The engine's paged KV cache (llm.kv_cache)."},
    {0, NULL},
};

static PyType_Spec KVCache_spec = {
    .name = "gpt2_engine._C.KVCache",
    .basicsize = sizeof(KVCacheObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = KVCache_slots,
};

int kv_cache_register(PyObject *module, ModuleState *st)
{
    if (PyArray_ImportNumPyAPI() < 0) return -1;
    st->KVCacheType = PyType_FromModuleAndSpec(module, &KVCache_spec, NULL);
    if (!st->KVCacheType) return -1;
    if (PyModule_AddObjectRef(module, "KVCache", st->KVCacheType) < 0) return -1;
    PyObject *owner = PyType_FromModuleAndSpec(module, &ViewOwner_spec, NULL);
    if (!owner) return -1;
    int rc = PyModule_AddObjectRef(module, "_KVCacheViewOwner", owner);
    Py_DECREF(owner);
    return rc;
}
