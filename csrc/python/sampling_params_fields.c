/* sampling_params_fields.c — what each SamplingParams field accepts and how it
 * maps to SamplingParamsC (engine.h): type checks, ranges (vLLM's), and the
 * Python values the getters return. The type itself is sampling_params.c. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampling_params_fields.h"

#define MAX_LOGPROBS 20

const char *const sampling_params_field_names[F_COUNT] = {
    "n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p",
    "top_k", "min_p", "seed", "stop", "stop_token_ids", "logit_bias",
    "include_stop_str_in_output", "ignore_eos", "max_tokens", "min_tokens", "logprobs",
    "prompt_logprobs", "skip_special_tokens",
};


/* ---- conversions ---- */

/* A float as the shortest decimal that round-trips through float32, so that
 * SamplingParams(temperature=0.7).temperature == 0.7. */
static PyObject *float_to_py(float f)
{
    if (!isfinite(f)) return PyFloat_FromDouble((double)f);
    for (int prec = 1; prec <= 9; prec++) {
        char *s = PyOS_double_to_string((double)f, 'g', prec, 0, NULL);
        if (!s) return NULL;
        double d = PyOS_string_to_double(s, NULL, NULL);
        PyMem_Free(s);
        if (d == -1.0 && PyErr_Occurred()) return NULL;
        if ((float)d == f) return PyFloat_FromDouble(d);
    }
    return PyFloat_FromDouble((double)f);
}

static int get_int(PyObject *v, const char *name, long long *out)
{
    if (!PyLong_Check(v) || PyBool_Check(v)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, got %.100s", name, Py_TYPE(v)->tp_name);
        return -1;
    }
    int overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (*out == -1 && PyErr_Occurred()) return -1;
    if (overflow) *out = overflow > 0 ? LLONG_MAX : LLONG_MIN;
    return 0;
}

static int get_double(PyObject *v, const char *name, double *out)
{
    if (!(PyFloat_Check(v) || PyLong_Check(v)) || PyBool_Check(v)) {
        PyErr_Format(PyExc_TypeError, "%s must be a float, got %.100s", name, Py_TYPE(v)->tp_name);
        return -1;
    }
    *out = PyFloat_AsDouble(v);
    if (*out == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s is too large for a float", name);
        return -1;
    }
    return 0;
}

static int get_bool(PyObject *v, const char *name, int *out)
{
    if (!PyBool_Check(v) && !PyLong_Check(v)) {
        PyErr_Format(PyExc_TypeError, "%s must be a bool, got %.100s", name, Py_TYPE(v)->tp_name);
        return -1;
    }
    int b = PyObject_IsTrue(v);
    if (b < 0) return -1;
    *out = b;
    return 0;
}

/* An int field in [lo, hi]; `range` is the allowed range as the message shows it. */
static int set_int_range(int *dst, PyObject *v, const char *name, long long lo, long long hi,
                         const char *range)
{
    long long x;
    if (get_int(v, name, &x) < 0) return -1;
    if (x < lo || x > hi) {
        PyErr_Format(PyExc_ValueError, "%s must be %s, got %lld", name, range, x);
        return -1;
    }
    *dst = (int)x;
    return 0;
}

/* A float field; ok(x) decides validity, `range` describes it. */
static int set_float(float *dst, PyObject *v, const char *name, int (*ok)(double),
                     const char *range)
{
    double x;
    if (get_double(v, name, &x) < 0) return -1;
    if (isnan(x) || !ok(x) || (isinf((float)x) && !isinf(x))) {
        PyErr_Format(PyExc_ValueError, "%s must be %s, got %R", name, range, v);
        return -1;
    }
    *dst = (float)x;
    return 0;
}

static int ok_temperature(double x) { return x >= 0.0 && x <= FLT_MAX; }
static int ok_top_p(double x) { return x > 0.0 && x <= 1.0 && (float)x > 0.0f; }
static int ok_unit(double x) { return x >= 0.0 && x <= 1.0; }
static int ok_penalty(double x) { return x >= -2.0 && x <= 2.0; }
static int ok_repetition(double x) { return x > 0.0 && x <= FLT_MAX && (float)x > 0.0f; }

static int set_seed(SamplingParamsC *p, PyObject *v)
{
    if (v == Py_None) {
        p->has_seed = 0;
        p->seed = 0;
        return 0;
    }
    if (!PyLong_Check(v) || PyBool_Check(v)) {
        PyErr_Format(PyExc_TypeError, "seed must be an int or None, got %.100s", Py_TYPE(v)->tp_name);
        return -1;
    }
    unsigned long long x = PyLong_AsUnsignedLongLong(v);
    if (x == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "seed must be None or an int in [0, 2**64), got %R", v);
        return -1;
    }
    p->has_seed = 1;
    p->seed = (uint64_t)x;
    return 0;
}

/* logit_bias: None or dict[int token id >= 0, float (finite or -inf)]. */
static int set_logit_bias(SamplingParamsC *p, PyObject *v)
{
    int32_t *ids = NULL;
    float *vals = NULL;
    Py_ssize_t n = 0;
    if (v != Py_None) {
        if (!PyDict_Check(v)) {
            PyErr_Format(PyExc_TypeError, "logit_bias must be a dict[int, float] or None, got %.100s",
                         Py_TYPE(v)->tp_name);
            return -1;
        }
        n = PyDict_Size(v);
        ids = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
        vals = malloc(sizeof(float) * (size_t)(n ? n : 1));
        if (!ids || !vals) {
            PyErr_NoMemory();
            goto fail;
        }
        PyObject *key, *value;
        Py_ssize_t pos = 0, i = 0;
        while (PyDict_Next(v, &pos, &key, &value)) {
            long long id;
            double b;
            if (get_int(key, "logit_bias key", &id) < 0) goto fail;
            if (id < 0 || id > INT32_MAX) {
                PyErr_Format(PyExc_ValueError, "logit_bias keys must be token ids >= 0, got %lld", id);
                goto fail;
            }
            if (get_double(value, "logit_bias value", &b) < 0) goto fail;
            if (isnan(b) || b == INFINITY) {
                PyErr_Format(PyExc_ValueError,
                             "logit_bias values must be finite or -inf, got %R for token %lld", value, id);
                goto fail;
            }
            ids[i] = (int32_t)id;
            vals[i] = (float)b;
            i++;
        }
    }
    free(p->logit_bias_ids);
    free(p->logit_bias_values);
    p->n_logit_bias = (int)n;
    p->logit_bias_ids = n ? ids : NULL;
    p->logit_bias_values = n ? vals : NULL;
    if (!n) {
        free(ids);
        free(vals);
    }
    return 0;
fail:
    free(ids);
    free(vals);
    return -1;
}

/* stop: None, a str, or a list/tuple of non-empty str. */
static int set_stop(SamplingParamsC *p, PyObject *v)
{
    PyObject *seq = NULL;
    char **strs = NULL;
    Py_ssize_t n = 0, done = 0;
    if (v != Py_None) {
        if (PyUnicode_Check(v)) {
            seq = PyTuple_Pack(1, v);
        } else if (PyList_Check(v) || PyTuple_Check(v)) {
            seq = PySequence_Tuple(v);
        } else {
            PyErr_Format(PyExc_TypeError, "stop must be a str, a list of str or None, got %.100s",
                         Py_TYPE(v)->tp_name);
            return -1;
        }
        if (!seq) return -1;
        n = PyTuple_GET_SIZE(seq);
        strs = calloc((size_t)(n ? n : 1), sizeof(char *));
        if (!strs) {
            PyErr_NoMemory();
            goto fail;
        }
        for (; done < n; done++) {
            PyObject *s = PyTuple_GET_ITEM(seq, done);
            if (!PyUnicode_Check(s)) {
                PyErr_Format(PyExc_TypeError, "stop must hold only str, got %.100s",
                             Py_TYPE(s)->tp_name);
                goto fail;
            }
            Py_ssize_t len;
            const char *u = PyUnicode_AsUTF8AndSize(s, &len);
            if (!u) goto fail;
            if (len == 0) {
                PyErr_SetString(PyExc_ValueError, "stop strings must be non-empty, got ''");
                goto fail;
            }
            if ((Py_ssize_t)strlen(u) != len) {
                PyErr_SetString(PyExc_ValueError, "stop strings must not contain NUL characters");
                goto fail;
            }
            strs[done] = malloc((size_t)len + 1);
            if (!strs[done]) {
                PyErr_NoMemory();
                goto fail;
            }
            memcpy(strs[done], u, (size_t)len + 1);
        }
        Py_DECREF(seq);
    }
    for (int i = 0; i < p->n_stop; i++) free(p->stop[i]);
    free(p->stop);
    p->n_stop = (int)n;
    p->stop = n ? strs : NULL;
    if (!n) free(strs);
    return 0;
fail:
    for (Py_ssize_t i = 0; strs && i < done; i++) free(strs[i]);
    free(strs);
    Py_XDECREF(seq);
    return -1;
}

/* stop_token_ids: None or a list/tuple of int token ids >= 0. */
static int set_stop_token_ids(SamplingParamsC *p, PyObject *v)
{
    int32_t *ids = NULL;
    Py_ssize_t n = 0;
    if (v != Py_None) {
        if (!PyList_Check(v) && !PyTuple_Check(v)) {
            PyErr_Format(PyExc_TypeError, "stop_token_ids must be a list of int or None, got %.100s",
                         Py_TYPE(v)->tp_name);
            return -1;
        }
        n = PySequence_Size(v);
        ids = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
        if (!ids) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = PySequence_GetItem(v, i);
            if (!item) goto fail;
            long long id;
            int rc = get_int(item, "stop_token_ids entries", &id);
            Py_DECREF(item);
            if (rc < 0) goto fail;
            if (id < 0 || id > INT32_MAX) {
                PyErr_Format(PyExc_ValueError, "stop_token_ids must be token ids >= 0, got %lld", id);
                goto fail;
            }
            ids[i] = (int32_t)id;
        }
    }
    free(p->stop_token_ids);
    p->n_stop_token_ids = (int)n;
    p->stop_token_ids = n ? ids : NULL;
    if (!n) free(ids);
    return 0;
fail:
    free(ids);
    return -1;
}

static int set_opt_logprobs(int *dst, PyObject *v, const char *name)
{
    if (v == Py_None) {
        *dst = -1;
        return 0;
    }
    return set_int_range(dst, v, name, 0, MAX_LOGPROBS, "None or an int in [0, 20]");
}

int sampling_params_field_set(SamplingParamsC *p, int f, PyObject *v)
{
    const char *name = sampling_params_field_names[f];
    if (!v) {
        PyErr_Format(PyExc_AttributeError, "cannot delete %s", name);
        return -1;
    }
    switch (f) {
    case F_N: return set_int_range(&p->n, v, name, 1, INT32_MAX, "at least 1");
    case F_PRESENCE:
        return set_float(&p->presence_penalty, v, name, ok_penalty, "in [-2, 2]");
    case F_FREQUENCY:
        return set_float(&p->frequency_penalty, v, name, ok_penalty, "in [-2, 2]");
    case F_REPETITION:
        return set_float(&p->repetition_penalty, v, name, ok_repetition, "> 0 (1 = off)");
    case F_TEMPERATURE:
        return set_float(&p->temperature, v, name, ok_temperature, ">= 0 (0 = greedy)");
    case F_TOP_P: return set_float(&p->top_p, v, name, ok_top_p, "in (0, 1]");
    case F_TOP_K: {
        long long k;
        if (get_int(v, name, &k) < 0) return -1;
        if (!(k == -1 || (k >= 1 && k <= INT32_MAX))) {
            PyErr_Format(PyExc_ValueError, "top_k must be -1 (disable) or at least 1, got %lld", k);
            return -1;
        }
        p->top_k = (int)k;
        return 0;
    }
    case F_MIN_P: return set_float(&p->min_p, v, name, ok_unit, "in [0, 1]");
    case F_SEED: return set_seed(p, v);
    case F_STOP: return set_stop(p, v);
    case F_STOP_TOKEN_IDS: return set_stop_token_ids(p, v);
    case F_LOGIT_BIAS: return set_logit_bias(p, v);
    case F_INCLUDE_STOP: return get_bool(v, name, &p->include_stop_str_in_output);
    case F_IGNORE_EOS: return get_bool(v, name, &p->ignore_eos);
    case F_MAX_TOKENS: return set_int_range(&p->max_tokens, v, name, 1, INT32_MAX, "at least 1");
    case F_MIN_TOKENS: return set_int_range(&p->min_tokens, v, name, 0, INT32_MAX, ">= 0");
    case F_LOGPROBS: return set_opt_logprobs(&p->logprobs, v, name);
    case F_PROMPT_LOGPROBS: return set_opt_logprobs(&p->prompt_logprobs, v, name);
    case F_SKIP_SPECIAL: return get_bool(v, name, &p->skip_special_tokens);
    }
    PyErr_SetString(PyExc_SystemError, "SamplingParams: unknown field");
    return -1;
}

int sampling_params_check(const SamplingParamsC *p)
{
    if (p->min_tokens > p->max_tokens) {
        PyErr_Format(PyExc_ValueError, "min_tokens must be <= max_tokens (%d), got %d",
                     p->max_tokens, p->min_tokens);
        return -1;
    }
    return 0;
}

static PyObject *ids_to_list(const int32_t *ids, int n)
{
    PyObject *list = PyList_New(n);
    for (int i = 0; list && i < n; i++) {
        PyObject *x = PyLong_FromLong(ids[i]);
        if (!x) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, x);
    }
    return list;
}

PyObject *sampling_params_field_get(const SamplingParamsC *p, int f)
{
    switch (f) {
    case F_N: return PyLong_FromLong(p->n);
    case F_PRESENCE: return float_to_py(p->presence_penalty);
    case F_FREQUENCY: return float_to_py(p->frequency_penalty);
    case F_REPETITION: return float_to_py(p->repetition_penalty);
    case F_TEMPERATURE: return float_to_py(p->temperature);
    case F_TOP_P: return float_to_py(p->top_p);
    case F_TOP_K: return PyLong_FromLong(p->top_k > 0 ? p->top_k : -1);
    case F_MIN_P: return float_to_py(p->min_p);
    case F_SEED:
        if (!p->has_seed) Py_RETURN_NONE;
        return PyLong_FromUnsignedLongLong(p->seed);
    case F_STOP: {
        PyObject *list = PyList_New(p->n_stop);
        for (int i = 0; list && i < p->n_stop; i++) {
            PyObject *s = PyUnicode_FromString(p->stop[i]);
            if (!s) {
                Py_CLEAR(list);
                break;
            }
            PyList_SET_ITEM(list, i, s);
        }
        return list;
    }
    case F_STOP_TOKEN_IDS: return ids_to_list(p->stop_token_ids, p->n_stop_token_ids);
    case F_LOGIT_BIAS: {
        if (!p->logit_bias_ids) Py_RETURN_NONE;
        PyObject *d = PyDict_New();
        for (int i = 0; d && i < p->n_logit_bias; i++) {
            PyObject *k = PyLong_FromLong(p->logit_bias_ids[i]);
            PyObject *v = float_to_py(p->logit_bias_values[i]);
            if (!k || !v || PyDict_SetItem(d, k, v) < 0) Py_CLEAR(d);
            Py_XDECREF(k);
            Py_XDECREF(v);
        }
        return d;
    }
    case F_INCLUDE_STOP: return PyBool_FromLong(p->include_stop_str_in_output);
    case F_IGNORE_EOS: return PyBool_FromLong(p->ignore_eos);
    case F_MAX_TOKENS: return PyLong_FromLong(p->max_tokens);
    case F_MIN_TOKENS: return PyLong_FromLong(p->min_tokens);
    case F_LOGPROBS:
        if (p->logprobs < 0) Py_RETURN_NONE;
        return PyLong_FromLong(p->logprobs);
    case F_PROMPT_LOGPROBS:
        if (p->prompt_logprobs < 0) Py_RETURN_NONE;
        return PyLong_FromLong(p->prompt_logprobs);
    case F_SKIP_SPECIAL: return PyBool_FromLong(p->skip_special_tokens);
    }
    PyErr_SetString(PyExc_SystemError, "SamplingParams: unknown field");
    return NULL;
}

