/* llm_inputs.c — Python arguments -> the arrays engine_add_request(s) take
 * (csrc/core/engine.h): one token-id sequence, or a whole batch of request ids,
 * prompts and SamplingParams converted and checked in one pass (the path of
 * LLM.generate, which would otherwise cross into C once per prompt). The
 * Python-level prompt forms (str, dicts, NumPy arrays) are not resolved here:
 * gpt2_engine/llm.py does that and hands over lists of ints. */
#include "llm.h"
#include "sampling_params.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

int32_t *ids_from_sequence(PyObject *seq, int *n_out, const char *what)
{
    PyObject *fast = PySequence_Fast(seq, what);
    if (!fast) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    int32_t *ids = malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
    if (!ids) { Py_DECREF(fast); PyErr_NoMemory(); return NULL; }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, i);
        if (!PyLong_Check(item)) {
            PyErr_Format(PyExc_TypeError, "%s must contain ints, got %.80s at index %zd", what,
                         Py_TYPE(item)->tp_name, i);
            goto fail;
        }
        long long v = PyLong_AsLongLong(item);
        if (v == -1 && PyErr_Occurred()) goto fail;
        if (v < INT32_MIN || v > INT32_MAX) {
            PyErr_Format(PyExc_ValueError, "%s: token id %lld at index %zd is out of range",
                         what, v, i);
            goto fail;
        }
        ids[i] = (int32_t)v;
    }
    Py_DECREF(fast);
    *n_out = (int)n;
    return ids;
fail:
    Py_DECREF(fast);
    free(ids);
    return NULL;
}

void request_batch_free(RequestBatch *b)
{
    free(b->ids);
    free(b->prompts);
    free(b->num_prompt);
    free(b->params);
    free(b->tokens);
    Py_CLEAR(b->id_seq);
    Py_CLEAR(b->prompt_seq);
    Py_CLEAR(b->param_seq);
    b->ids = NULL;
    b->prompts = NULL;
    b->num_prompt = NULL;
    b->params = NULL;
    b->tokens = NULL;
    b->n = 0;
}

/* prompts[i] (a list or tuple) of ints -> out[0..len); bools are refused, as
 * LLM's own prompt check does. */
static int batch_prompt_ids(PyObject *p, Py_ssize_t i, int32_t *out)
{
    Py_ssize_t len = PySequence_Fast_GET_SIZE(p);
    PyObject **items = PySequence_Fast_ITEMS(p);
    for (Py_ssize_t j = 0; j < len; j++) {
        PyObject *x = items[j];
        if (!PyLong_Check(x) || PyBool_Check(x)) {
            PyErr_Format(PyExc_TypeError, "prompts[%zd] must contain ints, got %.80s at index "
                         "%zd", i, Py_TYPE(x)->tp_name, j);
            return -1;
        }
        long long v = PyLong_AsLongLong(x);
        if (v == -1 && PyErr_Occurred()) return -1;
        if (v < INT32_MIN || v > INT32_MAX) {
            PyErr_Format(PyExc_ValueError, "prompts[%zd]: token id %lld at index %zd is out of "
                         "range", i, v, j);
            return -1;
        }
        out[j] = (int32_t)v;
    }
    return 0;
}

/* params: one SamplingParams for all, a list/tuple with one per request, or None. */
static int batch_params(RequestBatch *b, PyObject *params, ModuleState *st)
{
    if (params == Py_None) return 0;                   /* NULL entries: the defaults */
    if (!PyList_Check(params) && !PyTuple_Check(params)) {
        const SamplingParamsC *p = sampling_params_get(params, st);
        if (!p) return -1;
        for (int i = 0; i < b->n; i++) b->params[i] = p;
        return 0;
    }
    b->param_seq = PySequence_Fast(params, "params");
    if (!b->param_seq) return -1;
    if (PySequence_Fast_GET_SIZE(b->param_seq) != b->n) {
        PyErr_Format(PyExc_ValueError, "params must be one SamplingParams or a list with one "
                     "per request (%d), got a list of %zd", b->n,
                     PySequence_Fast_GET_SIZE(b->param_seq));
        return -1;
    }
    for (int i = 0; i < b->n; i++) {
        b->params[i] = sampling_params_get(PySequence_Fast_GET_ITEM(b->param_seq, i), st);
        if (!b->params[i]) return -1;
    }
    return 0;
}

int request_batch_init(RequestBatch *b, PyObject *ids, PyObject *prompts, PyObject *params,
                       ModuleState *st)
{
    memset(b, 0, sizeof *b);
    if (!PyList_Check(ids) && !PyTuple_Check(ids)) {
        PyErr_Format(PyExc_TypeError, "request_ids must be a list of str, got %.80s",
                     Py_TYPE(ids)->tp_name);
        return -1;
    }
    if (!PyList_Check(prompts) && !PyTuple_Check(prompts)) {
        PyErr_Format(PyExc_TypeError, "prompts must be a list of token-id lists, got %.80s",
                     Py_TYPE(prompts)->tp_name);
        return -1;
    }
    b->id_seq = PySequence_Fast(ids, "request_ids");
    b->prompt_seq = PySequence_Fast(prompts, "prompts");
    if (!b->id_seq || !b->prompt_seq) goto fail;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(b->id_seq);
    if (PySequence_Fast_GET_SIZE(b->prompt_seq) != n) {
        PyErr_Format(PyExc_ValueError, "prompts has %zd entries but request_ids has %zd",
                     PySequence_Fast_GET_SIZE(b->prompt_seq), n);
        goto fail;
    }
    if (n > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "a batch of %zd requests is too large", n);
        goto fail;
    }
    b->n = (int)n;
    size_t m = n > 0 ? (size_t)n : 1;
    b->ids = calloc(m, sizeof *b->ids);
    b->prompts = calloc(m, sizeof *b->prompts);
    b->num_prompt = calloc(m, sizeof *b->num_prompt);
    b->params = calloc(m, sizeof *b->params);
    if (!b->ids || !b->prompts || !b->num_prompt || !b->params) { PyErr_NoMemory(); goto fail; }
    size_t total = 0;
    for (int i = 0; i < b->n; i++) {
        PyObject *rid = PySequence_Fast_GET_ITEM(b->id_seq, i);
        PyObject *p = PySequence_Fast_GET_ITEM(b->prompt_seq, i);
        if (!PyUnicode_Check(rid)) {
            PyErr_Format(PyExc_TypeError, "request_ids[%d] must be a str, got %.80s", i,
                         Py_TYPE(rid)->tp_name);
            goto fail;
        }
        if (!(b->ids[i] = PyUnicode_AsUTF8(rid))) goto fail;
        if (!PyList_Check(p) && !PyTuple_Check(p)) {
            PyErr_Format(PyExc_TypeError, "prompts[%d] must be a list of token ids, got %.80s",
                         i, Py_TYPE(p)->tp_name);
            goto fail;
        }
        Py_ssize_t len = PySequence_Fast_GET_SIZE(p);
        if (len > INT_MAX) {
            PyErr_Format(PyExc_ValueError, "prompts[%d] has %zd tokens: too many", i, len);
            goto fail;
        }
        b->num_prompt[i] = (int)len;
        total += (size_t)len;
    }
    if (!(b->tokens = malloc((total ? total : 1) * sizeof *b->tokens))) {
        PyErr_NoMemory();
        goto fail;
    }
    int32_t *t = b->tokens;
    for (int i = 0; i < b->n; i++) {
        if (batch_prompt_ids(PySequence_Fast_GET_ITEM(b->prompt_seq, i), i, t) < 0) goto fail;
        b->prompts[i] = t;
        t += b->num_prompt[i];
    }
    if (batch_params(b, params, st) < 0) goto fail;
    return 0;
fail:
    request_batch_free(b);
    return -1;
}
