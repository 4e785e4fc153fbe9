/* sampling_params.c — gpt2_engine._C.SamplingParams: vLLM's sampling parameters as
 * a heap type holding one validated SamplingParamsC (engine.h). Keyword-only
 * constructor with vLLM's names and defaults; every attribute is settable and
 * validated the same way (sampling_params_fields.c: ValueError naming the field
 * and its allowed range, TypeError for a wrong type); repr like vLLM's;
 * pickling, clone(), equality. Token-id ranges (logit_bias, stop_token_ids) are
 * checked against the vocabulary by the engine at add_request. */
#include <stdint.h>
#include <string.h>

#include "sampling_params_fields.h"

typedef struct SamplingParamsObject {
    PyObject_HEAD
    SamplingParamsC p;
} SamplingParamsObject;

/* ---- the type ---- */

static PyObject *sp_getter(PyObject *self, void *closure)
{
    return sampling_params_field_get(&((SamplingParamsObject *)self)->p, (int)(intptr_t)closure);
}

static int sp_setter(PyObject *self, PyObject *v, void *closure)
{
    SamplingParamsC *p = &((SamplingParamsObject *)self)->p;
    int f = (int)(intptr_t)closure;
    int old_min = p->min_tokens, old_max = p->max_tokens;
    if (sampling_params_field_set(p, f, v) < 0) return -1;
    if (sampling_params_check(p) < 0) {
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
                if (strcmp(k, sampling_params_field_names[i]) == 0) f = i;
            if (f < 0) {
                if (!PyErr_Occurred())
                    PyErr_Format(PyExc_TypeError,
                                 "SamplingParams got an unexpected keyword argument %R", key);
                goto fail;
            }
            if (sampling_params_field_set(&fresh, f, value) < 0) goto fail;
        }
    }
    if (sampling_params_check(&fresh) < 0) goto fail;
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
        if (!v || PyDict_SetItemString(d, sampling_params_field_names[f], v) < 0) Py_CLEAR(d);
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
        PyObject *s = v ? PyUnicode_FromFormat("%s=%R", sampling_params_field_names[f], v) : NULL;
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
