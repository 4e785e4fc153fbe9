/* ops.c — low-level entry points behind gpt2_engine.ops: run an attention
 * backend ("CPU", "PAGED", "FLASH"), reshape_and_cache and merge_attn_states on
 * NumPy inputs (copy in, run, copy out). Float arrays are float32 on the Python
 * side and rounded to the requested dtype on the way in; outputs come back as
 * float32. Every call creates its own device backend and releases everything
 * before returning. gpt2_engine/ops.py validates arguments with friendly
 * messages; the checks here only guarantee that no kernel reads out of bounds.
 *
 *   _ops_attention(backend, q(T,H,D), k_cache(NB,H,BS,D), v_cache, block_tables(S,MB),
 *                  seq_lens(S), query_start_loc(S+1), num_decodes, scale, dtype) -> out(T,H,D)
 *   _ops_attention_bench(... same ..., iters) -> median milliseconds of one forward
 *       (on a GPU: a CUDA graph of `iters` back-to-back forwards, replays timed by
 *       cudaEvents; on the CPU: the host clock per forward); k_cache and
 *       v_cache may be shape tuples (NB,H,BS,D) filled with random values on the device;
 *       block_tables may be (R,S,MB): iteration i uses set i % R (rotating past the L2)
 *   _ops_reshape_and_cache(device, k(T,H,D), v, k_cache(NB,H,BS,D), v_cache, slot_mapping(T),
 *                          dtype="float32") -> (k_cache, v_cache)
 *   _ops_merge_attn_states(device, out_a(T,H,D), lse_a(H,T), out_b, lse_b, dtype="float32")
 *       -> (out(T,H,D), lse(H,T))
 */
#include "ops_ctx.h"

#include <math.h>
#include <numpy/arrayobject.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "attention.h"
#include "backend.h"

#ifdef GPT2_ENGINE_HAVE_CUDA
#include "kernels.h"
#endif

static int bad(const char *msg)
{
    PyErr_SetString(PyExc_ValueError, msg);
    return -1;
}

/* ------------------------------------------------------------------ attention */

typedef struct AttnArgs {     /* parsed + validated inputs of one attention call */
    const char *backend, *dtype;
    PyArrayObject *q, *kc, *vc, *bt, *sl, *qsl;
    npy_intp cache_dims[4];   /* (NB, H, BS, D) */
    int fill_cache;           /* caches given as shape tuples: random fill on the device */
    int T, H, D, S, MB, R, num_decodes, max_q, max_seq;
    double scale;
} AttnArgs;

static void attn_args_free(AttnArgs *a)
{
    Py_XDECREF(a->q); Py_XDECREF(a->kc); Py_XDECREF(a->vc);
    Py_XDECREF(a->bt); Py_XDECREF(a->sl); Py_XDECREF(a->qsl);
}

static int shape_tuple(PyObject *o, npy_intp dims[4])
{
    if (!PyTuple_Check(o) || PyTuple_GET_SIZE(o) != 4) return 0;
    for (int i = 0; i < 4; i++) {
        dims[i] = (npy_intp)PyLong_AsSsize_t(PyTuple_GET_ITEM(o, i));
        if (dims[i] == -1 && PyErr_Occurred()) return -1;
    }
    return 1;
}

static int attn_args_parse(AttnArgs *a, PyObject *qo, PyObject *kco, PyObject *vco,
                           PyObject *bto, PyObject *slo, PyObject *qslo, int allow_shapes)
{
    npy_intp kd[4], vd[4];
    int kt = allow_shapes ? shape_tuple(kco, kd) : 0, vt = allow_shapes ? shape_tuple(vco, vd) : 0;
    if (kt < 0 || vt < 0) return -1;
    if (kt != vt) return bad("k_cache and v_cache must both be arrays or both shape tuples");
    a->fill_cache = kt;
    if (!(a->q = ops_as_f32(qo)) || !(a->bt = ops_as_i32(bto)) || !(a->sl = ops_as_i32(slo)) ||
        !(a->qsl = ops_as_i32(qslo)))
        return -1;
    if (!kt) {
        if (!(a->kc = ops_as_f32(kco)) || !(a->vc = ops_as_f32(vco))) return -1;
        if (PyArray_NDIM(a->kc) != 4 || PyArray_NDIM(a->vc) != 4)
            return bad("k_cache and v_cache must be (num_blocks, H, block_size, D)");
        for (int i = 0; i < 4; i++) {
            kd[i] = PyArray_DIM(a->kc, i);
            if (PyArray_DIM(a->vc, i) != kd[i]) return bad("k_cache and v_cache shapes differ");
        }
    } else {
        for (int i = 0; i < 4; i++)
            if (kd[i] != vd[i]) return bad("k_cache and v_cache shapes differ");
    }
    memcpy(a->cache_dims, kd, sizeof kd);
    if (PyArray_NDIM(a->q) != 3) return bad("q must be (T, H, D)");
    const int bt_nd = PyArray_NDIM(a->bt);
    if (bt_nd != 2 && !(allow_shapes && bt_nd == 3)) return bad("block_tables must be (S, max_blocks)");
    if (PyArray_NDIM(a->sl) != 1 || PyArray_NDIM(a->qsl) != 1)
        return bad("seq_lens and query_start_loc must be 1-D");
    for (int i = 0; i < 4; i++)
        if (kd[i] <= 0 || kd[i] > INT32_MAX) return bad("cache dimensions must be positive");
    a->T = (int)PyArray_DIM(a->q, 0);
    a->H = (int)PyArray_DIM(a->q, 1);
    a->D = (int)PyArray_DIM(a->q, 2);
    a->R = bt_nd == 3 ? (int)PyArray_DIM(a->bt, 0) : 1;
    a->S = (int)PyArray_DIM(a->bt, bt_nd - 2);
    a->MB = (int)PyArray_DIM(a->bt, bt_nd - 1);
    const int NB = (int)kd[0], BS = (int)kd[2];
    if (kd[1] != a->H || kd[3] != a->D) return bad("k_cache must be (num_blocks, H, block_size, D) "
                                                   "with the H and D of q");
    if (a->T <= 0 || a->S <= 0 || a->MB <= 0 || a->R <= 0)
        return bad("empty q or block_tables");
    if (PyArray_DIM(a->sl, 0) != a->S || PyArray_DIM(a->qsl, 0) != a->S + 1)
        return bad("seq_lens must be (S) and query_start_loc (S + 1), S = block_tables rows");
    if (a->num_decodes < 0 || a->num_decodes > a->S) return bad("num_decodes out of [0, S]");
    const int32_t *qsl = PyArray_DATA(a->qsl), *sl = PyArray_DATA(a->sl);
    const int32_t *bt = PyArray_DATA(a->bt);
    if (qsl[0] != 0 || qsl[a->S] != a->T) return bad("query_start_loc must run from 0 to T");
    a->max_q = 0;
    a->max_seq = 0;
    for (int s = 0; s < a->S; s++) {
        const int ql = qsl[s + 1] - qsl[s];
        if (ql < 1) return bad("every sequence needs at least one query token");
        if (s < a->num_decodes && ql != 1) return bad("decode sequences must have query length 1");
        if (sl[s] < ql || (int64_t)sl[s] > (int64_t)a->MB * BS)
            return bad("seq_lens[s] must be in [query length, max_blocks * block_size]");
        a->max_q = ql > a->max_q ? ql : a->max_q;
        a->max_seq = sl[s] > a->max_seq ? sl[s] : a->max_seq;
        for (int r = 0; r < a->R; r++)
            for (int j = 0; j < (sl[s] + BS - 1) / BS; j++) {
                const int32_t blk = bt[((int64_t)r * a->S + s) * a->MB + j];
                if (blk < 0 || blk >= NB) return bad("block_tables entry out of [0, num_blocks)");
            }
    }
    return 0;
}

/* Fills a device cache with pseudo-random values in [-1, 1) (bench inputs). */
static int fill_random(OpsCtx *c, void *dev, size_t n)
{
    const DType dt = c->b->dtype;
    const size_t es = dtype_size(dt), chunk = (size_t)4 << 20;
    float *f = PyMem_Malloc(chunk * sizeof(float));
    void *h = PyMem_Malloc(chunk * es);
    if (!f || !h) { PyMem_Free(f); PyMem_Free(h); PyErr_NoMemory(); return -1; }
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < chunk; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        f[i] = (float)(x >> 40) * (2.0f / 16777216.0f) - 1.0f;
    }
    dtype_convert(h, dt, f, DTYPE_F32, chunk);
    int rc = 0;
    for (size_t off = 0; off < n && rc == 0; off += chunk) {
        const size_t m = n - off < chunk ? n - off : chunk;
        if (c->b->ops->copy_h2d(c->b, (char *)dev + off * es, h, m * es, &c->err) != GPT2_OK)
            rc = ops_ctx_fail(c);
    }
    PyMem_Free(f);
    PyMem_Free(h);
    return rc;
}

typedef struct AttnRun {      /* device side of one attention call */
    void *q, *kc, *vc, *out;
    int32_t *bt, *sl, *qsl;
    AttentionMetadata md;
} AttnRun;

/* Creates backend + attention state and uploads everything. */
static int attn_setup(OpsCtx *c, PyObject *self, AttnArgs *a, AttnRun *r)
{
    const char *device = strcasecmp(a->backend, "CPU") == 0 ? "cpu" : "cuda";
    if (ops_ctx_open(c, self, device, a->dtype) < 0) return -1;
    Backend *b = c->b;
    AttentionConfig cfg = {
        .num_heads = a->H, .head_size = a->D, .block_size = (int)a->cache_dims[2],
        .dtype = b->dtype, .scale = (float)a->scale,
        /* 4x the sequences: room for the PAGED v2 partitions to shrink on small batches,
         * as they do in an engine whose max_num_seqs exceeds the running decodes */
        .max_num_seqs = 4 * a->S, .max_num_batched_tokens = a->T, .max_model_len = a->max_seq,
        .compute_capability = b->compute_capability, .device = device,
    };
    char reason[256];
    if (attention_select(&c->ab, a->backend, &cfg, reason, sizeof reason, &c->err) != GPT2_OK ||
        c->ab->create(&c->attn_state, b, &cfg, &c->err) != GPT2_OK)
        return ops_ctx_fail(c);
    const size_t cache_n = (size_t)a->cache_dims[0] * a->cache_dims[1] * a->cache_dims[2] *
                           a->cache_dims[3];
    const size_t out_n = (size_t)a->T * a->H * a->D;
    if (!(r->q = ops_upload_arr(c, a->q, b->dtype))) return -1;
    if (a->fill_cache) {
        if (!(r->kc = ops_ctx_alloc(c, cache_n * dtype_size(b->dtype))) ||
            !(r->vc = ops_ctx_alloc(c, cache_n * dtype_size(b->dtype))) ||
            fill_random(c, r->kc, cache_n) < 0 || fill_random(c, r->vc, cache_n) < 0)
            return -1;
    } else if (!(r->kc = ops_upload_arr(c, a->kc, b->dtype)) || !(r->vc = ops_upload_arr(c, a->vc, b->dtype))) {
        return -1;
    }
    if (!(r->bt = ops_upload_raw32(c, a->bt)) || !(r->sl = ops_upload_raw32(c, a->sl)) ||
        !(r->qsl = ops_upload_raw32(c, a->qsl)) || !(r->out = ops_ctx_alloc(c, out_n * dtype_size(b->dtype))))
        return -1;
    /* poison the output (NaN) so an unwritten element fails the tests */
    float *nan = PyMem_Malloc(out_n * sizeof(float) + 1);
    if (!nan) { PyErr_NoMemory(); return -1; }
    for (size_t i = 0; i < out_n; i++) nan[i] = NAN;
    void *tmp = PyMem_Malloc(out_n * dtype_size(b->dtype) + 1);
    if (!tmp) { PyMem_Free(nan); PyErr_NoMemory(); return -1; }
    dtype_convert(tmp, b->dtype, nan, DTYPE_F32, out_n);
    const Status s = b->ops->copy_h2d(b, r->out, tmp, out_n * dtype_size(b->dtype), &c->err);
    PyMem_Free(tmp);
    PyMem_Free(nan);
    if (s != GPT2_OK) return ops_ctx_fail(c);
    r->md = (AttentionMetadata){
        .num_seqs = a->S, .num_tokens = a->T, .num_decodes = a->num_decodes,
        .max_query_len = a->max_q, .max_seq_len = a->max_seq, .block_table_stride = a->MB,
        .query_start_loc = r->qsl, .seq_lens = r->sl, .block_tables = r->bt,
        .host_query_start_loc = PyArray_DATA(a->qsl), .host_seq_lens = PyArray_DATA(a->sl),
        .graph_capture = 0,
    };
    return 0;
}

static int attn_forward(OpsCtx *c, AttnArgs *a, AttnRun *r, int set)
{
    AttentionMetadata md = r->md;
    md.block_tables = r->bt + (size_t)set * a->S * a->MB;
    if (c->ab->forward(c->attn_state, c->b, r->out, r->q, a->H * a->D, r->kc, r->vc, &md,
                       &c->err) != GPT2_OK)
        return ops_ctx_fail(c);
    return 0;
}

static PyObject *ops_attention(PyObject *self, PyObject *args)
{
    AttnArgs a = {0};
    AttnRun r = {0};
    OpsCtx c = {0};
    PyObject *qo, *kco, *vco, *bto, *slo, *qslo, *res = NULL;
    if (!PyArg_ParseTuple(args, "sOOOOOOids", &a.backend, &qo, &kco, &vco, &bto, &slo, &qslo,
                          &a.num_decodes, &a.scale, &a.dtype))
        return NULL;
    if (attn_args_parse(&a, qo, kco, vco, bto, slo, qslo, 0) < 0 ||
        attn_setup(&c, self, &a, &r) < 0 || attn_forward(&c, &a, &r, 0) < 0)
        goto done;
    npy_intp dims[3] = {a.T, a.H, a.D};
    res = ops_download(&c, r.out, c.b->dtype, 3, dims);
done:
    ops_ctx_close(&c);
    attn_args_free(&a);
    return res;
}

static int cmp_float(const void *x, const void *y)
{
    const float a = *(const float *)x, b = *(const float *)y;
    return a < b ? -1 : a > b;
}

#define OPS_BENCH_GRAPH_KEY 0x6f707362   /* the bench's graph in the ops backend */
#define OPS_BENCH_REPLAYS 7

static PyObject *ops_attention_bench(PyObject *self, PyObject *args)
{
    AttnArgs a = {0};
    AttnRun r = {0};
    OpsCtx c = {0};
    PyObject *qo, *kco, *vco, *bto, *slo, *qslo, *res = NULL;
    int iters;
    float *ms = NULL;
    if (!PyArg_ParseTuple(args, "sOOOOOOidsi", &a.backend, &qo, &kco, &vco, &bto, &slo, &qslo,
                          &a.num_decodes, &a.scale, &a.dtype, &iters))
        return NULL;
    if (iters < 1 || iters > 10000) {
        PyErr_SetString(PyExc_ValueError, "iters must be in [1, 10000]");
        return NULL;
    }
    if (!(ms = PyMem_Malloc(sizeof(float) * (size_t)(iters > OPS_BENCH_REPLAYS ? iters
                                                      : OPS_BENCH_REPLAYS))))
        return PyErr_NoMemory();
    if (attn_args_parse(&a, qo, kco, vco, bto, slo, qslo, 1) < 0 ||
        attn_setup(&c, self, &a, &r) < 0)
        goto done;
    for (int i = 0; i < 3; i++)                         /* warm-up */
        if (attn_forward(&c, &a, &r, i % a.R) < 0) goto done;
    if (c.b->ops->synchronize(c.b, &c.err) != GPT2_OK) { ops_ctx_fail(&c); goto done; }
#ifdef GPT2_ENGINE_HAVE_CUDA
    if (strcmp(c.b->name, "cuda") == 0) {
        /* one CUDA graph of `iters` back-to-back forwards (as the engine replays its
         * decode steps: no launch gaps), replayed OPS_BENCH_REPLAYS times between two
         * events; ms[i] = replay i / iters */
        const BackendOps *ops = c.b->ops;
        const cudaStream_t stream = *(cudaStream_t *)c.b->impl;
        cudaEvent_t ev[2] = {NULL, NULL};
        if (ops_ctx_check(&c, ops->graph_capture_begin(c.b, &c.err)) < 0) goto done;
        int failed = 0;
        for (int i = 0; i < iters && !failed; i++) failed = attn_forward(&c, &a, &r, i % a.R) < 0;
        Error end_err;
        const Status es = ops->graph_capture_end(c.b, OPS_BENCH_GRAPH_KEY, &end_err);
        if (failed) goto done;
        if (es != GPT2_OK) { c.err = end_err; ops_ctx_fail(&c); goto done; }
        int ok = cudaEventCreate(&ev[0]) == cudaSuccess && cudaEventCreate(&ev[1]) == cudaSuccess;
        if (ok && ops_ctx_check(&c, ops->graph_launch(c.b, OPS_BENCH_GRAPH_KEY, &c.err)) < 0)
            ok = -1;                                    /* warm-up replay */
        for (int i = 0; ok == 1 && i < OPS_BENCH_REPLAYS; i++) {
            float t = 0.f;
            ok = cudaEventRecord(ev[0], stream) == cudaSuccess;
            if (ok && ops_ctx_check(&c, ops->graph_launch(c.b, OPS_BENCH_GRAPH_KEY, &c.err)) < 0)
                ok = -1;
            if (ok == 1)
                ok = cudaEventRecord(ev[1], stream) == cudaSuccess &&
                     cudaEventSynchronize(ev[1]) == cudaSuccess &&
                     cudaEventElapsedTime(&t, ev[0], ev[1]) == cudaSuccess;
            ms[i] = t / (float)iters;
        }
        for (int i = 0; i < 2; i++)
            if (ev[i]) cudaEventDestroy(ev[i]);
        if (ok < 0) goto done;                          /* the backend's error is set */
        if (!ok) {
            PyErr_Format(c.st->EngineError, "attention bench: CUDA event failure: %s",
                         cudaGetErrorString(cudaGetLastError()));
            goto done;
        }
        iters = OPS_BENCH_REPLAYS;                      /* the median below is over replays */
    } else
#endif
    {
        for (int i = 0; i < iters; i++) {
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            if (attn_forward(&c, &a, &r, i % a.R) < 0) goto done;
            if (c.b->ops->synchronize(c.b, &c.err) != GPT2_OK) { ops_ctx_fail(&c); goto done; }
            clock_gettime(CLOCK_MONOTONIC, &t1);
            ms[i] = (float)((t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) * 1e-6);
        }
    }
    qsort(ms, (size_t)iters, sizeof(float), cmp_float);
    res = PyFloat_FromDouble(ms[iters / 2]);
done:
    PyMem_Free(ms);
    ops_ctx_close(&c);
    attn_args_free(&a);
    return res;
}

/* ---------------------------------------------------------- reshape_and_cache */

static PyObject *ops_reshape_and_cache(PyObject *self, PyObject *args)
{
    const char *device, *dtype = "float32";
    PyObject *ko, *vo, *kco, *vco, *so, *res = NULL, *rk = NULL, *rv = NULL;
    PyArrayObject *k = NULL, *v = NULL, *kc = NULL, *vc = NULL, *s = NULL;
    OpsCtx c = {0};
    if (!PyArg_ParseTuple(args, "sOOOOO|s", &device, &ko, &vo, &kco, &vco, &so, &dtype))
        return NULL;
    if (!(k = ops_as_f32(ko)) || !(v = ops_as_f32(vo)) || !(kc = ops_as_f32(kco)) || !(vc = ops_as_f32(vco)) ||
        !(s = ops_as_i32(so)))
        goto done;
    if (PyArray_NDIM(k) != 3 || PyArray_NDIM(v) != 3 || PyArray_NDIM(kc) != 4 ||
        PyArray_NDIM(vc) != 4 || PyArray_NDIM(s) != 1) {
        bad("reshape_and_cache: k, v (T, H, D); caches (num_blocks, H, block_size, D); "
            "slot_mapping (T)");
        goto done;
    }
    const npy_intp T = PyArray_DIM(k, 0), H = PyArray_DIM(k, 1), D = PyArray_DIM(k, 2);
    const npy_intp NB = PyArray_DIM(kc, 0), BS = PyArray_DIM(kc, 2);
    int same = PyArray_DIM(s, 0) == T && PyArray_DIM(kc, 1) == H && PyArray_DIM(kc, 3) == D;
    for (int i = 0; i < 3; i++) same = same && PyArray_DIM(v, i) == PyArray_DIM(k, i);
    for (int i = 0; i < 4; i++) same = same && PyArray_DIM(vc, i) == PyArray_DIM(kc, i);
    if (!same) { bad("reshape_and_cache: shapes disagree"); goto done; }
    for (npy_intp t = 0; t < T; t++)
        if (((int32_t *)PyArray_DATA(s))[t] >= NB * BS) {
            bad("reshape_and_cache: slot_mapping entry >= num_blocks * block_size");
            goto done;
        }
    if (ops_ctx_open(&c, self, device, dtype) < 0) goto done;
    const DType dt = c.b->dtype;
    void *dk = ops_upload_arr(&c, k, dt), *dv = dk ? ops_upload_arr(&c, v, dt) : NULL;
    void *dkc = dv ? ops_upload_arr(&c, kc, dt) : NULL, *dvc = dkc ? ops_upload_arr(&c, vc, dt) : NULL;
    void *ds = dvc ? ops_upload_raw32(&c, s) : NULL;
    if (!ds) goto done;
    if (T > 0 && c.b->ops->reshape_and_cache(c.b, dk, dv, (int)(H * D), dkc, dvc, ds, (int)T,
                                             (int)H, (int)D, (int)BS, &c.err) != GPT2_OK) {
        ops_ctx_fail(&c);
        goto done;
    }
    npy_intp dims[4] = {NB, H, BS, D};
    if (!(rk = ops_download(&c, dkc, dt, 4, dims)) || !(rv = ops_download(&c, dvc, dt, 4, dims))) goto done;
    res = PyTuple_Pack(2, rk, rv);
done:
    ops_ctx_close(&c);
    Py_XDECREF(rk); Py_XDECREF(rv);
    Py_XDECREF(k); Py_XDECREF(v); Py_XDECREF(kc); Py_XDECREF(vc); Py_XDECREF(s);
    return res;
}

/* ---------------------------------------------------------- merge_attn_states */

/* Host version of the kernel's formula (the "cpu" device): inputs and output
 * rounded through dtype like the device path. */
static void merge_host(float *out, float *out_lse, const float *a, const float *la,
                       const float *b, const float *lb, int T, int H, int D)
{
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            float p = la[(size_t)h * T + t], s = lb[(size_t)h * T + t];
            p = isinf(p) ? -INFINITY : p;
            s = isinf(s) ? -INFINITY : s;
            const float mx = p > s ? p : s;
            float ps = 0.5f, ss = 0.5f, lse = -INFINITY;
            if (mx != -INFINITY) {
                const float pe = expf(p - mx), se = expf(s - mx), tot = pe + se;
                ps = pe / tot;
                ss = se / tot;
                lse = logf(tot) + mx;
            }
            out_lse[(size_t)h * T + t] = lse;
            const size_t base = ((size_t)t * H + h) * D;
            for (int d = 0; d < D; d++) out[base + d] = a[base + d] * ps + b[base + d] * ss;
        }
}

static PyObject *ops_merge_attn_states(PyObject *self, PyObject *args)
{
    const char *device, *dtype = "float32";
    PyObject *ao, *lao, *bo, *lbo, *res = NULL, *ro = NULL, *rl = NULL;
    PyArrayObject *a = NULL, *la = NULL, *b = NULL, *lb = NULL;
    OpsCtx c = {0};
    (void)self;                       /* used only by the CUDA path */
    if (!PyArg_ParseTuple(args, "sOOOO|s", &device, &ao, &lao, &bo, &lbo, &dtype)) return NULL;
    if (!(a = ops_as_f32(ao)) || !(la = ops_as_f32(lao)) || !(b = ops_as_f32(bo)) || !(lb = ops_as_f32(lbo)))
        goto done;
    if (PyArray_NDIM(a) != 3 || PyArray_NDIM(b) != 3 || PyArray_NDIM(la) != 2 ||
        PyArray_NDIM(lb) != 2) {
        bad("merge_attn_states: outputs (T, H, D), lse (H, T)");
        goto done;
    }
    const npy_intp T = PyArray_DIM(a, 0), H = PyArray_DIM(a, 1), D = PyArray_DIM(a, 2);
    int same = PyArray_DIM(la, 0) == H && PyArray_DIM(la, 1) == T && PyArray_DIM(lb, 0) == H &&
               PyArray_DIM(lb, 1) == T;
    for (int i = 0; i < 3; i++) same = same && PyArray_DIM(b, i) == PyArray_DIM(a, i);
    if (!same) { bad("merge_attn_states: shapes disagree"); goto done; }
    npy_intp odims[3] = {T, H, D}, ldims[2] = {H, T};
    DType dt;
    if (!dtype_from_name(dtype, &dt)) {
        PyErr_Format(PyExc_ValueError, "dtype '%s' is not float32, float16 or bfloat16", dtype);
        goto done;
    }
    const size_t n = (size_t)T * H * D;
    if (strcmp(device, "cpu") == 0) {
        /* no backend needed (the CPU backend is fp32-only): round the inputs to
         * dtype, merge in fp32, round the output */
        float *ra = PyMem_Malloc(n * 4 + 4), *rb = PyMem_Malloc(n * 4 + 4);
        void *tmp = PyMem_Malloc(n * 4 + 4);
        if (!(ro = PyArray_SimpleNew(3, odims, NPY_FLOAT32)) ||
            !(rl = PyArray_SimpleNew(2, ldims, NPY_FLOAT32)) || !ra || !rb || !tmp) {
            PyMem_Free(ra); PyMem_Free(rb); PyMem_Free(tmp);
            if (!PyErr_Occurred()) PyErr_NoMemory();
            goto done;
        }
        dtype_convert(tmp, dt, PyArray_DATA(a), DTYPE_F32, n);
        dtype_convert(ra, DTYPE_F32, tmp, dt, n);
        dtype_convert(tmp, dt, PyArray_DATA(b), DTYPE_F32, n);
        dtype_convert(rb, DTYPE_F32, tmp, dt, n);
        float *o = PyArray_DATA((PyArrayObject *)ro);
        merge_host(o, PyArray_DATA((PyArrayObject *)rl), ra, PyArray_DATA(la), rb,
                   PyArray_DATA(lb), (int)T, (int)H, (int)D);
        dtype_convert(tmp, dt, o, DTYPE_F32, n);
        dtype_convert(o, DTYPE_F32, tmp, dt, n);
        PyMem_Free(ra); PyMem_Free(rb); PyMem_Free(tmp);
    } else {
#ifdef GPT2_ENGINE_HAVE_CUDA
        if (ops_ctx_open(&c, self, device, dtype) < 0) goto done;
        void *da = ops_upload_arr(&c, a, dt), *db = da ? ops_upload_arr(&c, b, dt) : NULL;
        float *dla = db ? ops_upload_raw32(&c, la) : NULL, *dlb = dla ? ops_upload_raw32(&c, lb) : NULL;
        void *dout = dlb ? ops_ctx_alloc(&c, n * dtype_size(dt)) : NULL;
        float *dlse = dout ? ops_ctx_alloc(&c, (size_t)H * T * 4) : NULL;
        if (!dlse) goto done;
        const cudaError_t e = merge_attn_states(dout, dlse, da, dla, db, dlb, (int)T, (int)H,
                                                (int)D, (int)dt, *(cudaStream_t *)c.b->impl);
        if (e != cudaSuccess) {
            PyErr_Format(c.st->EngineError, "merge_attn_states: %s", cudaGetErrorString(e));
            goto done;
        }
        if (!(ro = ops_download(&c, dout, dt, 3, odims)) || !(rl = ops_download(&c, dlse, DTYPE_F32, 2, ldims)))
            goto done;
#else
        PyErr_Format(PyExc_ValueError, "merge_attn_states: device '%s' is not 'cpu' and this "
                     "build has no CUDA", device);
        goto done;
#endif
    }
    res = PyTuple_Pack(2, ro, rl);
done:
    ops_ctx_close(&c);
    Py_XDECREF(ro); Py_XDECREF(rl);
    Py_XDECREF(a); Py_XDECREF(la); Py_XDECREF(b); Py_XDECREF(lb);
    return res;
}

static PyMethodDef ops_methods[] = {
    {"_ops_attention", ops_attention, METH_VARARGS,
     "(backend, q(T,H,D), k_cache(NB,H,BS,D), v_cache, block_tables(S,MB), seq_lens(S), "
     "query_start_loc(S+1), num_decodes, scale, dtype) -> out(T,H,D) float32"},
    {"_ops_attention_bench", ops_attention_bench, METH_VARARGS,
     "(backend, q, k_cache | (NB,H,BS,D), v_cache | shape, block_tables(S,MB) | (R,S,MB), "
     "seq_lens, query_start_loc, num_decodes, scale, dtype, iters) -> median ms per forward"},
    {"_ops_reshape_and_cache", ops_reshape_and_cache, METH_VARARGS,
     "(device, k(T,H,D), v, k_cache(NB,H,BS,D), v_cache, slot_mapping(T), dtype='float32') "
     "-> (k_cache, v_cache)"},
    {"_ops_merge_attn_states", ops_merge_attn_states, METH_VARARGS,
     "(device, out_a(T,H,D), lse_a(H,T), out_b, lse_b, dtype='float32') -> (out, lse)"},
    {NULL, NULL, 0, NULL},
};

int ops_register(PyObject *module, ModuleState *st)
{
    (void)st;
    import_array1(-1);
    return PyModule_AddFunctions(module, ops_methods);
}
