/* sampling_params.c — gpt2_engine._C.SamplingParams: vLLM's sampling parameters as
 * a heap type holding one validated SamplingParamsC (engine.h). Keyword-only
 * constructor with vLLM's names and defaults; every attribute is settable and
 * validated the same way (ValueError naming the field and its allowed range,
 * TypeError for a wrong type); repr like vLLM's; pickling, clone(), equality.
 * Cross-field rule: min_tokens <= max_tokens. Token-id ranges (logit_bias,
 * stop_token_ids) are checked against the vocabulary by the engine. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampling_params.h"

#define MAX_LOGPROBS 20

typedef struct SamplingParamsObject {
    PyObject_HEAD
    SamplingParamsC p;
} SamplingParamsObject;

/* Field ids: the getset closure and the repr/pickle order (vLLM's repr order). */
enum Field {
    F_N, F_PRESENCE, F_FREQUENCY, F_REPETITION, F_TEMPERATURE, F_TOP_P, F_TOP_K, F_MIN_P,
    F_SEED, F_STOP, F_STOP_TOKEN_IDS, F_LOGIT_BIAS, F_INCLUDE_STOP, F_IGNORE_EOS, F_MAX_TOKENS,
    F_MIN_TOKENS, F_LOGPROBS, F_PROMPT_LOGPROBS, F_SKIP_SPECIAL, F_COUNT
};

static const char *const field_names[F_COUNT] = {
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
    *out = PyObject_IsTrue(v);
    return *out < 0 ? -1 : 0;
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

/* Sets one field of p from v, validated; cross-field checks are the caller's. */
static int field_set(SamplingParamsC *p, int f, PyObject *v)
{
    const char *name = field_names[f];
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

static int check_min_max(const SamplingParamsC *p)
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

static PyObject *field_get(const SamplingParamsC *p, int f)
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

/* ---- the type ---- */

static PyObject *sp_getter(PyObject *self, void *closure)
{
    return field_get(&((SamplingParamsObject *)self)->p, (int)(intptr_t)closure);
}

static int sp_setter(PyObject *self, PyObject *v, void *closure)
{
    SamplingParamsC *p = &((SamplingParamsObject *)self)->p;
    int f = (int)(intptr_t)closure;
    int old_min = p->min_tokens, old_max = p->max_tokens;
    if (field_set(p, f, v) < 0) return -1;
    if (check_min_max(p) < 0) {
        p->min_tokens = old_min;
        p->max_tokens = old_max;
        return -1;
    }
    return 0;
}

/* Applies a {name: value} dict to a fresh default copy and swaps it in on success. */
static int sp_apply(SamplingParamsObject *self, PyObject *kwds)
{
    SamplingParamsC fresh;
    sampling_params_default(&fresh);
    if (kwds) {
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        while (PyDict_Next(kwds, &pos, &key, &value)) {
            int f = -1;
            const char *k = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : NULL;
            for (int i = 0; k && i < F_COUNT; i++)
                if (strcmp(k, field_names[i]) == 0) f = i;
            if (f < 0) {
                if (!PyErr_Occurred())
                    PyErr_Format(PyExc_TypeError,
                                 "SamplingParams got an unexpected keyword argument %R", key);
                goto fail;
            }
            if (field_set(&fresh, f, value) < 0) goto fail;
        }
    }
    if (check_min_max(&fresh) < 0) goto fail;
    sampling_params_free(&self->p);
    self->p = fresh;
    return 0;
fail:
    sampling_params_free(&fresh);
    return -1;
}

static PyObject *sp_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    SamplingParamsObject *self = (SamplingParamsObject *)type->tp_alloc(type, 0);
    if (self) sampling_params_default(&self->p);
    return (PyObject *)self;
}

static int sp_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) > 0) {
        PyErr_SetString(PyExc_TypeError, "SamplingParams takes keyword arguments only");
        return -1;
    }
    return sp_apply((SamplingParamsObject *)self, kwds);
}

static void sp_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    sampling_params_free(&((SamplingParamsObject *)self)->p);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* {name: value} for every field (pickling, equality, repr). */
static PyObject *sp_asdict(PyObject *self, PyObject *unused)
{
    (void)unused;
    PyObject *d = PyDict_New();
    for (int f = 0; d && f < F_COUNT; f++) {
        PyObject *v = sp_getter(self, (void *)(intptr_t)f);
        if (!v || PyDict_SetItemString(d, field_names[f], v) < 0) Py_CLEAR(d);
        Py_XDECREF(v);
    }
    return d;
}

static PyObject *sp_repr(PyObject *self)
{
    PyObject *parts = PyList_New(0), *sep = NULL, *body = NULL, *out = NULL;
    if (!parts) return NULL;
    for (int f = 0; f < F_COUNT; f++) {
        PyObject *v = sp_getter(self, (void *)(intptr_t)f);
        PyObject *s = v ? PyUnicode_FromFormat("%s=%R", field_names[f], v) : NULL;
        Py_XDECREF(v);
        if (!s || PyList_Append(parts, s) < 0) {
            Py_XDECREF(s);
            goto done;
        }
        Py_DECREF(s);
    }
    sep = PyUnicode_FromString(", ");
    if (!sep || !(body = PyUnicode_Join(sep, parts))) goto done;
    out = PyUnicode_FromFormat("%s(%U)", _PyType_Name(Py_TYPE(self)), body);
done:
    Py_XDECREF(body);
    Py_XDECREF(sep);
    Py_DECREF(parts);
    return out;
}

static PyObject *sp_richcompare(PyObject *a, PyObject *b, int op)
{
    if ((op != Py_EQ && op != Py_NE) || !PyObject_TypeCheck(b, Py_TYPE(a)))
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *da = sp_asdict(a, NULL), *db = da ? sp_asdict(b, NULL) : NULL, *res = NULL;
    if (db) res = PyObject_RichCompare(da, db, op);
    Py_XDECREF(da);
    Py_XDECREF(db);
    return res;
}

static PyObject *sp_clone(PyObject *self, PyObject *unused)
{
    (void)unused;
    PyTypeObject *tp = Py_TYPE(self);
    SamplingParamsObject *copy = (SamplingParamsObject *)tp->tp_alloc(tp, 0);
    if (!copy) return NULL;
    sampling_params_default(&copy->p);
    Error err = {0};
    SamplingParamsC tmp;
    if (sampling_params_copy(&tmp, &((SamplingParamsObject *)self)->p, &err) != GPT2_OK) {
        Py_DECREF(copy);
        return raise_error(module_state_from_type(tp), &err);
    }
    copy->p = tmp;
    return (PyObject *)copy;
}

static PyObject *sp_deepcopy(PyObject *self, PyObject *memo)
{
    (void)memo;
    return sp_clone(self, NULL);
}

static PyObject *sp_reduce(PyObject *self, PyObject *unused)
{
    (void)unused;
    PyObject *state = sp_asdict(self, NULL);
    if (!state) return NULL;
    return Py_BuildValue("(O()N)", (PyObject *)Py_TYPE(self), state);
}

static PyObject *sp_setstate(PyObject *self, PyObject *state)
{
    if (!PyDict_Check(state)) {
        PyErr_SetString(PyExc_TypeError, "SamplingParams state must be a dict");
        return NULL;
    }
    if (sp_apply((SamplingParamsObject *)self, state) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef sp_methods[] = {
    {"clone", sp_clone, METH_NOARGS, "A deep copy."},
    {"__copy__", sp_clone, METH_NOARGS, NULL},
    {"__deepcopy__", sp_deepcopy, METH_O, NULL},
    {"__reduce__", sp_reduce, METH_NOARGS, NULL},
    {"__setstate__", sp_setstate, METH_O, NULL},
    {"to_dict", sp_asdict, METH_NOARGS, "Every field as a {name: value} dict."},
    {NULL, NULL, 0, NULL},
};

#define FIELD(f, name, doc) {name, sp_getter, sp_setter, doc, (void *)(intptr_t)(f)}
static PyGetSetDef sp_getset[] = {
    FIELD(F_N, "n",
          "Number of output sequences per prompt (>= 1)."),
    FIELD(F_PRESENCE, "presence_penalty",
          "Penalises tokens already generated (in [-2, 2])."),
    FIELD(F_FREQUENCY, "frequency_penalty",
          "Penalises tokens by how often they were generated (in [-2, 2])."),
    FIELD(F_REPETITION, "repetition_penalty",
          "Divides positive / multiplies negative logits of prompt or generated tokens (> 0; 1 = off)."),
    FIELD(F_TEMPERATURE, "temperature",
          "Softmax temperature (>= 0; 0 = greedy)."),
    FIELD(F_TOP_P, "top_p",
          "Nucleus sampling mass (in (0, 1]; 1 = off)."),
    FIELD(F_TOP_K, "top_k",
          "Keep the top_k most likely tokens (-1 = off, or >= 1)."),
    FIELD(F_MIN_P, "min_p",
          "Keep tokens with p >= min_p * max p (in [0, 1]; 0 = off)."),
    FIELD(F_SEED, "seed",
          "Per-request random seed (None: derived from the engine seed)."),
    FIELD(F_STOP, "stop",
          "Strings that stop generation (list of str)."),
    FIELD(F_STOP_TOKEN_IDS, "stop_token_ids",
          "Token ids that stop generation."),
    FIELD(F_LOGIT_BIAS, "logit_bias",
          "{token id: bias} added to the logits (None = off)."),
    FIELD(F_INCLUDE_STOP, "include_stop_str_in_output",
          "Keep the stop string in the output text."),
    FIELD(F_IGNORE_EOS, "ignore_eos",
          "Keep generating after the EOS token."),
    FIELD(F_MAX_TOKENS, "max_tokens",
          "Maximum number of tokens to generate (>= 1)."),
    FIELD(F_MIN_TOKENS, "min_tokens",
          "Minimum number of tokens before EOS / stop tokens may be sampled (>= 0)."),
    FIELD(F_LOGPROBS, "logprobs",
          "Number of top logprobs per generated token (None = off, 0..20)."),
    FIELD(F_PROMPT_LOGPROBS, "prompt_logprobs",
          "Number of top logprobs per prompt token (None = off, 0..20)."),
    FIELD(F_SKIP_SPECIAL, "skip_special_tokens",
          "Drop special tokens from the output text."),
    {NULL, NULL, NULL, NULL, NULL},
};
#undef FIELD

static PyType_Slot sp_slots[] = {
    {Py_tp_doc, (void *)"SamplingParams(*, n=1, temperature=1.0, top_p=1.0, top_k=-1, min_p=0.0, "
                        "seed=None, presence_penalty=0.0, frequency_penalty=0.0, "
                        "repetition_penalty=1.0, logit_bias=None, min_tokens=0, max_tokens=16, "
                        "stop=None, stop_token_ids=None, include_stop_str_in_output=False, "
                        "ignore_eos=False, logprobs=None, prompt_logprobs=None, "
                        "skip_special_tokens=True)\n\nvLLM's sampling parameters, validated."},
    {Py_tp_new, sp_new},
    {Py_tp_init, sp_init},
    {Py_tp_dealloc, sp_dealloc},
    {Py_tp_repr, sp_repr},
    {Py_tp_richcompare, sp_richcompare},
    {Py_tp_methods, sp_methods},
    {Py_tp_getset, sp_getset},
    {0, NULL},
};

static PyType_Spec sp_spec = {
    .name = "gpt2_engine._C.SamplingParams",
    .basicsize = sizeof(SamplingParamsObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = sp_slots,
};

const SamplingParamsC *sampling_params_get(PyObject *obj, ModuleState *st)
{
    if (!st || !st->SamplingParamsType ||
        !PyObject_TypeCheck(obj, (PyTypeObject *)st->SamplingParamsType)) {
        PyErr_Format(PyExc_TypeError, "sampling_params must be a SamplingParams, got %.100s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return &((SamplingParamsObject *)obj)->p;
}

int sampling_params_register(PyObject *module, ModuleState *st)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &sp_spec, NULL);
    if (!type) return -1;
    st->SamplingParamsType = type;
    return PyModule_AddObjectRef(module, "SamplingParams", type);
}
