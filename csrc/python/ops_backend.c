/* ops_backend.c — test entry points that run one BackendOps entry on NumPy data:
 * _C._backend_op_<name>(device, dtype, ...arrays...). Each call creates a backend
 * ("cpu" or "cuda", compute dtype by name), uploads the inputs (float arrays are
 * float32 on the Python side and rounded to the compute dtype on the way in;
 * index arrays are int32), runs the op, downloads the result as float32, and
 * destroys the backend. For the tests (tests/test_cuda_backend.py), not for speed.
 * Registered by ops_backend_register. */
#include "ops_ctx.h"

#include <numpy/arrayobject.h>
#include <string.h>

#include "backend.h"
#include "config.h"

int ops_backend_register(PyObject *module, ModuleState *st);

/* A float32 array converted to the backend's compute dtype. */
static void *upload_f(OpsCtx *c, PyArrayObject *a) { return ops_upload_arr(c, a, c->b->dtype); }

static int want_ndim(PyArrayObject *a, int nd, const char *name)
{
    if (PyArray_NDIM(a) == nd) return 0;
    PyErr_Format(PyExc_ValueError, "%s must have %d dimensions, got %d", name, nd,
                 PyArray_NDIM(a));
    return -1;
}


static PyObject *op_embed(PyObject *self, PyObject *args)
{
    const char *device, *dtype;
    PyObject *io, *po, *teo, *peo, *res = NULL;
    PyArrayObject *ids = NULL, *pos = NULL, *wte = NULL, *wpe = NULL;
    OpsCtx c = {0};
    if (!PyArg_ParseTuple(args, "ssOOOO", &device, &dtype, &io, &po, &teo, &peo)) return NULL;
    if (!(ids = ops_as_i32(io)) || !(pos = ops_as_i32(po)) || !(wte = ops_as_f32(teo)) || !(wpe = ops_as_f32(peo)))
        goto done;
    if (want_ndim(ids, 1, "ids") < 0 || want_ndim(pos, 1, "pos") < 0 ||
        want_ndim(wte, 2, "wte") < 0 || want_ndim(wpe, 2, "wpe") < 0)
        goto done;
    const npy_intp T = PyArray_DIM(ids, 0), C = PyArray_DIM(wte, 1);
    if (PyArray_DIM(pos, 0) != T || PyArray_DIM(wpe, 1) != C) {
        PyErr_SetString(PyExc_ValueError, "embed: ids/pos lengths or wte/wpe widths differ");
        goto done;
    }
    for (npy_intp t = 0; t < T; t++) {
        const int32_t i = ((int32_t *)PyArray_DATA(ids))[t], p = ((int32_t *)PyArray_DATA(pos))[t];
        if (i < 0 || i >= PyArray_DIM(wte, 0) || p < 0 || p >= PyArray_DIM(wpe, 0)) {
            PyErr_Format(PyExc_ValueError, "embed: ids/pos out of range at %d", (int)t);
            goto done;
        }
    }
    if (ops_ctx_open(&c, self, device, dtype) < 0) goto done;
    void *di = ops_upload_raw32(&c, ids), *dp = di ? ops_upload_raw32(&c, pos) : NULL;
    void *dte = dp ? upload_f(&c, wte) : NULL, *dpe = dte ? upload_f(&c, wpe) : NULL;
    void *dout = dpe ? ops_ctx_alloc(&c, (size_t)(T * C) * dtype_size(c.b->dtype)) : NULL;
    if (!dout) goto done;
    if (ops_ctx_check(&c, c.b->ops->embed(c.b, dout, di, dp, dte, dpe, (int)T, (int)C, &c.err)) < 0)
        goto done;
    npy_intp dims[2] = {T, C};
    res = ops_download(&c, dout, c.b->dtype, 2, dims);
done:
    ops_ctx_close(&c);
    Py_XDECREF(ids); Py_XDECREF(pos); Py_XDECREF(wte); Py_XDECREF(wpe);
    return res;
}

static PyObject *op_layernorm(PyObject *self, PyObject *args)
{
    const char *device, *dtype;
    PyObject *xo, *wo, *bo, *res = NULL;
    double eps;
    PyArrayObject *x = NULL, *w = NULL, *bb = NULL;
    OpsCtx c = {0};
    if (!PyArg_ParseTuple(args, "ssOOOd", &device, &dtype, &xo, &wo, &bo, &eps)) return NULL;
    if (!(x = ops_as_f32(xo)) || !(w = ops_as_f32(wo)) || !(bb = ops_as_f32(bo))) goto done;
    if (want_ndim(x, 2, "x") < 0) goto done;
    const npy_intp T = PyArray_DIM(x, 0), C = PyArray_DIM(x, 1);
    if (PyArray_SIZE(w) != C || PyArray_SIZE(bb) != C) {
        PyErr_SetString(PyExc_ValueError, "layernorm: w and b must have C elements");
        goto done;
    }
    if (ops_ctx_open(&c, self, device, dtype) < 0) goto done;
    void *dx = upload_f(&c, x), *dw = dx ? upload_f(&c, w) : NULL, *db = dw ? upload_f(&c, bb) : NULL;
    void *dy = db ? ops_ctx_alloc(&c, (size_t)(T * C) * dtype_size(c.b->dtype)) : NULL;
    if (!dy) goto done;
    if (ops_ctx_check(&c, c.b->ops->layernorm(c.b, dy, dx, dw, db, (int)T, (int)C, (float)eps,
                                          &c.err)) < 0)
        goto done;
    npy_intp dims[2] = {T, C};
    res = ops_download(&c, dy, c.b->dtype, 2, dims);
done:
    ops_ctx_close(&c);
    Py_XDECREF(x); Py_XDECREF(w); Py_XDECREF(bb);
    return res;
}

/* matmul, or layernorm_matmul when ln = (ln_w (K), ln_b (K), eps) is given */
static PyObject *op_matmul(PyObject *self, PyObject *args)
{
    const char *device, *dtype;
    PyObject *xo, *wo, *bo, *oo, *lno = Py_None, *res = NULL, *gwo = NULL, *gbo = NULL;
    int flags, act;
    double eps = 0.0;
    PyArrayObject *x = NULL, *w = NULL, *bb = NULL, *o = NULL, *gw = NULL, *gb = NULL;
    OpsCtx c = {0};
    if (!PyArg_ParseTuple(args, "ssOOOiiO|O", &device, &dtype, &xo, &wo, &bo, &flags, &act, &oo,
                          &lno))
        return NULL;
    if (lno != Py_None && !PyArg_ParseTuple(lno, "OOd", &gwo, &gbo, &eps)) return NULL;
    if (!(x = ops_as_f32(xo)) || !(w = ops_as_f32(wo))) goto done;
    if (bo != Py_None && !(bb = ops_as_f32(bo))) goto done;
    if (oo != Py_None && !(o = ops_as_f32(oo))) goto done;
    if (gwo && (!(gw = ops_as_f32(gwo)) || !(gb = ops_as_f32(gbo)))) goto done;
    if (want_ndim(x, 2, "x") < 0 || want_ndim(w, 2, "w") < 0) goto done;
    const npy_intp M = PyArray_DIM(x, 0), K = PyArray_DIM(x, 1);
    const int wnk = (flags & MATMUL_W_NK) != 0;
    const npy_intp N = PyArray_DIM(w, wnk ? 0 : 1);
    if (PyArray_DIM(w, wnk ? 1 : 0) != K || (bb && PyArray_SIZE(bb) != N) ||
        (o && PyArray_SIZE(o) != M * N) || ((flags & MATMUL_ACCUMULATE) && !o) ||
        (gw && (PyArray_SIZE(gw) != K || PyArray_SIZE(gb) != K))) {
        PyErr_SetString(PyExc_ValueError,
                        "matmul: shapes disagree (x (M,K), w (K,N) or (N,K) with W_NK, bias (N), "
                        "out (M,N) required with ACCUMULATE, ln weights (K))");
        goto done;
    }
    if (ops_ctx_open(&c, self, device, dtype) < 0) goto done;
    const size_t es = dtype_size(c.b->dtype);
    void *dx = upload_f(&c, x), *dw = dx ? upload_f(&c, w) : NULL, *db = NULL, *dout = NULL;
    void *dgw = NULL, *dgb = NULL, *dln = NULL;
    if (!dw) goto done;
    if (bb && !(db = upload_f(&c, bb))) goto done;
    if (gw && (!(dgw = upload_f(&c, gw)) || !(dgb = upload_f(&c, gb)) ||
               !(dln = ops_ctx_alloc(&c, (size_t)(M * K) * es))))
        goto done;
    if (o) dout = upload_f(&c, o);
    else dout = ops_ctx_alloc(&c, (size_t)(M * N) * es);
    if (!dout) goto done;
    Status s = gw ? c.b->ops->layernorm_matmul(c.b, dout, dx, dgw, dgb, (float)eps, dln, dw, db,
                                               (int)M, (int)K, (int)N, flags, act, NULL, &c.err)
                  : c.b->ops->matmul(c.b, dout, dx, dw, db, (int)M, (int)K, (int)N, flags, act,
                                     &c.err);
    if (ops_ctx_check(&c, s) < 0) goto done;
    npy_intp dims[2] = {M, N};
    res = ops_download(&c, dout, c.b->dtype, 2, dims);
done:
    ops_ctx_close(&c);
    Py_XDECREF(x); Py_XDECREF(w); Py_XDECREF(bb); Py_XDECREF(o); Py_XDECREF(gw); Py_XDECREF(gb);
    return res;
}

static PyObject *op_reshape_and_cache(PyObject *self, PyObject *args)
{
    const char *device, *dtype;
    PyObject *ko, *vo, *kco, *vco, *so, *res = NULL, *rk = NULL, *rv = NULL;
    int H, D;
    PyArrayObject *k = NULL, *v = NULL, *kc = NULL, *vc = NULL, *s = NULL;
    OpsCtx c = {0};
    if (!PyArg_ParseTuple(args, "ssOOOOOii", &device, &dtype, &ko, &vo, &kco, &vco, &so, &H, &D))
        return NULL;
    if (!(k = ops_as_f32(ko)) || !(v = ops_as_f32(vo)) || !(kc = ops_as_f32(kco)) || !(vc = ops_as_f32(vco)) ||
        !(s = ops_as_i32(so)))
        goto done;
    if (want_ndim(k, 2, "k") < 0 || want_ndim(v, 2, "v") < 0 || want_ndim(kc, 4, "k_cache") < 0 ||
        want_ndim(vc, 4, "v_cache") < 0 || want_ndim(s, 1, "slot_mapping") < 0)
        goto done;
    const npy_intp T = PyArray_DIM(k, 0), S = PyArray_DIM(k, 1), NB = PyArray_DIM(kc, 0),
                   BS = PyArray_DIM(kc, 2);
    if (PyArray_DIM(v, 0) != T || PyArray_DIM(v, 1) != S || PyArray_DIM(s, 0) != T ||
        (npy_intp)H * D > S || PyArray_DIM(kc, 1) != H || PyArray_DIM(kc, 3) != D ||
        PyArray_SIZE(vc) != PyArray_SIZE(kc)) {
        PyErr_SetString(PyExc_ValueError, "reshape_and_cache: shapes disagree");
        goto done;
    }
    for (npy_intp t = 0; t < T; t++)
        if (((int32_t *)PyArray_DATA(s))[t] >= NB * BS) {
            PyErr_SetString(PyExc_ValueError, "reshape_and_cache: slot out of range");
            goto done;
        }
    if (ops_ctx_open(&c, self, device, dtype) < 0) goto done;
    void *dk = upload_f(&c, k), *dv = dk ? upload_f(&c, v) : NULL;
    void *dkc = dv ? upload_f(&c, kc) : NULL, *dvc = dkc ? upload_f(&c, vc) : NULL;
    void *ds = dvc ? ops_upload_raw32(&c, s) : NULL;
    if (!ds) goto done;
    if (ops_ctx_check(&c, c.b->ops->reshape_and_cache(c.b, dk, dv, (int)S, dkc, dvc, ds, (int)T, H, D,
                                                  (int)BS, &c.err)) < 0)
        goto done;
    npy_intp dims[4] = {NB, H, BS, D};
    if (!(rk = ops_download(&c, dkc, c.b->dtype, 4, dims)) ||
        !(rv = ops_download(&c, dvc, c.b->dtype, 4, dims)))
        goto done;
    res = PyTuple_Pack(2, rk, rv);
done:
    ops_ctx_close(&c);
    Py_XDECREF(rk); Py_XDECREF(rv);
    Py_XDECREF(k); Py_XDECREF(v); Py_XDECREF(kc); Py_XDECREF(vc); Py_XDECREF(s);
    return res;
}

static PyObject *op_gather_rows(PyObject *self, PyObject *args)
{
    const char *device, *dtype;
    PyObject *xo, *ro, *res = NULL;
    PyArrayObject *x = NULL, *r = NULL;
    OpsCtx c = {0};
    if (!PyArg_ParseTuple(args, "ssOO", &device, &dtype, &xo, &ro)) return NULL;
    if (!(x = ops_as_f32(xo)) || !(r = ops_as_i32(ro))) goto done;
    if (want_ndim(x, 2, "x") < 0 || want_ndim(r, 1, "rows") < 0) goto done;
    const npy_intp n = PyArray_DIM(r, 0), C = PyArray_DIM(x, 1);
    for (npy_intp i = 0; i < n; i++) {
        const int32_t row = ((int32_t *)PyArray_DATA(r))[i];
        if (row < 0 || row >= PyArray_DIM(x, 0)) {
            PyErr_Format(PyExc_ValueError, "gather_rows: row %d out of range", (int)row);
            goto done;
        }
    }
    if (ops_ctx_open(&c, self, device, dtype) < 0) goto done;
    void *dx = upload_f(&c, x), *dr = dx ? ops_upload_raw32(&c, r) : NULL;
    void *dout = dr ? ops_ctx_alloc(&c, (size_t)(n * C) * dtype_size(c.b->dtype)) : NULL;
    if (!dout) goto done;
    if (ops_ctx_check(&c, c.b->ops->gather_rows(c.b, dout, dx, dr, (int)n, (int)C, &c.err)) < 0)
        goto done;
    npy_intp dims[2] = {n, C};
    res = ops_download(&c, dout, c.b->dtype, 2, dims);
done:
    ops_ctx_close(&c);
    Py_XDECREF(x); Py_XDECREF(r);
    return res;
}

static PyObject *op_to_float(PyObject *self, PyObject *args)
{
    const char *device, *dtype;
    PyObject *xo, *res = NULL;
    PyArrayObject *x = NULL;
    OpsCtx c = {0};
    int cols = -1;       /* x is (rows, ld); the output keeps the first cols columns */
    if (!PyArg_ParseTuple(args, "ssO|i", &device, &dtype, &xo, &cols)) return NULL;
    if (!(x = ops_as_f32(xo))) goto done;
    const int ld = PyArray_NDIM(x) ? (int)PyArray_DIM(x, PyArray_NDIM(x) - 1) : 1;
    const int rows = ld ? (int)(PyArray_SIZE(x) / ld) : 0;
    if (cols < 0) cols = ld;
    if (cols > ld) {
        PyErr_Format(PyExc_ValueError, "to_float: cols %d > row length %d", cols, ld);
        goto done;
    }
    if (ops_ctx_open(&c, self, device, dtype) < 0) goto done;
    const size_t n = (size_t)rows * cols;
    void *dx = upload_f(&c, x), *dout = dx ? ops_ctx_alloc(&c, n * sizeof(float) + 4) : NULL;
    if (!dout) goto done;
    if (ops_ctx_check(&c, c.b->ops->to_float(c.b, dout, dx, rows, cols, ld, &c.err)) < 0) goto done;
    npy_intp dims[NPY_MAXDIMS];
    const int nd = PyArray_NDIM(x);
    for (int i = 0; i < nd; i++) dims[i] = PyArray_DIM(x, i);
    if (nd) dims[nd - 1] = cols;
    res = ops_download(&c, dout, DTYPE_F32, nd, dims);
done:
    ops_ctx_close(&c);
    Py_XDECREF(x);
    return res;
}

/* rows: sequence of 13-tuples, adj: sequence of 4-tuples (see the docstring) */
static int parse_rows(PyObject *seq, SamplingRow **out, int *n)
{
    PyObject *fast = PySequence_Fast(seq, "rows must be a sequence of tuples");
    if (!fast) return -1;
    *n = (int)PySequence_Fast_GET_SIZE(fast);
    *out = PyMem_Calloc((size_t)*n + 1, sizeof(SamplingRow));
    if (!*out) { Py_DECREF(fast); PyErr_NoMemory(); return -1; }
    for (int i = 0; i < *n; i++) {
        SamplingRow *r = &(*out)[i];
        unsigned long long seed, step;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, i), "fifffffKKiiii", &r->temperature,
                              &r->top_k, &r->top_p, &r->min_p, &r->presence_penalty,
                              &r->frequency_penalty, &r->repetition_penalty, &seed, &step,
                              &r->target_token, &r->num_logprobs, &r->adj_start, &r->adj_count)) {
            Py_DECREF(fast);
            return -1;
        }
        r->seed = seed;
        r->step = step;
    }
    Py_DECREF(fast);
    return 0;
}

static int parse_adj(PyObject *seq, TokenAdjust **out, int *n)
{
    PyObject *fast = PySequence_Fast(seq, "adj must be a sequence of tuples");
    if (!fast) return -1;
    *n = (int)PySequence_Fast_GET_SIZE(fast);
    *out = PyMem_Calloc((size_t)*n + 1, sizeof(TokenAdjust));
    if (!*out) { Py_DECREF(fast); PyErr_NoMemory(); return -1; }
    for (int i = 0; i < *n; i++) {
        TokenAdjust *a = &(*out)[i];
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, i), "iiif", &a->token,
                              &a->output_count, &a->in_prompt, &a->bias)) {
            Py_DECREF(fast);
            return -1;
        }
    }
    Py_DECREF(fast);
    return 0;
}

static PyObject *op_sample(PyObject *self, PyObject *args)
{
    const char *device, *dtype;
    PyObject *lo, *ro, *ao, *res = NULL;
    PyObject *tok = NULL, *lp = NULL, *rk = NULL, *ti = NULL, *tl = NULL;
    int max_logprobs, R = 0, n_adj = 0, ld = 0;
    PyArrayObject *logits = NULL;
    SamplingRow *rows = NULL;
    TokenAdjust *adj = NULL;
    float *padded = NULL;
    OpsCtx c = {0};
    if (!PyArg_ParseTuple(args, "ssOOOi|i", &device, &dtype, &lo, &ro, &ao, &max_logprobs, &ld))
        return NULL;
    if (!(logits = ops_as_f32(lo)) || want_ndim(logits, 2, "logits") < 0) goto done;
    if (parse_rows(ro, &rows, &R) < 0 || parse_adj(ao, &adj, &n_adj) < 0) goto done;
    if (R != PyArray_DIM(logits, 0) || max_logprobs < 0) {
        PyErr_SetString(PyExc_ValueError, "sample: len(rows) != logits rows, or max_logprobs < 0");
        goto done;
    }
    const int V = (int)PyArray_DIM(logits, 1);
    if (ld == 0) ld = V;
    if (ld < V) {
        PyErr_Format(PyExc_ValueError, "sample: ld %d < V %d", ld, V);
        goto done;
    }
    npy_intp d1[1] = {R}, d2[2] = {R, max_logprobs};
    if (!(tok = PyArray_SimpleNew(1, d1, NPY_INT32)) || !(lp = PyArray_SimpleNew(1, d1, NPY_FLOAT32)) ||
        !(rk = PyArray_SimpleNew(1, d1, NPY_INT32)) || !(ti = PyArray_SimpleNew(2, d2, NPY_INT32)) ||
        !(tl = PyArray_SimpleNew(2, d2, NPY_FLOAT32)))
        goto done;
    if (ops_ctx_open(&c, self, device, dtype) < 0) goto done;
    /* the logits as the engine leaves them: rows of ld elements of the compute dtype */
    void *dl;
    if (c.b->dtype == DTYPE_F32 && ld == V) {
        dl = ops_upload_raw32(&c, logits);
    } else {
        if (!(padded = PyMem_Calloc((size_t)R * ld + 1, sizeof(float)))) {
            PyErr_NoMemory();
            goto done;
        }
        for (int r = 0; r < R; r++)
            memcpy(padded + (size_t)r * ld, (const float *)PyArray_DATA(logits) + (size_t)r * V,
                   (size_t)V * sizeof(float));
        dl = ops_upload(&c, padded, DTYPE_F32, c.b->dtype, (size_t)R * ld);
    }
    if (!dl) goto done;
    SamplerOutput out = {
        .tokens = PyArray_DATA((PyArrayObject *)tok),
        .logprobs = PyArray_DATA((PyArrayObject *)lp),
        .ranks = PyArray_DATA((PyArrayObject *)rk),
        .topk_ids = max_logprobs ? PyArray_DATA((PyArrayObject *)ti) : NULL,
        .topk_logprobs = max_logprobs ? PyArray_DATA((PyArrayObject *)tl) : NULL,
    };
    if (ops_ctx_check(&c, c.b->ops->sample(c.b, dl, c.b->dtype, ld, R, V, rows, adj, n_adj,
                                           max_logprobs, &out, &c.err)) < 0)
        goto done;
    res = PyTuple_Pack(5, tok, lp, rk, ti, tl);
done:
    ops_ctx_close(&c);
    PyMem_Free(rows);
    PyMem_Free(adj);
    PyMem_Free(padded);
    Py_XDECREF(tok); Py_XDECREF(lp); Py_XDECREF(rk); Py_XDECREF(ti); Py_XDECREF(tl);
    Py_XDECREF(logits);
    return res;
}

static PyObject *op_mem_info(PyObject *self, PyObject *args)
{
    const char *device, *dtype;
    size_t fr = 0, tot = 0;
    PyObject *res = NULL;
    OpsCtx c = {0};
    if (!PyArg_ParseTuple(args, "ss", &device, &dtype)) return NULL;
    if (ops_ctx_open(&c, self, device, dtype) < 0) goto done;
    if (ops_ctx_check(&c, c.b->ops->mem_info(c.b, &fr, &tot, &c.err)) < 0) goto done;
    res = Py_BuildValue("(nn)", (Py_ssize_t)fr, (Py_ssize_t)tot);
done:
    ops_ctx_close(&c);
    return res;
}

#define GRAPH_TEST_KEY 7

/* Captures y = layernorm(gelu_new(x @ w + bias)) once, replays it for x1 and x2. */
static PyObject *op_graph(PyObject *self, PyObject *args)
{
    const char *device, *dtype;
    PyObject *x1o, *x2o, *wo, *bo, *gwo, *gbo, *res = NULL, *y1 = NULL, *y2 = NULL;
    double eps;
    PyArrayObject *x1 = NULL, *x2 = NULL, *w = NULL, *bb = NULL, *gw = NULL, *gb = NULL;
    OpsCtx c = {0};
    if (!PyArg_ParseTuple(args, "ssOOOOOOd", &device, &dtype, &x1o, &x2o, &wo, &bo, &gwo, &gbo,
                          &eps))
        return NULL;
    if (!(x1 = ops_as_f32(x1o)) || !(x2 = ops_as_f32(x2o)) || !(w = ops_as_f32(wo)) || !(bb = ops_as_f32(bo)) ||
        !(gw = ops_as_f32(gwo)) || !(gb = ops_as_f32(gbo)))
        goto done;
    if (want_ndim(x1, 2, "x1") < 0 || want_ndim(w, 2, "w") < 0) goto done;
    const npy_intp M = PyArray_DIM(x1, 0), K = PyArray_DIM(x1, 1), N = PyArray_DIM(w, 1);
    if (PyArray_SIZE(x2) != M * K || PyArray_DIM(w, 0) != K || PyArray_SIZE(bb) != N ||
        PyArray_SIZE(gw) != N || PyArray_SIZE(gb) != N) {
        PyErr_SetString(PyExc_ValueError, "graph: shapes disagree");
        goto done;
    }
    if (ops_ctx_open(&c, self, device, dtype) < 0) goto done;
    const BackendOps *ops = c.b->ops;
    if (!ops->graph_capture_begin) {
        PyErr_Format(PyExc_ValueError, "device '%s' has no CUDA graphs", device);
        goto done;
    }
    const size_t es = dtype_size(c.b->dtype);
    void *dx = upload_f(&c, x1), *dw = dx ? upload_f(&c, w) : NULL;
    void *db = dw ? upload_f(&c, bb) : NULL, *dgw = db ? upload_f(&c, gw) : NULL;
    void *dgb = dgw ? upload_f(&c, gb) : NULL, *dx2 = dgb ? upload_f(&c, x2) : NULL;
    void *dh = dx2 ? ops_ctx_alloc(&c, (size_t)(M * N) * es) : NULL;
    void *dy = dh ? ops_ctx_alloc(&c, (size_t)(M * N) * es) : NULL;
    if (!dy) goto done;
    if (ops_ctx_check(&c, ops->graph_capture_begin(c.b, &c.err)) < 0) goto done;
    Status s = ops->matmul(c.b, dh, dx, dw, db, (int)M, (int)K, (int)N, MATMUL_GELU, ACT_GELU_TANH,
                           &c.err);
    if (s == GPT2_OK)
        s = ops->layernorm(c.b, dy, dh, dgw, dgb, (int)M, (int)N, (float)eps, &c.err);
    if (s != GPT2_OK) {
        Error ignored;
        ops->graph_capture_end(c.b, GRAPH_TEST_KEY, &ignored);
        ops_ctx_check(&c, s);
        goto done;
    }
    if (ops_ctx_check(&c, ops->graph_capture_end(c.b, GRAPH_TEST_KEY, &c.err)) < 0 ||
        ops_ctx_check(&c, ops->graph_launch(c.b, GRAPH_TEST_KEY, &c.err)) < 0)
        goto done;
    npy_intp dims[2] = {M, N};
    if (!(y1 = ops_download(&c, dy, c.b->dtype, 2, dims))) goto done;
    if (ops_ctx_check(&c, ops->copy_d2d(c.b, dx, dx2, (size_t)(M * K) * es, &c.err)) < 0 ||
        ops_ctx_check(&c, ops->graph_launch(c.b, GRAPH_TEST_KEY, &c.err)) < 0)
        goto done;
    if (!(y2 = ops_download(&c, dy, c.b->dtype, 2, dims))) goto done;
    res = PyTuple_Pack(2, y1, y2);
done:
    ops_ctx_close(&c);
    Py_XDECREF(y1); Py_XDECREF(y2);
    Py_XDECREF(x1); Py_XDECREF(x2); Py_XDECREF(w); Py_XDECREF(bb); Py_XDECREF(gw); Py_XDECREF(gb);
    return res;
}

static PyMethodDef ops_backend_methods[] = {
    {"_backend_op_embed", op_embed, METH_VARARGS,
     "(device, dtype, ids(T), pos(T), wte(V, C), wpe(P, C)) -> out(T, C) float32"},
    {"_backend_op_layernorm", op_layernorm, METH_VARARGS,
     "(device, dtype, x(T, C), w(C), b(C), eps) -> out(T, C)"},
    {"_backend_op_matmul", op_matmul, METH_VARARGS,
     "(device, dtype, x(M, K), w(K, N) or (N, K), bias(N) or None, flags, act, out(M, N) or None"
     "[, (ln_w(K), ln_b(K), eps)]) -> out(M, N); with the tuple, layernorm_matmul"},
    {"_backend_op_reshape_and_cache", op_reshape_and_cache, METH_VARARGS,
     "(device, dtype, k(T, S), v(T, S), k_cache(NB, H, BS, D), v_cache, slots(T), H, D)"
     " -> (k_cache, v_cache)"},
    {"_backend_op_gather_rows", op_gather_rows, METH_VARARGS,
     "(device, dtype, x(R, C), rows(n)) -> out(n, C)"},
    {"_backend_op_to_float", op_to_float, METH_VARARGS,
     "(device, dtype, x) -> float32 copy of x after rounding to dtype on the device"},
    {"_backend_op_sample", op_sample, METH_VARARGS,
     "(device, dtype, logits(R, V), rows, adj, max_logprobs[, ld]) -> (tokens, logprobs, ranks, "
     "topk_ids, topk_logprobs); rows: list of (temperature, top_k, top_p, min_p, "
     "presence_penalty, frequency_penalty, repetition_penalty, seed, step, target_token, "
     "num_logprobs, adj_start, adj_count); adj: list of (token, output_count, in_prompt, bias)"},
    {"_backend_op_mem_info", op_mem_info, METH_VARARGS, "(device, dtype) -> (free, total)"},
    {"_backend_op_graph", op_graph, METH_VARARGS,
     "(device, dtype, x1(M, K), x2(M, K), w(K, N), bias(N), lnw(N), lnb(N), eps) -> (y1, y2): "
     "captures gelu matmul + layernorm once, replays it on x1 then x2"},
    {NULL, NULL, 0, NULL},
};

int ops_backend_register(PyObject *module, ModuleState *st)
{
    (void)st;
    import_array1(-1);
    return PyModule_AddFunctions(module, ops_backend_methods);
}
