/* ops_ctx.h — the per-call context shared by the low-level ops entry points
 * (ops.c: attention, reshape_and_cache, merge; ops_backend.c: one BackendOps
 * entry each): a backend created for the call, the device buffers it hands out
 * (all released by ops_ctx_close), an optional attention backend state, and the
 * NumPy <-> device copies with dtype conversion. */
#ifndef GPT2_PY_OPS_CTX_H
#define GPT2_PY_OPS_CTX_H

#include "pyutil.h"

#include <numpy/arrayobject.h>

#include "attention.h"
#include "backend.h"

#define OPS_MAX_BUFS 16

typedef struct OpsCtx {
    ModuleState *st;
    Backend *b;
    const AttentionBackend *ab;      /* set by callers that run attention */
    void *attn_state;
    void *bufs[OPS_MAX_BUFS];
    int n;
    Error err;
} OpsCtx;

/* Creates the backend for device ("cpu"/"cuda") and dtype; -1 with an exception. */
int ops_ctx_open(OpsCtx *c, PyObject *module, const char *device, const char *dtype);
void ops_ctx_close(OpsCtx *c);                        /* safe twice, or never opened */
/* Raises c->err as a Python exception; returns -1. */
int ops_ctx_fail(OpsCtx *c);
/* 0 for GPT2_OK, else ops_ctx_fail. */
int ops_ctx_check(OpsCtx *c, Status s);
/* A device buffer released by ops_ctx_close; NULL with an exception set. */
void *ops_ctx_alloc(OpsCtx *c, size_t bytes);

/* Device copy of n host elements of src_dt, converted to dst_dt. */
void *ops_upload(OpsCtx *c, const void *src, DType src_dt, DType dst_dt, size_t n);
/* A float32 array converted to dt. */
void *ops_upload_arr(OpsCtx *c, PyArrayObject *a, DType dt);
/* 4-byte elements (int32 indices, fp32 values) copied as they are. */
void *ops_upload_raw32(OpsCtx *c, PyArrayObject *a);
/* A new float32 array of shape dims from a device buffer of dt elements. */
PyObject *ops_download(OpsCtx *c, const void *dev, DType dt, int nd, npy_intp *dims);

PyArrayObject *ops_as_f32(PyObject *o);   /* C-contiguous float32 copy or view */
PyArrayObject *ops_as_i32(PyObject *o);   /* C-contiguous int32 copy or view */

#endif
