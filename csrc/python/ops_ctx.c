/* ops_ctx.c — see ops_ctx.h. */
#include "ops_ctx.h"

#include <string.h>

static int numpy_ready(void) { return PyArray_ImportNumPyAPI(); }

int ops_ctx_fail(OpsCtx *c)
{
    raise_error(c->st, &c->err);
    return -1;
}

int ops_ctx_check(OpsCtx *c, Status s) { return s == GPT2_OK ? 0 : ops_ctx_fail(c); }

int ops_ctx_open(OpsCtx *c, PyObject *module, const char *device, const char *dtype)
{
    memset(c, 0, sizeof *c);
    c->st = module_state(module);
    DType dt;
    if (!dtype_from_name(dtype, &dt)) {
        PyErr_Format(PyExc_ValueError, "dtype '%s' is not float32, float16 or bfloat16", dtype);
        return -1;
    }
    if (backend_create(&c->b, device, dt, 0, &c->err) != GPT2_OK) return ops_ctx_fail(c);
    return 0;
}

void ops_ctx_close(OpsCtx *c)
{
    if (!c->b) return;
    if (c->ab && c->attn_state) c->ab->destroy(c->attn_state, c->b);
    c->attn_state = NULL;
    for (int i = 0; i < c->n; i++) c->b->ops->free(c->b, c->bufs[i]);
    c->n = 0;
    backend_destroy(c->b);
    c->b = NULL;
}

void *ops_ctx_alloc(OpsCtx *c, size_t bytes)
{
    void *p = NULL;
    if (c->n == OPS_MAX_BUFS) {
        PyErr_SetString(PyExc_RuntimeError, "ops: too many buffers in one call");
        return NULL;
    }
    if (c->b->ops->alloc(c->b, &p, bytes ? bytes : 4, &c->err) != GPT2_OK) {
        ops_ctx_fail(c);
        return NULL;
    }
    c->bufs[c->n++] = p;
    return p;
}

void *ops_upload(OpsCtx *c, const void *src, DType src_dt, DType dst_dt, size_t n)
{
    const size_t bytes = n * dtype_size(dst_dt);
    void *dev = ops_ctx_alloc(c, bytes);
    if (!dev) return NULL;
    void *host = (void *)src;
    if (src_dt != dst_dt) {
        if (!(host = PyMem_Malloc(bytes + 1))) { PyErr_NoMemory(); return NULL; }
        dtype_convert(host, dst_dt, src, src_dt, n);
    }
    const Status s = c->b->ops->copy_h2d(c->b, dev, host, bytes, &c->err);
    if (host != src) PyMem_Free(host);
    return ops_ctx_check(c, s) < 0 ? NULL : dev;
}

void *ops_upload_arr(OpsCtx *c, PyArrayObject *a, DType dt)
{
    return ops_upload(c, PyArray_DATA(a), DTYPE_F32, dt, (size_t)PyArray_SIZE(a));
}

void *ops_upload_raw32(OpsCtx *c, PyArrayObject *a)
{
    return ops_upload(c, PyArray_DATA(a), DTYPE_F32, DTYPE_F32, (size_t)PyArray_SIZE(a));
}

PyObject *ops_download(OpsCtx *c, const void *dev, DType dt, int nd, npy_intp *dims)
{
    if (numpy_ready() < 0) return NULL;
    PyObject *arr = PyArray_SimpleNew(nd, dims, NPY_FLOAT32);
    if (!arr) return NULL;
    const size_t n = (size_t)PyArray_SIZE((PyArrayObject *)arr), es = dtype_size(dt);
    void *host = PyMem_Malloc(n * es + 1);
    if (!host) { Py_DECREF(arr); return PyErr_NoMemory(); }
    if (c->b->ops->copy_d2h(c->b, host, dev, n * es, &c->err) != GPT2_OK) {
        PyMem_Free(host);
        Py_DECREF(arr);
        ops_ctx_fail(c);
        return NULL;
    }
    dtype_convert(PyArray_DATA((PyArrayObject *)arr), DTYPE_F32, host, dt, n);
    PyMem_Free(host);
    return arr;
}

PyArrayObject *ops_as_f32(PyObject *o)
{
    if (numpy_ready() < 0) return NULL;
    return (PyArrayObject *)PyArray_FROM_OTF(o, NPY_FLOAT32, NPY_ARRAY_IN_ARRAY);
}

PyArrayObject *ops_as_i32(PyObject *o)
{
    if (numpy_ready() < 0) return NULL;
    return (PyArrayObject *)PyArray_FROM_OTF(o, NPY_INT32, NPY_ARRAY_IN_ARRAY);
}
