/* attention.h — the attention backend interface and its selector.
 *
 * An attention backend computes causal attention for a packed, variable-length
 * batch whose keys and values live in the paged KV cache. Backends: "CPU"
 * (attention_cpu.c), "PAGED" (CUDA, vLLM-style paged kernels), "FLASH" (CUDA,
 * tensor-core flash attention). The selector (attention.c) picks one at start-up:
 * forced name > GPT2_ENGINE_ATTENTION_BACKEND > auto-detection.
 *
 * KV cache layout, every backend, per layer, for K and for V alike:
 *     (num_blocks, H, block_size, D)  — one contiguous (block_size, D) tile per block and head.
 */
#ifndef GPT2_ATTENTION_H
#define GPT2_ATTENTION_H

#include "backend.h"

/* One step's batch, as the attention kernels see it. Sequences are ordered
 * decodes first: the first num_decodes sequences have exactly one query token.
 * Device pointers (host pointers on the CPU backend) unless named host_*. */
typedef struct AttentionMetadata {
    int num_seqs;                   /* sequences in the step */
    int num_tokens;                 /* T: query tokens in the step */
    int num_decodes;                /* leading sequences with query length 1 */
    int max_query_len;              /* max over sequences of this step's query length */
    int max_seq_len;                /* max over sequences of seq_lens */
    int block_table_stride;         /* row stride of block_tables (max blocks per sequence) */
    const int32_t *query_start_loc; /* (num_seqs + 1) cu_seqlens of the queries */
    const int32_t *seq_lens;        /* (num_seqs) context length including this step's tokens */
    const int32_t *block_tables;    /* (num_seqs, block_table_stride) physical block ids */
    const int32_t *host_query_start_loc; /* host copies, for launch decisions */
    const int32_t *host_seq_lens;
    /* 1 while a CUDA graph is being captured: host_* and max_seq_len are then
     * capture-time values (max_seq_len = max_model_len) that the replays don't
     * update, so kernels must bound every loop by the device seq_lens. */
    int graph_capture;
} AttentionMetadata;

/* What the model needs from an attention backend (checked at start-up). */
typedef struct AttentionConfig {
    int num_heads;          /* H (per rank) */
    int head_size;          /* D */
    int block_size;
    DType dtype;
    float scale;            /* 1 / sqrt(D) */
    int max_num_seqs;
    int max_num_batched_tokens;
    int max_model_len;
    int compute_capability; /* 0 on the CPU */
    const char *device;     /* "cpu" or "cuda" */
} AttentionConfig;

typedef struct AttentionBackend {
    const char *name;       /* "CPU", "PAGED", "FLASH" */
    /* GPT2_OK if this backend can serve cfg, else an error explaining why. */
    Status (*check)(const AttentionConfig *cfg, Error *err);
    /* Per-engine state (workspaces sized from cfg). */
    Status (*create)(void **state, Backend *b, const AttentionConfig *cfg, Error *err);
    void (*destroy)(void *state, Backend *b);
    /* out(T, H*D) = softmax(q k^T * scale + causal mask) v, where
     * q is (T, H*D) with row stride q_stride elements (q lives inside qkv),
     * query token i of sequence s sits at position seq_lens[s] - q_len(s) + i and
     * attends to cache positions 0 .. that position (its own K/V are already cached). */
    Status (*forward)(void *state, Backend *b, void *out, const void *q, int q_stride,
                      const void *k_cache, const void *v_cache, const AttentionMetadata *md,
                      Error *err);
} AttentionBackend;

extern const AttentionBackend attention_backend_cpu;
#ifdef GPT2_ENGINE_HAVE_CUDA
extern const AttentionBackend attention_backend_paged;
extern const AttentionBackend attention_backend_flash;
#endif

/* The checks every backend's forward makes on a batch: *empty = 1 when there is
 * nothing to compute; an inconsistent num_decodes is GPT2_ERR_INTERNAL. */
Status attention_check_batch(const char *backend, const AttentionMetadata *md, int *empty,
                             Error *err);

/* Comma-separated valid names, for error messages: "CPU, PAGED, FLASH". */
const char *attention_backend_names(void);
/* forced: NULL or a name; env GPT2_ENGINE_ATTENTION_BACKEND is read when forced is NULL.
 * Unknown name -> GPT2_ERR_VALUE listing the valid ones; a backend that can't serve
 * cfg -> GPT2_ERR_VALUE with its reason. *reason says why it was chosen (for the log). */
Status attention_select(const AttentionBackend **out, const char *forced,
                        const AttentionConfig *cfg, char *reason, size_t reason_len,
                        Error *err);

#endif
