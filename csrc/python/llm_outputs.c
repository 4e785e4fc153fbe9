/* llm_outputs.c — the tuples Engine.step returns, built from the engine's
 * RequestOutputC views (csrc/core/engine.h), which are valid only until the
 * next step. gpt2_engine/llm.py turns them into the RequestOutput dataclasses.
 *
 * Ids (token ids, ranks) below the vocabulary size come from a table of int
 * objects kept per engine and filled on first use: a generate() step that
 * finishes 256 requests of 128 + 128 tokens hands out 65K ints, which would
 * otherwise be 65K allocations (ints are immutable, so sharing them is
 * invisible). */
#include "llm.h"

#include <stdlib.h>

void id_objects_free(EngineObject *self)
{
    for (int i = 0; self->id_objs && i < self->num_id_objs; i++) Py_XDECREF(self->id_objs[i]);
    free(self->id_objs);
    self->id_objs = NULL;
    self->num_id_objs = 0;
}

static int id_objects_init(EngineObject *self)
{
    int n = engine_runner(self->engine)->config.vocab_size;
    self->id_objs = calloc((size_t)(n > 0 ? n : 1), sizeof *self->id_objs);
    if (!self->id_objs) { PyErr_NoMemory(); return -1; }
    self->num_id_objs = n;
    return 0;
}

/* int32 ids -> list of int; values outside [0, vocab_size) are made afresh. */
static PyObject *id_list(EngineObject *self, const int32_t *v, int n)
{
    if (!self->id_objs && id_objects_init(self) < 0) return NULL;
    PyObject *list = PyList_New(n);
    if (!list) return NULL;
    for (int i = 0; i < n; i++) {
        int32_t t = v[i];
        PyObject *x;
        if (t >= 0 && t < self->num_id_objs) {
            x = self->id_objs[t];
            if (!x && !(x = self->id_objs[t] = PyLong_FromLong(t))) goto fail;
            Py_INCREF(x);
        } else if (!(x = PyLong_FromLong(t))) {
            goto fail;
        }
        PyList_SET_ITEM(list, i, x);
    }
    return list;
fail:
    Py_DECREF(list);
    return NULL;
}

static PyObject *float_list(const float *v, int n)
{
    PyObject *list = PyList_New(n);
    if (!list) return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *x = PyFloat_FromDouble(v[i]);
        if (!x) { Py_DECREF(list); return NULL; }
        PyList_SET_ITEM(list, i, x);
    }
    return list;
}

/* (lps, ranks, top_ids, top_lps) for n entries with k top entries each. */
static PyObject *logprob_tuple(EngineObject *self, const float *lps, const int32_t *ranks,
                               const int32_t *top_ids, const float *top_lps, int n, int k)
{
    PyObject *a = float_list(lps, n), *b = id_list(self, ranks, n);
    PyObject *c = PyList_New(n), *d = PyList_New(n);
    if (!a || !b || !c || !d) goto fail;
    for (int i = 0; i < n; i++) {
        PyObject *ci = id_list(self, top_ids ? top_ids + (size_t)i * k : NULL, top_ids ? k : 0);
        PyObject *di = float_list(top_lps ? top_lps + (size_t)i * k : NULL, top_lps ? k : 0);
        if (!ci || !di) { Py_XDECREF(ci); Py_XDECREF(di); goto fail; }
        PyList_SET_ITEM(c, i, ci);
        PyList_SET_ITEM(d, i, di);
    }
    return Py_BuildValue("(NNNN)", a, b, c, d);
fail:
    Py_XDECREF(a); Py_XDECREF(b); Py_XDECREF(c); Py_XDECREF(d);
    return NULL;
}

static const char *finish_name(FinishReason r)
{
    switch (r) {
    case FINISH_STOP: return "stop";
    case FINISH_LENGTH: return "length";
    case FINISH_ABORT: return "abort";
    default: return NULL;
    }
}

/* (index, text, token_ids, cumulative_logprob, logprobs, finish_reason, stop_reason) */
static PyObject *seq_tuple(EngineObject *self, const SeqOutput *s)
{
    PyObject *text = PyUnicode_DecodeUTF8(s->text ? s->text : "", (Py_ssize_t)s->text_len,
                                          "replace");
    PyObject *ids = id_list(self, s->token_ids, s->num_tokens);
    PyObject *lp = NULL, *reason = NULL, *stop = NULL;
    if (!text || !ids) goto fail;
    if (s->logprobs) {
        lp = logprob_tuple(self, s->logprobs, s->ranks, s->top_ids, s->top_logprobs,
                           s->num_tokens, s->num_top);
        if (!lp) goto fail;
    } else {
        lp = Py_NewRef(Py_None);
    }
    const char *fr = finish_name(s->finish_reason);
    reason = fr ? PyUnicode_FromString(fr) : Py_NewRef(Py_None);
    if (s->stop_reason_kind == 1) stop = PyLong_FromLong(s->stop_token);
    else if (s->stop_reason_kind == 2 && s->stop_str) stop = PyUnicode_FromString(s->stop_str);
    else stop = Py_NewRef(Py_None);
    if (!reason || !stop) goto fail;
    return Py_BuildValue("(iNNdNNN)", s->index, text, ids, s->cumulative_logprob, lp, reason,
                         stop);
fail:
    Py_XDECREF(text); Py_XDECREF(ids); Py_XDECREF(lp); Py_XDECREF(reason); Py_XDECREF(stop);
    return NULL;
}

/* A timestamp, None when the engine has not reached that point (0). */
static PyObject *time_or_none(double t)
{
    return t > 0 ? PyFloat_FromDouble(t) : Py_NewRef(Py_None);
}

PyObject *request_tuple(EngineObject *self, const RequestOutputC *o)
{
    PyObject *prompt = id_list(self, o->prompt_ids, o->num_prompt), *plp = NULL;
    PyObject *metrics = NULL, *seqs = PyList_New(o->num_seqs);
    if (!prompt || !seqs) goto fail;
    if (o->prompt_logprobs && o->num_prompt > 0) {
        const int k = o->prompt_num_top;
        plp = logprob_tuple(self, o->prompt_logprobs + 1, o->prompt_ranks + 1,
                            o->prompt_top_ids ? o->prompt_top_ids + k : NULL,
                            o->prompt_top_logprobs ? o->prompt_top_logprobs + k : NULL,
                            o->num_prompt - 1, k);
        if (!plp) goto fail;
    } else {
        plp = Py_NewRef(Py_None);
    }
    /* (arrival_time, first_scheduled_time, first_token_time, finished_time,
     * num_cached_tokens); a time the request has not reached yet is None */
    metrics = Py_BuildValue("(dNNNi)", o->arrival_time, time_or_none(o->first_scheduled_time),
                            time_or_none(o->first_token_time), time_or_none(o->finished_time),
                            o->num_cached_tokens);
    if (!metrics) goto fail;
    for (int i = 0; i < o->num_seqs; i++) {
        PyObject *t = seq_tuple(self, &o->seqs[i]);
        if (!t) goto fail;
        PyList_SET_ITEM(seqs, i, t);
    }
    return Py_BuildValue("(sNNONN)", o->request_id, prompt, plp,
                         o->finished ? Py_True : Py_False, metrics, seqs);
fail:
    Py_XDECREF(prompt); Py_XDECREF(plp); Py_XDECREF(metrics); Py_XDECREF(seqs);
    return NULL;
}
