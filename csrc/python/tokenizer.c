/* tokenizer.c (python) — gpt2_engine.Tokenizer: the Python face of the C
 * byte-level BPE in csrc/core/tokenizer.c. encode/encode_batch release the
 * GIL; encode_batch spreads texts over pthreads, one word cache per thread.
 * decode_stream drives the incremental detokenizer (for tests and streaming). */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "pyutil.h"
#include "detokenizer.h"
#include "tokenizer.h"

typedef struct TokenizerObject {
    PyObject_HEAD
    Tokenizer *tok;
    PyObject *path;   /* str: the directory the files came from */
    /* A word cache kept across encode calls (many short prompts). Whoever
     * holds cache_lock uses it; a concurrent caller takes a private one. */
    TokenizerCache *cache;
    pthread_mutex_t cache_lock;
    int lock_ready;
} TokenizerObject;

static PyObject *raise_for(PyObject *self, const Error *err)
{
    return raise_error(module_state_from_type(Py_TYPE(self)), err);
}

/* <directory of gpt2_engine/_C*.so>/data: the bundled GPT-2 vocabulary. */
static PyObject *default_dir(PyTypeObject *type)
{
    PyObject *module = PyType_GetModule(type);
    if (!module) return NULL;
    PyObject *file = PyModule_GetFilenameObject(module);
    if (!file) return NULL;
    PyObject *dir = NULL;
    Py_ssize_t k = PyUnicode_FindChar(file, '/', 0, PyUnicode_GET_LENGTH(file), -1);
    if (k == -1) {
        dir = PyUnicode_FromString("data");
    } else if (k >= 0) {
        PyObject *head = PyUnicode_Substring(file, 0, k);
        if (head) dir = PyUnicode_FromFormat("%U/data", head);
        Py_XDECREF(head);
    }
    Py_DECREF(file);
    return dir;
}

static int Tokenizer_init(PyObject *op, PyObject *args, PyObject *kwds)
{
    TokenizerObject *self = (TokenizerObject *)op;
    static char *kwlist[] = {"path", NULL};
    PyObject *path = Py_None, *dir = NULL, *bytes = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:Tokenizer", kwlist, &path)) return -1;
    if (self->tok) {   /* another thread may be encoding with it, GIL released */
        PyErr_SetString(PyExc_RuntimeError, "Tokenizer is already initialised");
        return -1;
    }
    if (path == Py_None) {
        if (!(dir = default_dir(Py_TYPE(op)))) return -1;
    } else {
        if (!(dir = PyOS_FSPath(path))) return -1;
        if (!PyUnicode_Check(dir)) {
            Py_DECREF(dir);
            PyErr_SetString(PyExc_TypeError, "Tokenizer: path must be a str or os.PathLike "
                            "naming a directory with vocab.json and merges.txt, or None");
            return -1;
        }
    }
    if (!PyUnicode_FSConverter(dir, &bytes)) { Py_DECREF(dir); return -1; }
    Tokenizer *tok = NULL;
    Error err = {0};
    Status st;
    Py_BEGIN_ALLOW_THREADS
    st = tokenizer_load_dir(&tok, PyBytes_AS_STRING(bytes), &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(bytes);
    if (st) { Py_DECREF(dir); raise_for(op, &err); return -1; }
    if (!self->lock_ready) {
        pthread_mutex_init(&self->cache_lock, NULL);
        self->lock_ready = 1;
    }
    self->cache = tokenizer_cache_create();  /* NULL is fine: encode then uses a temporary */
    self->tok = tok;
    Py_XSETREF(self->path, dir);
    return 0;
}

static void Tokenizer_dealloc(PyObject *op)
{
    TokenizerObject *self = (TokenizerObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    tokenizer_free(self->tok);
    tokenizer_cache_free(self->cache);
    if (self->lock_ready) pthread_mutex_destroy(&self->cache_lock);
    Py_XDECREF(self->path);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static int check_loaded(TokenizerObject *self)
{
    if (self->tok) return 0;
    PyErr_SetString(PyExc_RuntimeError, "Tokenizer.__init__ was not called");
    return -1;
}

static PyObject *ids_to_list(const int32_t *ids, size_t n)
{
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (!list) return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromLong(ids[i]);
        if (!v) { Py_DECREF(list); return NULL; }
        PyList_SET_ITEM(list, (Py_ssize_t)i, v);
    }
    return list;
}

static PyObject *Tokenizer_encode(PyObject *op, PyObject *args, PyObject *kwds)
{
    TokenizerObject *self = (TokenizerObject *)op;
    static char *kwlist[] = {"text", "allow_special", NULL};
    PyObject *text;
    int allow_special = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "U|p:encode", kwlist, &text, &allow_special))
        return NULL;
    if (check_loaded(self)) return NULL;
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(text, &n);
    if (!s) return NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    Error err = {0};
    Status st;
    Py_BEGIN_ALLOW_THREADS
    if (self->cache && pthread_mutex_trylock(&self->cache_lock) == 0) {
        st = tokenizer_encode_cached(self->tok, self->cache, s, (size_t)n, allow_special, &ids,
                                     &n_ids, &err);
        pthread_mutex_unlock(&self->cache_lock);
    } else {
        st = tokenizer_encode(self->tok, s, (size_t)n, allow_special, &ids, &n_ids, &err);
    }
    Py_END_ALLOW_THREADS
    if (st) return raise_for(op, &err);
    PyObject *list = ids_to_list(ids, n_ids);
    free(ids);
    return list;
}

/* ---- encode_batch: pthreads pulling texts from a shared counter ---------- */

typedef struct Batch {
    const Tokenizer *tok;
    int allow_special;
    size_t n;
    const char **texts; size_t *lens;   /* (n) */
    int32_t **ids; size_t *n_ids;        /* (n) results */
    atomic_size_t next;
    atomic_int failed;
    pthread_mutex_t lock;
    Error err;                            /* first failure */
} Batch;

static void *batch_worker(void *arg)
{
    Batch *b = arg;
    TokenizerCache *cache = tokenizer_cache_create();
    Error err = {0};
    for (;;) {
        size_t i = atomic_fetch_add(&b->next, 1);
        if (i >= b->n || atomic_load(&b->failed)) break;
        Status st = cache ? tokenizer_encode_cached(b->tok, cache, b->texts[i], b->lens[i],
                                                    b->allow_special, &b->ids[i], &b->n_ids[i], &err)
                          : error_set(&err, GPT2_ERR_NOMEM, "encode_batch: out of memory");
        if (st) {
            pthread_mutex_lock(&b->lock);
            if (!atomic_exchange(&b->failed, 1)) b->err = err;
            pthread_mutex_unlock(&b->lock);
            break;
        }
    }
    tokenizer_cache_free(cache);
    return NULL;
}

static PyObject *Tokenizer_encode_batch(PyObject *op, PyObject *args, PyObject *kwds)
{
    TokenizerObject *self = (TokenizerObject *)op;
    static char *kwlist[] = {"texts", "allow_special", "num_threads", NULL};
    PyObject *texts, *nt_obj = Py_None, *seq = NULL, *result = NULL;
    int allow_special = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|pO:encode_batch", kwlist, &texts,
                                     &allow_special, &nt_obj))
        return NULL;
    if (check_loaded(self)) return NULL;
    long nt;
    if (nt_obj == Py_None) {
        nt = sysconf(_SC_NPROCESSORS_ONLN);
        if (nt < 1) nt = 1;
    } else {
        nt = PyLong_AsLong(nt_obj);
        if (nt == -1 && PyErr_Occurred()) return NULL;
        if (nt < 1 || nt > 1024) {
            PyErr_Format(PyExc_ValueError, "encode_batch: num_threads must be in [1, 1024] or "
                         "None, got %ld", nt);
            return NULL;
        }
    }
    if (PyUnicode_Check(texts)) {
        PyErr_SetString(PyExc_TypeError, "encode_batch: texts must be a sequence of str, not a str");
        return NULL;
    }
    if (!(seq = PySequence_Fast(texts, "encode_batch: texts must be a sequence of str"))) return NULL;
    Batch b = {.tok = self->tok, .allow_special = allow_special};
    b.n = (size_t)PySequence_Fast_GET_SIZE(seq);
    size_t cap = b.n ? b.n : 1;
    b.texts = PyMem_Calloc(cap, sizeof *b.texts);
    b.lens = PyMem_Calloc(cap, sizeof *b.lens);
    b.ids = PyMem_Calloc(cap, sizeof *b.ids);
    b.n_ids = PyMem_Calloc(cap, sizeof *b.n_ids);
    pthread_t *threads = PyMem_Calloc((size_t)nt, sizeof *threads);
    if (!b.texts || !b.lens || !b.ids || !b.n_ids || !threads) { PyErr_NoMemory(); goto fail; }
    for (size_t i = 0; i < b.n; i++) {
        PyObject *t = PySequence_Fast_GET_ITEM(seq, (Py_ssize_t)i);
        if (!PyUnicode_Check(t)) {
            PyErr_Format(PyExc_TypeError, "encode_batch: texts[%zu] must be str, not %.100s", i,
                         Py_TYPE(t)->tp_name);
            goto fail;
        }
        Py_ssize_t len;
        if (!(b.texts[i] = PyUnicode_AsUTF8AndSize(t, &len))) goto fail;
        b.lens[i] = (size_t)len;
    }
    if ((size_t)nt > b.n) nt = b.n ? (long)b.n : 1;
    atomic_init(&b.next, 0);
    atomic_init(&b.failed, 0);
    pthread_mutex_init(&b.lock, NULL);
    long started = 0;
    Py_BEGIN_ALLOW_THREADS
    if (nt == 1) {
        batch_worker(&b);
    } else {
        for (; started < nt; started++)
            if (pthread_create(&threads[started], NULL, batch_worker, &b)) break;
        if (started == 0) batch_worker(&b);
        for (long i = 0; i < started; i++) pthread_join(threads[i], NULL);
    }
    Py_END_ALLOW_THREADS
    pthread_mutex_destroy(&b.lock);
    if (atomic_load(&b.failed)) { raise_for(op, &b.err); goto fail; }
    if (!(result = PyList_New((Py_ssize_t)b.n))) goto fail;
    for (size_t i = 0; i < b.n; i++) {
        PyObject *l = ids_to_list(b.ids[i], b.n_ids[i]);
        if (!l) { Py_CLEAR(result); goto fail; }
        PyList_SET_ITEM(result, (Py_ssize_t)i, l);
    }
fail:
    for (size_t i = 0; b.ids && i < b.n; i++) free(b.ids[i]);
    PyMem_Free(b.texts); PyMem_Free(b.lens); PyMem_Free(b.ids); PyMem_Free(b.n_ids);
    PyMem_Free(threads);
    Py_XDECREF(seq);
    return result;
}

/* ---- decode -------------------------------------------------------------- */

/* A sequence of ints -> PyMem int32 array. TypeError / ValueError naming fn. */
static int parse_ids(PyObject *obj, const char *fn, int32_t **out, size_t *n, int32_t vocab)
{
    *out = NULL; *n = 0;
    if (PyUnicode_Check(obj) || PyBytes_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: ids must be a sequence of int", fn);
        return -1;
    }
    PyObject *seq = PySequence_Fast(obj, "ids must be a sequence of int");
    if (!seq) return -1;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(seq);
    int32_t *ids = PyMem_Malloc((size_t)(len ? len : 1) * sizeof *ids);
    if (!ids) { Py_DECREF(seq); PyErr_NoMemory(); return -1; }
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *idx = PyNumber_Index(item);
        if (!idx) {
            PyErr_Format(PyExc_TypeError, "%s: ids must be a sequence of int, ids[%zd] is "
                         "%.100s", fn, i, Py_TYPE(item)->tp_name);
            goto fail;
        }
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(idx, &overflow);
        Py_DECREF(idx);
        if (overflow || v < 0 || v >= vocab) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "%s: ids[%zd] = %S is out of range [0, %d)", fn,
                             i, item, (int)vocab);
            goto fail;
        }
        ids[i] = (int32_t)v;
    }
    Py_DECREF(seq);
    *out = ids; *n = (size_t)len;
    return 0;
fail:
    Py_DECREF(seq);
    PyMem_Free(ids);
    return -1;
}

static PyObject *Tokenizer_decode(PyObject *op, PyObject *args, PyObject *kwds)
{
    TokenizerObject *self = (TokenizerObject *)op;
    static char *kwlist[] = {"ids", "skip_special_tokens", NULL};
    PyObject *ids_obj;
    int skip = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|p:decode", kwlist, &ids_obj, &skip))
        return NULL;
    if (check_loaded(self)) return NULL;
    int32_t *ids;
    size_t n;
    if (parse_ids(ids_obj, "decode", &ids, &n, tokenizer_vocab_size(self->tok))) return NULL;
    char *text = NULL;
    size_t len = 0;
    Error err = {0};
    Status st = tokenizer_decode(self->tok, ids, n, skip, &text, &len, &err);
    PyMem_Free(ids);
    if (st) return raise_for(op, &err);
    PyObject *res = PyUnicode_DecodeUTF8(text, (Py_ssize_t)len, "strict");
    free(text);
    return res;
}

/* One str per id: the text the incremental detokenizer emitted at that step;
 * the end-of-sequence flush (pending bytes -> U+FFFD) joins the last one. */
static PyObject *Tokenizer_decode_stream(PyObject *op, PyObject *args, PyObject *kwds)
{
    TokenizerObject *self = (TokenizerObject *)op;
    static char *kwlist[] = {"ids", "skip_special_tokens", NULL};
    PyObject *ids_obj, *list = NULL;
    int skip = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|p:decode_stream", kwlist, &ids_obj, &skip))
        return NULL;
    if (check_loaded(self)) return NULL;
    int32_t *ids;
    size_t n;
    if (parse_ids(ids_obj, "decode_stream", &ids, &n, tokenizer_vocab_size(self->tok))) return NULL;
    Detokenizer d;
    detokenizer_init(&d, self->tok, skip);
    Error err = {0};
    if (!(list = PyList_New((Py_ssize_t)n))) goto done;
    for (size_t i = 0; i < n; i++) {
        size_t before = d.text_len, fresh = 0;
        if (detokenizer_push(&d, ids[i], &fresh, &err) ||
            (i + 1 == n && detokenizer_flush(&d, NULL, &err))) {
            Py_CLEAR(list);
            raise_for(op, &err);
            goto done;
        }
        PyObject *s = PyUnicode_DecodeUTF8(d.text ? d.text + before : "",
                                           (Py_ssize_t)(d.text_len - before), "strict");
        if (!s) { Py_CLEAR(list); goto done; }
        PyList_SET_ITEM(list, (Py_ssize_t)i, s);
    }
done:
    detokenizer_free(&d);
    PyMem_Free(ids);
    return list;
}

static PyObject *Tokenizer_utf8_replace(PyObject *Py_UNUSED(cls), PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    uint8_t *out = PyMem_Malloc(3 * (size_t)view.len + 1);
    PyObject *res = NULL;
    if (!out) { PyErr_NoMemory(); goto done; }
    size_t m = utf8_replace(view.buf, (size_t)view.len, 1, out, NULL);
    res = PyUnicode_DecodeUTF8((const char *)out, (Py_ssize_t)m, "strict");
done:
    PyMem_Free(out);
    PyBuffer_Release(&view);
    return res;
}

static PyObject *Tokenizer_token_bytes(PyObject *op, PyObject *arg)
{
    TokenizerObject *self = (TokenizerObject *)op;
    if (check_loaded(self)) return NULL;
    long id = PyLong_AsLong(arg);
    if (id == -1 && PyErr_Occurred()) return NULL;
    size_t len;
    const uint8_t *b = (id < INT32_MIN || id > INT32_MAX) ? NULL
                                                          : tokenizer_token_bytes(self->tok, (int32_t)id, &len);
    if (!b)
        return PyErr_Format(PyExc_ValueError, "token_bytes: id %ld is out of range [0, %d)", id,
                            (int)tokenizer_vocab_size(self->tok));
    return PyBytes_FromStringAndSize((const char *)b, (Py_ssize_t)len);
}

static PyObject *Tokenizer_get_vocab_size(PyObject *op, void *Py_UNUSED(c))
{
    TokenizerObject *self = (TokenizerObject *)op;
    if (check_loaded(self)) return NULL;
    return PyLong_FromLong(tokenizer_vocab_size(self->tok));
}

static PyObject *Tokenizer_get_eos(PyObject *op, void *Py_UNUSED(c))
{
    TokenizerObject *self = (TokenizerObject *)op;
    if (check_loaded(self)) return NULL;
    int32_t id = tokenizer_eos_token_id(self->tok);
    if (id < 0) Py_RETURN_NONE;
    return PyLong_FromLong(id);
}

static PyObject *Tokenizer_get_path(PyObject *op, void *Py_UNUSED(c))
{
    TokenizerObject *self = (TokenizerObject *)op;
    return Py_NewRef(self->path ? self->path : Py_None);
}

static PyObject *Tokenizer_repr(PyObject *op)
{
    TokenizerObject *self = (TokenizerObject *)op;
    if (!self->tok) return PyUnicode_FromString("<gpt2_engine.Tokenizer (not initialised)>");
    return PyUnicode_FromFormat("Tokenizer(path=%R, vocab_size=%d)", self->path,
                                (int)tokenizer_vocab_size(self->tok));
}

static PyMethodDef Tokenizer_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))Tokenizer_encode, METH_VARARGS | METH_KEYWORDS,
     "encode(text, allow_special=True) -> list[int]\n\nGPT-2 byte-level BPE. allow_special: "
     "'<|endoftext|>' in text is the special token (like HF GPT2TokenizerFast); False treats it "
     "as plain text (tiktoken's encode_ordinary)."},
    {"encode_batch", (PyCFunction)(void (*)(void))Tokenizer_encode_batch,
     METH_VARARGS | METH_KEYWORDS,
     "encode_batch(texts, allow_special=True, num_threads=None) -> list[list[int]]\n\n"
     "Encodes many texts with the GIL released, on num_threads threads (None: one per CPU)."},
    {"decode", (PyCFunction)(void (*)(void))Tokenizer_decode, METH_VARARGS | METH_KEYWORDS,
     "decode(ids, skip_special_tokens=False) -> str\n\nBytes that are not valid UTF-8 become "
     "U+FFFD (errors='replace')."},
    {"decode_stream", (PyCFunction)(void (*)(void))Tokenizer_decode_stream,
     METH_VARARGS | METH_KEYWORDS,
     "decode_stream(ids, skip_special_tokens=False) -> list[str]\n\nThe incremental "
     "detokenizer: the new text after each id (complete characters only); the final flush "
     "joins the last item. ''.join(result) == decode(ids)."},
    {"token_bytes", Tokenizer_token_bytes, METH_O, "token_bytes(id) -> bytes of one token"},
    {"_utf8_replace", Tokenizer_utf8_replace, METH_O | METH_STATIC,
     "_utf8_replace(data) -> str: the C UTF-8 repair (testing hook; equals "
     "bytes(data).decode('utf-8', 'replace'))."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Tokenizer_getset[] = {
    {"vocab_size", Tokenizer_get_vocab_size, NULL, "number of tokens (50257 for GPT-2)", NULL},
    {"eos_token_id", Tokenizer_get_eos, NULL, "id of <|endoftext|> (None if absent)", NULL},
    {"path", Tokenizer_get_path, NULL, "directory holding vocab.json and merges.txt", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Tokenizer_slots[] = {
    {Py_tp_doc, "Tokenizer(path=None)\n\nGPT-2 byte-level BPE tokenizer (C). path: a directory "
                "with vocab.json and merges.txt; None: the GPT-2 vocabulary bundled with "
                "gpt2_engine."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, Tokenizer_init},
    {Py_tp_dealloc, Tokenizer_dealloc},
    {Py_tp_repr, Tokenizer_repr},
    {Py_tp_methods, Tokenizer_methods},
    {Py_tp_getset, Tokenizer_getset},
    {0, NULL},
};

static PyType_Spec Tokenizer_spec = {
    .name = "gpt2_engine.Tokenizer",
    .basicsize = sizeof(TokenizerObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Tokenizer_slots,
};

int tokenizer_register(PyObject *module, ModuleState *st)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &Tokenizer_spec, NULL);
    if (!type) return -1;
    st->TokenizerType = type;
    return PyModule_AddObjectRef(module, "Tokenizer", type);
}
