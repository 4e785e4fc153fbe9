/* backend.h — the device backend: a table of function pointers for memory and
 * the model's math, chosen once per engine ("cpu" in backend_cpu.c, "cuda" in
 * backend_cuda.c). model.c calls only these, so the forward pass is written once.
 *
 * Conventions for every op:
 *   - pointers are device memory of this backend (host memory for "cpu");
 *   - activations and weights are in b->dtype (the compute dtype); index
 *     buffers are int32; accumulation is fp32;
 *   - ops are asynchronous on the backend's stream; copy_d2h synchronizes;
 *   - a failing op returns a Status and fills err (CUDA: file:line + error string).
 * Shape legend: T tokens in the packed batch, C n_embd, H heads, D head size,
 * V vocab, K/N the GEMM's inner/outer sizes.
 */
#ifndef GPT2_BACKEND_H
#define GPT2_BACKEND_H

#include "common.h"
#include "sampling.h"

typedef struct Backend Backend;

#define BACKEND_FENCES 4

enum MatmulFlags {
    MATMUL_W_NK = 1 << 0,       /* w is (N, K) row-major (lm_head = wte); default (K, N), Conv1D */
    MATMUL_GELU = 1 << 1,       /* out = gelu_new(in @ w + bias) */
    MATMUL_ACCUMULATE = 1 << 2, /* out += in @ w + bias (residual add fused in the GEMM) */
};

/* Where layernorm_matmul writes this step's K/V (see reshape_and_cache below). */
typedef struct CacheWrite {
    void *k_cache, *v_cache;            /* (num_blocks, H, block_size, D) */
    const int32_t *slot_mapping;        /* (M); negative: padding, skipped */
    int num_heads, head_size, block_size;
} CacheWrite;

/* What the one-kernel batch-1 step (fused_decode_* below) needs of a model:
 * dimensions, device weights and the paged caches. */
typedef struct FusedDecodeModel {
    int n_layer, n_embd, n_head, vocab_size, block_size;
    int max_model_len;                  /* the longest context a step attends to */
    int activation;                     /* Activation (config.h) */
    float eps, scale;                   /* layernorm epsilon, 1 / sqrt(D) */
    const void *wte, *wpe, *ln_f_w, *ln_f_b;
    const void *const *layer_weights;   /* (n_layer, 12): ln_1_w, ln_1_b, c_attn_w, c_attn_b,
                                         * attn_proj_w, attn_proj_b, ln_2_w, ln_2_b, c_fc_w,
                                         * c_fc_b, mlp_proj_w, mlp_proj_b (checkpoint.h order) */
    void *const *key_cache, *const *value_cache;   /* (n_layer) */
} FusedDecodeModel;

/* One T = 1 step (device pointers, row 0 of each). */
typedef struct FusedDecodeStep {
    const int32_t *input_ids, *positions, *slot_mapping, *seq_lens, *block_tables;
    void *logits;                       /* (1, >= V) in the compute dtype */
} FusedDecodeStep;

typedef struct BackendOps {
    /* ---- memory ---- */
    Status (*alloc)(Backend *b, void **ptr, size_t bytes, Error *err);
    void (*free)(Backend *b, void *ptr);                       /* NULL-safe */
    /* host staging memory for fast, truly asynchronous copies (pinned on CUDA) */
    Status (*alloc_host)(Backend *b, void **ptr, size_t bytes, Error *err);
    void (*free_host)(Backend *b, void *ptr);                  /* NULL-safe */
    Status (*copy_h2d)(Backend *b, void *dst, const void *src, size_t bytes, Error *err);
    Status (*copy_d2h)(Backend *b, void *dst, const void *src, size_t bytes, Error *err);
    Status (*copy_d2d)(Backend *b, void *dst, const void *src, size_t bytes, Error *err);
    Status (*memset_zero)(Backend *b, void *dst, size_t bytes, Error *err);
    Status (*synchronize)(Backend *b, Error *err);
    /* free and total device memory in bytes (CPU: available and total RAM) */
    Status (*mem_info)(Backend *b, size_t *free_bytes, size_t *total_bytes, Error *err);

    /* ---- model math ---- */
    /* out(T, C) = wte[ids[t]] + wpe[pos[t]] */
    Status (*embed)(Backend *b, void *out, const int32_t *ids, const int32_t *pos,
                    const void *wte, const void *wpe, int T, int C, Error *err);
    /* out(T, C) = layernorm(in(T, C)) * w + bias, statistics in fp32 */
    Status (*layernorm)(Backend *b, void *out, const void *in, const void *w, const void *bias,
                        int T, int C, float eps, Error *err);
    /* out(M, N) = in(M, K) @ w + bias, see MatmulFlags; bias may be NULL;
     * act selects the activation for MATMUL_GELU (Activation from config.h). */
    Status (*matmul)(Backend *b, void *out, const void *in, const void *w, const void *bias,
                     int M, int K, int N, int flags, int act, Error *err);
    /* out(M, N) = layernorm(in(M, K)) @ w + bias: the two ops above in one call, so
     * a backend can fold the layernorm into the matmul (CUDA does for small M).
     * ln_out (M, K) is scratch that may receive the layernorm's output. With
     * cw != NULL (the qkv projection, N = 3 * H * D) this step's K and V columns of
     * out are also written to the paged cache, as reshape_and_cache would. */
    Status (*layernorm_matmul)(Backend *b, void *out, const void *in, const void *ln_w,
                               const void *ln_b, float eps, void *ln_out, const void *w,
                               const void *bias, int M, int K, int N, int flags, int act,
                               const CacheWrite *cw, Error *err);
    /* Writes this step's K and V into the paged cache through the slot mapping:
     * k, v: (T, H*D) rows with row stride kv_stride elements (they live inside qkv);
     * caches: (num_blocks, H, block_size, D); slot s -> block s / block_size, offset s % block_size.
     * A negative slot is skipped (padding). */
    Status (*reshape_and_cache)(Backend *b, const void *k, const void *v, int kv_stride,
                                void *k_cache, void *v_cache, const int32_t *slot_mapping,
                                int T, int H, int D, int block_size, Error *err);
    /* out(n, C) = in[rows[i]] (select the rows whose logits are needed) */
    Status (*gather_rows)(Backend *b, void *out, const void *in, const int32_t *rows, int n,
                          int C, Error *err);
    /* out(rows, cols) fp32, contiguous = in(rows, ld) converted from b->dtype: the
     * logits to fp32 for the sampler, dropping any padding columns (cols <= ld) */
    Status (*to_float)(Backend *b, float *out, const void *in, int rows, int cols, int ld,
                       Error *err);

    /* ---- sampling (see sampling.h): logits (R, V) in device memory, row stride ld
     * elements of logits_dtype (the lm_head's output as it is: the CUDA backend reads
     * fp16/bf16/fp32 rows, the CPU backend fp32 with ld == V); rows, adj and out are
     * host memory; the call returns when out is filled. ---- */
    Status (*sample)(Backend *b, const void *logits, DType logits_dtype, int ld, int R, int V,
                     const SamplingRow *rows, const TokenAdjust *adj, int n_adj,
                     int max_logprobs, SamplerOutput *out, Error *err);

    /* ---- the same sampling split in two, for steps that overlap the host (the
     * engine's async scheduling): sample_launch queues it and returns a ticket at
     * once (rows and adj may be reused on return); sample_wait(ticket) blocks until
     * that launch is done and fills out. At most two launches are outstanding.
     * upload_ints queues dst[0, n) = src[0, n) (device / host int32 staging that stays
     * unchanged until the upload is done: fence it), then ids[idx[i]] = token of row
     * rows[i] of the latest sample_launch for i < n_feeds, with ids = dst + ids_off, idx =
     * dst + feed_idx_off, rows = dst + feed_row_off (the step's feed lists, uploaded
     * with it; a token < 0 becomes 0), so a step can take the previous step's tokens
     * before the host has seen them. ---- */
    Status (*sample_launch)(Backend *b, const void *logits, DType logits_dtype, int ld, int R,
                            int V, const SamplingRow *rows, const TokenAdjust *adj, int n_adj,
                            int max_logprobs, int *ticket, Error *err);
    Status (*sample_wait)(Backend *b, int ticket, SamplerOutput *out, Error *err);
    Status (*upload_ints)(Backend *b, int32_t *dst, const int32_t *src, int n, int ids_off,
                          int feed_idx_off, int feed_row_off, int n_feeds, Error *err);
    /* host fences on the stream: fence_record(i) marks the work queued so far and
     * fence_wait(i) blocks until it is done; i in [0, BACKEND_FENCES) */
    Status (*fence_record)(Backend *b, int i, Error *err);
    Status (*fence_wait)(Backend *b, int i, Error *err);

    /* ---- a one-token step (batch-1 decode) as one kernel (NULL on the CPU):
     * fused_decode_create prepares it for a model, or leaves *state NULL and says
     * why in `why` (not asked for with GPT2_ENGINE_FUSED_DECODE=1, or this GPU, dtype
     * or shape can't);
     * fused_decode runs model_forward's whole math for one token; destroy is
     * NULL-safe. ---- */
    Status (*fused_decode_create)(Backend *b, const FusedDecodeModel *m, void **state,
                                  char *why, size_t why_len, Error *err);
    Status (*fused_decode)(Backend *b, void *state, const FusedDecodeStep *s, Error *err);
    void (*fused_decode_destroy)(Backend *b, void *state);

    /* ---- CUDA graphs (NULL on the CPU): work issued between capture_begin and
     * capture_end is recorded as graph `key` and replayed by graph_launch. ---- */
    Status (*graph_capture_begin)(Backend *b, Error *err);
    Status (*graph_capture_end)(Backend *b, int key, Error *err);
    Status (*graph_launch)(Backend *b, int key, Error *err);

    void (*destroy)(Backend *b);
} BackendOps;

struct Backend {
    const char *name;      /* "cpu" or "cuda" */
    DType dtype;           /* compute dtype of activations and weights */
    const BackendOps *ops;
    void *impl;            /* backend-private state (stream, cuBLAS handle, workspaces) */
    int device;            /* CUDA device ordinal; 0 on the CPU */
    int compute_capability;/* major*10+minor on CUDA, 0 on the CPU */
};

/* Creates the backend named `name` ("cpu" or "cuda") for compute dtype `dtype`.
 * "cuda" in a CPU-only build or without a GPU -> GPT2_ERR_VALUE with the reason. */
Status backend_create(Backend **out, const char *name, DType dtype, int device, Error *err);
void backend_destroy(Backend *b);   /* NULL-safe */
/* 1 when this build has CUDA and a GPU is visible (and fills *count). */
int backend_cuda_available(int *count);

/* The implementations (backend_cpu.c, backend_cuda.c). */
Status backend_cpu_create(Backend **out, DType dtype, Error *err);
Status backend_cuda_create(Backend **out, DType dtype, int device, Error *err);
int backend_cuda_device_count(void);

#endif
