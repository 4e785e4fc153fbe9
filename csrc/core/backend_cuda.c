/* backend_cuda.c — the "cuda" device backend: memory on the backend's own stream,
 * the model's element-wise/row kernels (kernels/), CUDA graphs, create/destroy.
 * GEMMs live in matmul_cuda.c (cuBLASLt) and the sampler's host side in
 * sample_cuda.c. CUDA builds only (compiled when GPT2_ENGINE_HAVE_CUDA). */
#include "backend_cuda.h"

#include <stdlib.h>
#include <string.h>

#include "kernels.h"

/* blocks that read one plain greedy row of a small batch at most (GPT2_ENGINE_SAMPLE_SPLITS;
 * sample_cuda.c sizes the split) */
#define SAMPLE_SPLITS_DEFAULT 16

/* *on = 1 when the variable is unset, empty or `yes`, 0 when it is `no`; else an error */
static Status env_two_way(const char *name, const char *yes, const char *no, int *on, Error *err)
{
    const char *v = getenv(name);
    if (!v || !*v || strcmp(v, yes) == 0) *on = 1;
    else if (strcmp(v, no) == 0) *on = 0;
    else
        return error_set(err, GPT2_ERR_VALUE, "%s=%.40s is none of %s, %s", name, v, yes, no);
    return GPT2_OK;
}

/* ---- memory ---- */

static Status cuda_alloc(Backend *b, void **ptr, size_t bytes, Error *err)
{
    *ptr = NULL;
    CUDA_CHECK(cuda_use_device(b));
    CUDA_CHECK(cudaMalloc(ptr, bytes ? bytes : 256));
    return GPT2_OK;
fail:
    *ptr = NULL;
    return err ? err->code : GPT2_ERR_DEVICE;
}

static void cuda_free(Backend *b, void *ptr)
{
    (void)b;
    if (ptr) cudaFree(ptr);
}

static Status cuda_alloc_host(Backend *b, void **ptr, size_t bytes, Error *err)
{
    *ptr = NULL;
    CUDA_CHECK(cuda_use_device(b));
    CUDA_CHECK(cudaHostAlloc(ptr, bytes ? bytes : 64, cudaHostAllocDefault));
    return GPT2_OK;
fail:
    *ptr = NULL;
    return err ? err->code : GPT2_ERR_DEVICE;
}

static void cuda_free_host(Backend *b, void *ptr)
{
    (void)b;
    if (ptr) cudaFreeHost(ptr);
}

static Status cuda_copy(Backend *b, void *dst, const void *src, size_t bytes,
                        enum cudaMemcpyKind kind, Error *err)
{
    if (bytes == 0) return GPT2_OK;
    CUDA_CHECK(cuda_use_device(b));
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, cuda_impl(b)->stream));
    if (kind == cudaMemcpyDeviceToHost) CUDA_CHECK(cudaStreamSynchronize(cuda_impl(b)->stream));
    return GPT2_OK;
fail:
    return err ? err->code : GPT2_ERR_DEVICE;
}

static Status cuda_copy_h2d(Backend *b, void *dst, const void *src, size_t bytes, Error *err)
{
    return cuda_copy(b, dst, src, bytes, cudaMemcpyHostToDevice, err);
}
static Status cuda_copy_d2h(Backend *b, void *dst, const void *src, size_t bytes, Error *err)
{
    return cuda_copy(b, dst, src, bytes, cudaMemcpyDeviceToHost, err);
}
static Status cuda_copy_d2d(Backend *b, void *dst, const void *src, size_t bytes, Error *err)
{
    return cuda_copy(b, dst, src, bytes, cudaMemcpyDeviceToDevice, err);
}

static Status cuda_memset_zero(Backend *b, void *dst, size_t bytes, Error *err)
{
    CUDA_CHECK(cuda_use_device(b));
    if (bytes) CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, cuda_impl(b)->stream));
    return GPT2_OK;
fail:
    return err ? err->code : GPT2_ERR_DEVICE;
}

static Status cuda_synchronize(Backend *b, Error *err)
{
    CUDA_CHECK(cudaStreamSynchronize(cuda_impl(b)->stream));
    return GPT2_OK;
fail:
    return err ? err->code : GPT2_ERR_DEVICE;
}

static Status cuda_mem_info(Backend *b, size_t *free_bytes, size_t *total_bytes, Error *err)
{
    CUDA_CHECK(cuda_use_device(b));
    CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
    return GPT2_OK;
fail:
    return err ? err->code : GPT2_ERR_DEVICE;
}

Status cuda_buffer_reserve(void **buf, size_t *cap, size_t bytes, Error *err)
{
    if (*cap >= bytes && *buf) return GPT2_OK;
    if (*buf) cudaFree(*buf);
    *buf = NULL;
    *cap = 0;
    CUDA_CHECK(cudaMalloc(buf, bytes));
    *cap = bytes;
    return GPT2_OK;
fail:
    *buf = NULL;
    return err ? err->code : GPT2_ERR_DEVICE;
}

/* ---- model math: thin wrappers over the kernels' launchers ---- */

static Status cuda_embed(Backend *b, void *out, const int32_t *ids, const int32_t *pos,
                         const void *wte, const void *wpe, int T, int C, Error *err)
{
    CUDA_CHECK(cuda_use_device(b));
    CUDA_CHECK(embed_cuda(out, ids, pos, wte, wpe, T, C, b->dtype, cuda_impl(b)->stream));
    return GPT2_OK;
fail:
    return err ? err->code : GPT2_ERR_DEVICE;
}

static Status cuda_layernorm(Backend *b, void *out, const void *in, const void *w,
                             const void *bias, int T, int C, float eps, Error *err)
{
    CUDA_CHECK(cuda_use_device(b));
    CUDA_CHECK(layernorm_cuda(out, in, w, bias, T, C, eps, b->dtype, cuda_impl(b)->stream,
                              cuda_impl(b)->pdl));
    return GPT2_OK;
fail:
    return err ? err->code : GPT2_ERR_DEVICE;
}

static Status cuda_reshape_and_cache(Backend *b, const void *k, const void *v, int kv_stride,
                                     void *k_cache, void *v_cache, const int32_t *slot_mapping,
                                     int T, int H, int D, int block_size, Error *err)
{
    CUDA_CHECK(cuda_use_device(b));
    CUDA_CHECK(reshape_and_cache_cuda(k, v, kv_stride, k_cache, v_cache, slot_mapping, T, H, D,
                                      block_size, b->dtype, cuda_impl(b)->stream,
                                      cuda_impl(b)->pdl));
    return GPT2_OK;
fail:
    return err ? err->code : GPT2_ERR_DEVICE;
}

static Status cuda_gather_rows(Backend *b, void *out, const void *in, const int32_t *rows, int n,
                               int C, Error *err)
{
    CUDA_CHECK(cuda_use_device(b));
    CUDA_CHECK(gather_rows_cuda(out, in, rows, n, C, b->dtype, cuda_impl(b)->stream,
                                cuda_impl(b)->pdl));
    return GPT2_OK;
fail:
    return err ? err->code : GPT2_ERR_DEVICE;
}

static Status cuda_to_float(Backend *b, float *out, const void *in, int rows, int cols, int ld,
                            Error *err)
{
    CUDA_CHECK(cuda_use_device(b));
    CUDA_CHECK(to_float_cuda(out, in, rows, cols, ld, b->dtype, cuda_impl(b)->stream,
                             cuda_impl(b)->pdl));
    return GPT2_OK;
fail:
    return err ? err->code : GPT2_ERR_DEVICE;
}

static Status cuda_fence_record(Backend *b, int i, Error *err)
{
    if (i < 0 || i >= BACKEND_FENCES) return error_set(err, GPT2_ERR_INTERNAL, "fence %d", i);
    CUDA_CHECK(cuda_use_device(b));
    CUDA_CHECK(cudaEventRecord(cuda_impl(b)->fences[i], cuda_impl(b)->stream));
    return GPT2_OK;
fail:
    return err ? err->code : GPT2_ERR_DEVICE;
}

static Status cuda_fence_wait(Backend *b, int i, Error *err)
{
    if (i < 0 || i >= BACKEND_FENCES) return error_set(err, GPT2_ERR_INTERNAL, "fence %d", i);
    CUDA_CHECK(cuda_use_device(b));
    CUDA_CHECK(cudaEventSynchronize(cuda_impl(b)->fences[i]));
    return GPT2_OK;
fail:
    return err ? err->code : GPT2_ERR_DEVICE;
}

/* ---- CUDA graphs: up to CUDA_MAX_GRAPHS instantiated graphs, found by key ---- */

static int graph_find(const CudaImpl *im, int key)
{
    for (int i = 0; i < im->n_graphs; i++)
        if (im->graph_keys[i] == key) return i;
    return -1;
}

static Status cuda_graph_capture_begin(Backend *b, Error *err)
{
    CudaImpl *im = cuda_impl(b);
    if (im->capturing)
        return error_set(err, GPT2_ERR_INTERNAL, "graph_capture_begin: already capturing");
    CUDA_CHECK(cuda_use_device(b));
    CUDA_CHECK(cudaStreamBeginCapture(im->stream, cudaStreamCaptureModeRelaxed));
    im->capturing = 1;
    return GPT2_OK;
fail:
    return err ? err->code : GPT2_ERR_DEVICE;
}

/* Ends the capture (always, so the stream is usable again) and stores the
 * instantiated graph under `key`, replacing an older one with the same key. */
static Status cuda_graph_capture_end(Backend *b, int key, Error *err)
{
    CudaImpl *im = cuda_impl(b);
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    if (!im->capturing)
        return error_set(err, GPT2_ERR_INTERNAL, "graph_capture_end: no capture in progress");
    im->capturing = 0;
    CUDA_CHECK(cudaStreamEndCapture(im->stream, &graph));
    int slot = graph_find(im, key);
    if (slot < 0 && im->n_graphs == CUDA_MAX_GRAPHS) {
        error_set(err, GPT2_ERR_VALUE, "graph_capture_end: more than %d CUDA graphs",
                  CUDA_MAX_GRAPHS);
        goto fail;
    }
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    /* upload now: the first replay would otherwise pay for it (milliseconds) */
    CUDA_CHECK(cudaGraphUpload(exec, im->stream));
    cudaGraphDestroy(graph);
    if (slot < 0) {
        slot = im->n_graphs++;
    } else {
        cudaGraphExecDestroy(im->graphs[slot]);
    }
    im->graph_keys[slot] = key;
    im->graphs[slot] = exec;
    return GPT2_OK;
fail:
    if (graph) cudaGraphDestroy(graph);
    if (exec) cudaGraphExecDestroy(exec);
    cudaGetLastError();   /* a failed capture leaves a sticky-free error behind */
    return err ? err->code : GPT2_ERR_DEVICE;
}

static Status cuda_graph_launch(Backend *b, int key, Error *err)
{
    CudaImpl *im = cuda_impl(b);
    int slot = graph_find(im, key);
    if (slot < 0) return error_set(err, GPT2_ERR_INTERNAL, "graph_launch: no graph with key %d", key);
    CUDA_CHECK(cuda_use_device(b));
    CUDA_CHECK(cudaGraphLaunch(im->graphs[slot], im->stream));
    return GPT2_OK;
fail:
    return err ? err->code : GPT2_ERR_DEVICE;
}

/* ---- lifetime ---- */

static void cuda_destroy(Backend *b)
{
    if (!b) return;
    CudaImpl *im = b->impl;
    if (im) {
        cudaSetDevice(b->device);
        if (im->stream) cudaStreamSynchronize(im->stream);
        if (im->capturing) {
            cudaGraph_t g = NULL;
            if (cudaStreamEndCapture(im->stream, &g) == cudaSuccess && g) cudaGraphDestroy(g);
        }
        for (int i = 0; i < im->n_graphs; i++) cudaGraphExecDestroy(im->graphs[i]);
        cuda_matmul_plans_free(im);
        cuda_sample_buffers_free(im);
        for (int i = 0; i < 2; i++)
            if (im->sample_done[i]) cudaEventDestroy(im->sample_done[i]);
        for (int i = 0; i < BACKEND_FENCES; i++)
            if (im->fences[i]) cudaEventDestroy(im->fences[i]);
        if (im->workspace) cudaFree(im->workspace);
        if (im->lt) cublasLtDestroy(im->lt);
        if (im->stream) cudaStreamDestroy(im->stream);
        cudaGetLastError();
        free(im);
    }
    free(b);
}

static const BackendOps cuda_ops = {
    .alloc = cuda_alloc,
    .free = cuda_free,
    .alloc_host = cuda_alloc_host,
    .free_host = cuda_free_host,
    .copy_h2d = cuda_copy_h2d,
    .copy_d2h = cuda_copy_d2h,
    .copy_d2d = cuda_copy_d2d,
    .memset_zero = cuda_memset_zero,
    .synchronize = cuda_synchronize,
    .mem_info = cuda_mem_info,
    .embed = cuda_embed,
    .layernorm = cuda_layernorm,
    .matmul = cuda_matmul,
    .layernorm_matmul = cuda_layernorm_matmul,
    .reshape_and_cache = cuda_reshape_and_cache,
    .gather_rows = cuda_gather_rows,
    .to_float = cuda_to_float,
    .sample = cuda_sample,
    .sample_launch = cuda_sample_launch,
    .sample_wait = cuda_sample_wait,
    .upload_ints = cuda_upload_ints,
    .fence_record = cuda_fence_record,
    .fence_wait = cuda_fence_wait,
    .fused_decode_create = cuda_fused_decode_create,
    .fused_decode = cuda_fused_decode,
    .fused_decode_destroy = cuda_fused_decode_destroy,
    .graph_capture_begin = cuda_graph_capture_begin,
    .graph_capture_end = cuda_graph_capture_end,
    .graph_launch = cuda_graph_launch,
    .destroy = cuda_destroy,
};

int backend_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();   /* no driver / no device: not an error for the caller */
        return 0;
    }
    return n;
}

Status backend_cuda_create(Backend **out, DType dtype, int device, Error *err)
{
    *out = NULL;
    Backend *b = calloc(1, sizeof *b);
    CudaImpl *im = calloc(1, sizeof *im);
    if (!b || !im) {
        free(b);
        free(im);
        return error_set(err, GPT2_ERR_NOMEM, "out of memory creating the CUDA backend");
    }
    b->name = "cuda";
    b->dtype = dtype;
    b->ops = &cuda_ops;
    b->impl = im;
    b->device = device;
    int major = 0, minor = 0;
    CUDA_CHECK(cudaSetDevice(device));
    CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    b->compute_capability = major * 10 + minor;
    if (dtype == DTYPE_BF16 && major < 8) {
        error_set(err, GPT2_ERR_VALUE, "dtype='bfloat16' needs compute capability >= 8.0 "
                  "(device %d is %d.%d)", device, major, minor);
        goto fail;
    }
    CUDA_CHECK(cudaStreamCreateWithFlags(&im->stream, cudaStreamNonBlocking));
    for (int i = 0; i < 2; i++)
        CUDA_CHECK(cudaEventCreateWithFlags(&im->sample_done[i], cudaEventDisableTiming));
    for (int i = 0; i < BACKEND_FENCES; i++)
        CUDA_CHECK(cudaEventCreateWithFlags(&im->fences[i], cudaEventDisableTiming));
    CUBLAS_CHECK(cublasLtCreate(&im->lt));
    CUDA_CHECK(cudaMalloc(&im->workspace, MATMUL_WORKSPACE_BYTES));
    if (cuda_gemv_init(im, err) != GPT2_OK) goto fail;
    CUDA_CHECK(cudaDeviceGetAttribute(&im->num_sms, cudaDevAttrMultiProcessorCount, device));
    {
        const char *env = getenv("GPT2_ENGINE_PDL");
        im->pdl = major >= 9 && !(env && strcmp(env, "0") == 0);
    }
    {
        const char *env = getenv("GPT2_ENGINE_SAMPLE_SPLITS");
        im->sample_splits_max = env && *env ? GPT2_MAX(1, GPT2_MIN(atoi(env), SAMPLE_MAX_SPLITS))
                                            : SAMPLE_SPLITS_DEFAULT;
    }
    /* measured (H200, gpt2 batch 1, bench_decode, the same run): 0.235 ms per token;
     * inputs copied 0.237, outputs copied 0.243, both 0.244 */
    if (env_two_way("GPT2_ENGINE_SAMPLE_IN", "param", "copy", &im->sample_in_param, err) ||
        env_two_way("GPT2_ENGINE_SAMPLE_OUT", "mapped", "copy", &im->sample_out_mapped, err) ||
        env_two_way("GPT2_ENGINE_UPLOAD", "param", "copy", &im->upload_param, err))
        goto fail;
    *out = b;
    return GPT2_OK;
fail:
    cuda_destroy(b);
    return err ? err->code : GPT2_ERR_DEVICE;
}
