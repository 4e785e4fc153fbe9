/* model_runner.h — owns the device side of one engine: backend, weights on the
 * device, KV cache, activation buffers, attention backend, CUDA graphs. It runs
 * one packed step (built by the engine from the scheduler's decisions) and
 * leaves fp32 logits for the requested rows on the device for the sampler.
 * It decides nothing: which tokens run, where their K/V go and which rows need
 * logits all arrive in StepInput. */
#ifndef GPT2_MODEL_RUNNER_H
#define GPT2_MODEL_RUNNER_H

#include "attention.h"
#include "backend.h"
#include "checkpoint.h"
#include "config.h"
#include "model.h"

typedef struct RunnerConfig {
    const char *device;          /* "cpu" or "cuda" */
    DType dtype;                 /* compute dtype */
    int block_size;              /* 8, 16 or 32 */
    int max_num_seqs;
    int max_num_batched_tokens;  /* activation buffers are sized for this many tokens */
    int max_model_len;           /* <= n_positions */
    int num_kv_blocks;           /* 0: size from gpu_memory_utilization / cpu_kv_cache_bytes */
    double gpu_memory_utilization;
    size_t cpu_kv_cache_bytes;   /* CPU: KV cache budget when num_kv_blocks == 0 */
    const char *attention_backend; /* NULL: env var, then auto */
    int enforce_eager;           /* 1: no CUDA graphs */
} RunnerConfig;

/* One step's batch, host arrays; sequences ordered decodes first. */
typedef struct StepInput {
    int num_seqs;
    int num_tokens;               /* T */
    int num_decodes;              /* leading sequences with exactly one query token */
    const int32_t *input_ids;     /* (T) */
    const int32_t *positions;     /* (T) */
    const int32_t *slot_mapping;  /* (T) where each token's K/V is written */
    const int32_t *query_start_loc; /* (num_seqs + 1) */
    const int32_t *seq_lens;      /* (num_seqs) context length including this step */
    const int32_t *block_tables;  /* (num_seqs, block_table_stride) */
    int block_table_stride;
    int num_logits;               /* rows of logits wanted */
    const int32_t *logits_indices;/* (num_logits) token rows (0..T-1) whose logits are wanted */
    /* tokens the host does not know yet (async scheduling): input_ids[feed_index[i]]
     * is row feed_row[i] of the latest runner_sample_launch, read on the device */
    int num_feeds;
    const int32_t *feed_index;    /* (num_feeds) */
    const int32_t *feed_row;      /* (num_feeds) */
} StepInput;

typedef struct ModelRunner {
    GPT2Config config;           /* the model's */
    RunnerConfig rc;
    Backend *backend;
    GPT2Weights weights;         /* device pointers (host on the CPU) */
    void *weights_device;        /* the device allocation behind weights (NULL on the CPU) */
    Checkpoint *checkpoint;      /* kept open while CPU weights point into its mmap */
    const AttentionBackend *attn;
    void *attn_state;
    char attn_reason[256];       /* why this attention backend was chosen */
    void *fused_decode;          /* the backend's one-kernel batch-1 step, or NULL */
    char fused_reason[200];      /* "on: ..." or "off: why" */
    /* KV cache: per layer (num_blocks, H, block_size, D) for K and for V */
    int num_kv_blocks;
    void **key_cache, **value_cache;   /* (L) */
    void *kv_storage;            /* one allocation holding every layer's K and V */
    size_t kv_bytes;
    /* activations, sized for max_num_batched_tokens (T) / logits rows (R) */
    ForwardBuffers act;
    void *act_storage;           /* one allocation behind act */
    int32_t *dev_ints;           /* every int32 input of a step, one device buffer */
    int32_t *host_ints;          /* host staging for the one h2d copy of a step: */
    int32_t *host_bufs[2];       /* launches alternate between two buffers, */
    int host_buf;                /* host_ints == host_bufs[host_buf]; */
    int host_fenced[2];          /* an upload out of host_bufs[i] may be queued (fence i) */
    size_t ints_capacity;        /* elements in dev_ints / host_ints */
    int max_logits_rows;         /* R */
    int logits_ld;               /* row length of the lm_head output (see model.h) */
    int max_blocks_per_seq;      /* block table stride on the device */
    /* Decode-only batches on a graph-capable backend are padded to the next
     * bucket size, so eager steps and graph replays run identical kernels;
     * graph i (when captured: num_graphs = num_buckets) serves bucket i. */
    int num_buckets;
    int bucket_sizes[32];
    int num_graphs;
    int64_t num_graph_replays, num_eager_steps;
    /* the step staged by runner_prepare, launched by runner_launch */
    ForwardBatch staged;
    int staged_graph;            /* bucket index, or -1 (eager) */
    size_t staged_ints;          /* int32 elements of host_ints to upload */
    int staged_feeds;            /* StepInput.num_feeds, and where they are in dev_ints */
    size_t staged_feed_idx, staged_feed_row;
    int has_staged;
} ModelRunner;

Status runner_create(ModelRunner **out, const char *model_dir, const RunnerConfig *rc, Error *err);
void runner_destroy(ModelRunner *r);   /* NULL-safe, frees every byte */
/* Runs the forward pass; on success r->act.logits holds (num_logits, logits_ld) rows in
 * the compute dtype (runner_sample reads them as they are; runner_logits_to_host
 * converts them to fp32).
 * runner_execute = runner_prepare (validate, stage the inputs in host memory; no
 * device work) + runner_launch (upload, forward or graph replay; asynchronous on
 * a GPU). `in` may be reused once runner_prepare returns. */
Status runner_execute(ModelRunner *r, const StepInput *in, Error *err);
Status runner_prepare(ModelRunner *r, const StepInput *in, Error *err);
Status runner_launch(ModelRunner *r, Error *err);
/* Samples from the rows left by runner_execute (see sampling.h). */
Status runner_sample(ModelRunner *r, int R, const SamplingRow *rows, const TokenAdjust *adj,
                     int n_adj, int max_logprobs, SamplerOutput *out, Error *err);
/* The same in two halves (the backend's sample_launch / sample_wait): launch
 * queues it behind the forward and returns a ticket; wait fills out. At most
 * two launches are outstanding; a later step's StepInput feeds read the latest. */
Status runner_sample_launch(ModelRunner *r, int R, const SamplingRow *rows,
                            const TokenAdjust *adj, int n_adj, int max_logprobs, int *ticket,
                            Error *err);
Status runner_sample_wait(ModelRunner *r, int ticket, SamplerOutput *out, Error *err);
/* Copies whole KV blocks src[i] -> dst[i] in every layer, K and V (copy-on-write). */
Status runner_copy_blocks(ModelRunner *r, const int32_t *src, const int32_t *dst, int n,
                          Error *err);
/* Copies rows [0, n) of the last logits to host fp32 (n, V). */
Status runner_logits_to_host(ModelRunner *r, int n, float *out, Error *err);

#endif
