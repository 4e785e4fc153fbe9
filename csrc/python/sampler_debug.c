/* sampler_debug.c — test-only entry point _C._sample_cpu: runs the reference
 * sampler (sample_cpu, sampling.h) on host logits so tests can check every
 * logits processor against a NumPy implementation of the contract. Not part of
 * the public API.
 *
 *   _sample_cpu(logits, rows, adj=(), max_logprobs=0)
 *     logits: C-contiguous float32 buffer (R, V) (e.g. a numpy array)
 *     rows:   R dicts with SamplingRow fields (missing = off): temperature (1.0),
 *             top_k (0), top_p (1.0), min_p (0.0), presence_penalty (0.0),
 *             frequency_penalty (0.0), repetition_penalty (1.0), seed (0), step (0),
 *             target_token (-1), num_logprobs (0)
 *     adj:    tuples (row, token, output_count, in_prompt, bias), any order
 *   -> (tokens, logprobs, ranks, topk_ids, topk_logprobs) as lists
 *      (topk_*: R lists of max_logprobs entries).
 */
#include <stdlib.h>
#include <string.h>

#include "sampling.h"
#include "sampling_params.h"

static int row_float(PyObject *d, const char *key, float def, float *out)
{
    PyObject *v = PyDict_GetItemString(d, key);   /* borrowed */
    if (!v) {
        *out = def;
        return 0;
    }
    double x = PyFloat_AsDouble(v);
    if (x == -1.0 && PyErr_Occurred()) return -1;
    *out = (float)x;
    return 0;
}

static int row_int(PyObject *d, const char *key, long long def, long long *out)
{
    PyObject *v = PyDict_GetItemString(d, key);
    if (!v) {
        *out = def;
        return 0;
    }
    *out = PyLong_AsLongLong(v);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

static int row_parse(PyObject *d, SamplingRow *row)
{
    if (!PyDict_Check(d)) {
        PyErr_SetString(PyExc_TypeError, "_sample_cpu: rows must be dicts");
        return -1;
    }
    long long top_k, target, nlp, step;
    if (row_float(d, "temperature", 1.0f, &row->temperature) < 0 ||
        row_float(d, "top_p", 1.0f, &row->top_p) < 0 ||
        row_float(d, "min_p", 0.0f, &row->min_p) < 0 ||
        row_float(d, "presence_penalty", 0.0f, &row->presence_penalty) < 0 ||
        row_float(d, "frequency_penalty", 0.0f, &row->frequency_penalty) < 0 ||
        row_float(d, "repetition_penalty", 1.0f, &row->repetition_penalty) < 0 ||
        row_int(d, "top_k", 0, &top_k) < 0 || row_int(d, "target_token", -1, &target) < 0 ||
        row_int(d, "num_logprobs", 0, &nlp) < 0 || row_int(d, "step", 0, &step) < 0)
        return -1;
    PyObject *seed = PyDict_GetItemString(d, "seed");
    row->seed = 0;
    if (seed) {
        row->seed = PyLong_AsUnsignedLongLong(seed);
        if (PyErr_Occurred()) return -1;
    }
    row->top_k = (int)top_k;
    row->target_token = (int32_t)target;
    row->num_logprobs = (int32_t)nlp;
    row->step = (uint64_t)step;
    return 0;
}

static PyObject *list_i32(const int32_t *x, int n)
{
    PyObject *l = PyList_New(n);
    for (int i = 0; l && i < n; i++) PyList_SET_ITEM(l, i, PyLong_FromLong(x[i]));
    return l;
}

static PyObject *list_f32(const float *x, int n)
{
    PyObject *l = PyList_New(n);
    for (int i = 0; l && i < n; i++) PyList_SET_ITEM(l, i, PyFloat_FromDouble(x[i]));
    return l;
}

static PyObject *sample_cpu_py(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"logits", "rows", "adj", "max_logprobs", NULL};
    PyObject *logits_obj, *rows_obj, *adj_obj = NULL, *result = NULL;
    int max_logprobs = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|Oi:_sample_cpu", kwlist, &logits_obj,
                                     &rows_obj, &adj_obj, &max_logprobs))
        return NULL;
    Py_buffer buf;
    if (PyObject_GetBuffer(logits_obj, &buf, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    SamplingRow *rows = NULL;
    TokenAdjust *adj = NULL;
    int32_t *ints = NULL;
    float *floats = NULL;
    PyObject *rows_seq = NULL, *adj_seq = NULL;
    if (buf.ndim != 2 || strcmp(buf.format, "f") != 0) {
        PyErr_SetString(PyExc_ValueError, "_sample_cpu: logits must be a 2-D float32 array");
        goto done;
    }
    int R = (int)buf.shape[0], V = (int)buf.shape[1];
    rows_seq = PySequence_Fast(rows_obj, "_sample_cpu: rows must be a sequence");
    adj_seq = adj_obj ? PySequence_Fast(adj_obj, "_sample_cpu: adj must be a sequence")
                      : PyTuple_New(0);
    if (!rows_seq || !adj_seq) goto done;
    if (PySequence_Fast_GET_SIZE(rows_seq) != R) {
        PyErr_SetString(PyExc_ValueError, "_sample_cpu: need one row dict per logits row");
        goto done;
    }
    int n_adj = (int)PySequence_Fast_GET_SIZE(adj_seq);
    rows = calloc((size_t)R + 1, sizeof(SamplingRow));
    adj = calloc((size_t)n_adj + 1, sizeof(TokenAdjust));
    int *adj_row = calloc((size_t)n_adj + 1, sizeof(int));
    ints = calloc((size_t)R * (2 + (size_t)max_logprobs) + 1, sizeof(int32_t));
    floats = calloc((size_t)R * (1 + (size_t)max_logprobs) + 1, sizeof(float));
    if (!rows || !adj || !adj_row || !ints || !floats) {
        free(adj_row);
        PyErr_NoMemory();
        goto done;
    }
    for (int r = 0; r < R; r++)
        if (row_parse(PySequence_Fast_GET_ITEM(rows_seq, r), &rows[r]) < 0) {
            free(adj_row);
            goto done;
        }
    /* group the adjustments by row (stable), giving each row its [start, start+count) */
    TokenAdjust *tmp = calloc((size_t)n_adj + 1, sizeof(TokenAdjust));
    if (!tmp) {
        free(adj_row);
        PyErr_NoMemory();
        goto done;
    }
    for (int i = 0; i < n_adj; i++) {
        int row, token, count, in_prompt;
        float bias;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(adj_seq, i), "iiiif", &row, &token,
                              &count, &in_prompt, &bias) ||
            (row < 0 || row >= R ? (PyErr_SetString(PyExc_ValueError, "_sample_cpu: bad adj row"),
                                    1)
                                 : 0)) {
            free(adj_row);
            free(tmp);
            goto done;
        }
        adj_row[i] = row;
        tmp[i] = (TokenAdjust){token, count, in_prompt, bias};
    }
    int k = 0;
    for (int r = 0; r < R; r++) {
        rows[r].adj_start = k;
        for (int i = 0; i < n_adj; i++)
            if (adj_row[i] == r) adj[k++] = tmp[i];
        rows[r].adj_count = k - rows[r].adj_start;
    }
    free(tmp);
    free(adj_row);

    SamplerOutput out = {
        .tokens = ints, .ranks = ints + R, .topk_ids = max_logprobs ? ints + 2 * R : NULL,
        .logprobs = floats, .topk_logprobs = max_logprobs ? floats + R : NULL,
    };
    Error err = {0};
    Status s;
    Py_BEGIN_ALLOW_THREADS
    s = sample_cpu((const float *)buf.buf, R, V, rows, adj, n_adj, max_logprobs, &out, &err);
    Py_END_ALLOW_THREADS
    if (s != GPT2_OK) {
        raise_error(module_state(module), &err);
        goto done;
    }
    PyObject *top_ids = PyList_New(R), *top_lps = PyList_New(R);
    for (int r = 0; top_ids && top_lps && r < R; r++) {
        PyList_SET_ITEM(top_ids, r, list_i32(ints + 2 * R + (size_t)r * max_logprobs, max_logprobs));
        PyList_SET_ITEM(top_lps, r, list_f32(floats + R + (size_t)r * max_logprobs, max_logprobs));
    }
    if (top_ids && top_lps)
        result = Py_BuildValue("(NNNNN)", list_i32(ints, R), list_f32(floats, R),
                               list_i32(ints + R, R), top_ids, top_lps);
    else {
        Py_XDECREF(top_ids);
        Py_XDECREF(top_lps);
    }
done:
    free(rows);
    free(adj);
    free(ints);
    free(floats);
    Py_XDECREF(rows_seq);
    Py_XDECREF(adj_seq);
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef debug_methods[] = {
    {"_sample_cpu", (PyCFunction)(void (*)(void))sample_cpu_py, METH_VARARGS | METH_KEYWORDS,
     "Test-only: run the reference sampler on (R, V) float32 logits."},
    {NULL, NULL, 0, NULL},
};

int sampler_debug_register(PyObject *module, ModuleState *st)
{
    (void)st;
    return PyModule_AddFunctions(module, debug_methods);
}
