/* backend_cuda.h — private to the CUDA device backend (backend_cuda.c,
 * matmul_cuda.c, sample_cuda.c): the impl struct behind Backend.impl and the
 * CUDA_CHECK / CUBLAS_CHECK macros. CUDA builds only. Not a public interface:
 * other modules see the backend through backend.h; the CUDA attention backends
 * read `stream` and `pdl` (they launch on the backend's stream). */
#ifndef GPT2_BACKEND_CUDA_H
#define GPT2_BACKEND_CUDA_H

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "backend.h"

/* Record file:line, the failing call and the library's message, then `goto fail`
 * (the enclosing function declares `Error *err` and a `fail:` label). */
#define CUDA_CHECK(call)                                                                  \
    do {                                                                                  \
        cudaError_t cuda_e_ = (call);                                                     \
        if (cuda_e_ != cudaSuccess) {                                                     \
            error_set(err, cuda_e_ == cudaErrorMemoryAllocation ? GPT2_ERR_NOMEM          \
                                                                : GPT2_ERR_DEVICE,        \
                      "%s:%d: %s: %s", __FILE__, __LINE__, #call,                         \
                      cudaGetErrorString(cuda_e_));                                       \
            goto fail;                                                                    \
        }                                                                                 \
    } while (0)

#define CUBLAS_CHECK(call)                                                                \
    do {                                                                                  \
        cublasStatus_t cublas_s_ = (call);                                                \
        if (cublas_s_ != CUBLAS_STATUS_SUCCESS) {                                         \
            error_set(err, GPT2_ERR_DEVICE, "%s:%d: %s: %s", __FILE__, __LINE__, #call,   \
                      cublasGetStatusString(cublas_s_));                                  \
            goto fail;                                                                    \
        }                                                                                 \
    } while (0)

#define CUDA_MAX_GRAPHS 64
#define MATMUL_PLAN_SLOTS 256
#define MATMUL_WORKSPACE_BYTES ((size_t)32 << 20)

/* One cached cuBLASLt plan: descriptors, layouts and the chosen algorithm for a
 * (M, K, N, flags, act, bias?, pointer alignments) key. */
typedef struct MatmulPlan {
    int used;
    int M, K, N, flags, act, has_bias;
    int align;                        /* packed log2 alignments of A, B, C and bias */
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;   /* w, in, out in cuBLAS's column-major view */
    cublasLtMatmulAlgo_t algo;
} MatmulPlan;

typedef struct CudaImpl {
    cudaStream_t stream;              /* FIRST member: attention backends read it */
    cublasLtHandle_t lt;
    void *workspace;                  /* MATMUL_WORKSPACE_BYTES, for every GEMM (capturable) */
    MatmulPlan plans[MATMUL_PLAN_SLOTS];
    int next_evict;                   /* round-robin victim when the table is full */
    /* CUDA graphs by key */
    int capturing;
    int graph_keys[CUDA_MAX_GRAPHS];
    cudaGraphExec_t graphs[CUDA_MAX_GRAPHS];
    int n_graphs;
    /* sampler staging, grown on demand, never shrunk */
    void *sample_in;  size_t sample_in_bytes;   /* device: rows, adj, uniforms */
    void *sample_out; size_t sample_out_bytes;  /* device: tokens, logprobs, ranks, top-k */
    float *sample_work; size_t sample_work_bytes; /* device: (R, V) adjusted logits / p */
    void *sample_split;               /* device: split greedy rows' tickets and parts (sample_cuda.c) */
    int sample_splits_max;            /* blocks per split row at most: GPT2_ENGINE_SAMPLE_SPLITS */
    int sample_in_param;              /* small inputs with the launch: GPT2_ENGINE_SAMPLE_IN */
    int sample_out_mapped;            /* outputs straight to host_stage: GPT2_ENGINE_SAMPLE_OUT */
    int upload_param;                 /* small steps' ints with the launch: GPT2_ENGINE_UPLOAD */
    /* two launches may be outstanding (sample_launch / sample_wait): per ticket,
     * pinned (mapped) host staging for the inputs and outputs, its device address, its
     * completion event and its shape */
    void *host_stage[2]; size_t host_stage_bytes[2];
    void *host_stage_dev[2];
    cudaEvent_t sample_done[2];
    int sample_rows[2], sample_lp[2], sample_pending[2];
    int sample_next;                  /* ticket of the next launch */
    cudaEvent_t fences[BACKEND_FENCES];
    int gemv_enabled;                 /* small-batch GEMV (kernels/gemv.cu); GPT2_ENGINE_GEMV=0: off */
    int num_sms;                      /* multiprocessors of the device */
    /* programmatic dependent launch for the decode-path kernels (kernels/launch.cuh):
     * compute capability >= 9.0 unless GPT2_ENGINE_PDL=0 */
    int pdl;
} CudaImpl;

static inline CudaImpl *cuda_impl(Backend *b) { return (CudaImpl *)b->impl; }

/* Makes b's GPU current for this thread (engines on two GPUs may share a thread);
 * a cheap thread-local query when it already is. Used as CUDA_CHECK(cuda_use_device(b)). */
static inline cudaError_t cuda_use_device(const Backend *b)
{
    int cur = -1;
    cudaError_t e = cudaGetDevice(&cur);
    if (e != cudaSuccess || cur == b->device) return e;
    return cudaSetDevice(b->device);
}

/* matmul_cuda.c */
Status cuda_matmul(Backend *b, void *out, const void *in, const void *w, const void *bias,
                   int M, int K, int N, int flags, int act, Error *err);
Status cuda_layernorm_matmul(Backend *b, void *out, const void *in, const void *ln_w,
                             const void *ln_b, float eps, void *ln_out, const void *w,
                             const void *bias, int M, int K, int N, int flags, int act,
                             const CacheWrite *cw, Error *err);
/* reads GPT2_ENGINE_GEMV */
Status cuda_gemv_init(CudaImpl *im, Error *err);
void cuda_matmul_plans_free(CudaImpl *im);
/* decode_fused_cuda.c: the batch-1 step (backend.h's fused_decode_*) in one of two forms,
 * tagged by the first int of the state: two kernels per layer (decode_layer_cuda.c, the
 * default) or one persistent kernel (decode_fused_cuda.c, GPT2_ENGINE_FUSED_DECODE=1) */
enum { FUSED_MODE_PERSISTENT = 1, FUSED_MODE_LAYERS = 2 };
Status cuda_fused_decode_create(Backend *b, const FusedDecodeModel *m, void **state, char *why,
                                size_t why_len, Error *err);
Status cuda_fused_decode(Backend *b, void *state, const FusedDecodeStep *s, Error *err);
void cuda_fused_decode_destroy(Backend *b, void *state);
/* shared by both forms: the ACT_CODE_* (kernels.h) of an Activation, and why the
 * weights cannot be read in 16-byte loads (NULL when they can) */
int fused_act_code(int activation);
const char *fused_weights_misaligned(const FusedDecodeModel *m);
/* forced: GPT2_ENGINE_FUSED_DECODE=layers (else the default, which keeps big layers off) */
Status cuda_layer_decode_create(Backend *b, const FusedDecodeModel *m, int forced, void **state,
                                char *why, size_t why_len, Error *err);
Status cuda_layer_decode(Backend *b, void *state, const FusedDecodeStep *s, Error *err);
void cuda_layer_decode_destroy(Backend *b, void *state);
/* decode_layer_trace_cuda.c: the trace buffer's size for n_layer layers (words), and its
 * summary, printed to stderr (to = "1") or appended to the file to */
size_t layer_trace_words(int n_layer);
void layer_trace_print(const unsigned long long *trace, const unsigned *trace_step, int n_layer,
                       int C, const char *to);
/* sample_cuda.c (the events are created by backend_cuda_create) */
Status cuda_sample(Backend *b, const void *logits, DType logits_dtype, int ld, int R, int V,
                   const SamplingRow *rows, const TokenAdjust *adj, int n_adj, int max_logprobs,
                   SamplerOutput *out, Error *err);
Status cuda_sample_launch(Backend *b, const void *logits, DType logits_dtype, int ld, int R,
                          int V, const SamplingRow *rows, const TokenAdjust *adj, int n_adj,
                          int max_logprobs, int *ticket, Error *err);
Status cuda_sample_wait(Backend *b, int ticket, SamplerOutput *out, Error *err);
Status cuda_upload_ints(Backend *b, int32_t *dst, const int32_t *src, int n, int ids_off,
                        int feed_idx_off, int feed_row_off, int n_feeds, Error *err);
void cuda_sample_buffers_free(CudaImpl *im);
/* Grows a device buffer to at least `bytes` (contents are not kept). */
Status cuda_buffer_reserve(void **buf, size_t *cap, size_t bytes, Error *err);

#endif /* GPT2_BACKEND_CUDA_H */
