/* kernels.h — the extern "C" launchers of every CUDA kernel in kernels/ (the .cu files),
 * callable from the C11 host code (the csrc/core/..._cuda.c files).
 *
 * Conventions for every launcher:
 *   - pointers are device memory; `dtype` is a DType (common.h) naming the
 *     storage type of the activation/weight buffers; int buffers are int32;
 *   - the work is queued on `stream` and the launcher returns
 *     cudaGetLastError() (cudaSuccess when nothing was launched);
 *   - shapes use the legend of backend.h (T tokens, C channels, H heads,
 *     D head size, V vocab);
 *   - `pdl` (the decode-path launchers): launch with programmatic dependent
 *     launch (kernels/launch.cuh says what that permits); 0 on pre-sm_90 GPUs.
 * Each kernel engineer keeps their launchers in their own section below.
 */
#ifndef GPT2_KERNELS_H
#define GPT2_KERNELS_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "common.h"
#include "sampling.h"

/* ======================================================================
 * Device backend kernels (backend_cuda.c): embed.cu, layernorm.cu,
 * cache.cu, rows.cu, sampling.cu
 * ====================================================================== */

/* out(T, C) = wte[ids[t]] + wpe[pos[t]]  (sum in fp32) */
cudaError_t embed_cuda(void *out, const int32_t *ids, const int32_t *pos, const void *wte,
                       const void *wpe, int T, int C, int dtype, cudaStream_t stream);

/* out(T, C) = (in - mean) * rstd * w + bias per row; fp32 statistics */
cudaError_t layernorm_cuda(void *out, const void *in, const void *w, const void *bias, int T,
                           int C, float eps, int dtype, cudaStream_t stream, int pdl);

/* k, v: (T, H*D) rows of stride kv_stride elements -> caches (num_blocks, H, block_size, D)
 * at slot_mapping[t]; negative slots are skipped. */
cudaError_t reshape_and_cache_cuda(const void *k, const void *v, int kv_stride, void *k_cache,
                                   void *v_cache, const int32_t *slot_mapping, int T, int H,
                                   int D, int block_size, int dtype, cudaStream_t stream,
                                   int pdl);

/* out(n, C) = in[rows[i]] */
cudaError_t gather_rows_cuda(void *out, const void *in, const int32_t *rows, int n, int C,
                             int dtype, cudaStream_t stream, int pdl);

/* ids[idx[i]] = max(tokens[rows[i]], 0) for i < n: a step's input tokens taken from
 * the previous step's sampler output on the device (async scheduling) */
cudaError_t feed_tokens_cuda(int32_t *ids, const int32_t *idx, const int32_t *rows,
                             const int32_t *tokens, int n, cudaStream_t stream);

/* dst[0, n) = in->v[0, n), then for i < n_feeds dst[ids_off + idx[i]] = max(tokens[rows[i]],
 * 0) with idx = in->v + feed_idx_off, rows = in->v + feed_row_off: a small step's ints and
 * its feed in one launch, the ints in its parameters (no copy; n <= UPLOAD_INLINE_INTS) */
#define UPLOAD_INLINE_INTS 512
#define UPLOAD_THREADS 256
typedef struct UploadInts {
    int32_t v[UPLOAD_INLINE_INTS];
} UploadInts;
cudaError_t upload_ints_cuda(int32_t *dst, const UploadInts *in, int n, int ids_off,
                             int feed_idx_off, int feed_row_off, int n_feeds,
                             const int32_t *tokens, cudaStream_t stream);

/* out(n) fp32 = in(n) converted from dtype (in may equal out only for fp32) */
cudaError_t to_float_cuda(float *out, const void *in, int rows, int cols, int ld, int dtype,
                          cudaStream_t stream, int pdl);

/* x(n) = gelu_erf(x) in place: the activation cuBLASLt has no epilogue for */
cudaError_t gelu_erf_cuda(void *x, size_t n, int dtype, cudaStream_t stream);

/* The sampling contract of sampling.h, one 1024-thread block per row; with
 * split.splits = S > 1 (up to SAMPLE_MAX_SPLITS) a plain greedy row (temperature 0, no
 * adjustments, no target) is read by S blocks of a (R, S) grid, each an id range, merged
 * by the last to finish: split.parts holds R * S 16-byte records, split.tickets R ints,
 * zero before the first launch and left zero after each (few rows: one block per row reads
 * ~100 KB of a 50k vocabulary in ~15 us).
 *   logits (R, V) with row stride ld elements of dtype (0 fp32, 1 fp16, 2 bf16: the
 *   lm_head's output, read as it is), work (R, V) fp32 scratch;
 *   in: rows (R) | adj (n_adj) | uniforms (R) (= sampling_uniform01(seed, step), computed
 *   on the host) at byte offsets 0, o_adj, o_u of in.dev (device memory) or, with in.dev
 *   NULL, of in.bytes: passed with the launch itself, so small batches need no copy;
 *   out: tokens/logprobs/ranks (R), topk_ids/topk_logprobs (R, max_logprobs) or NULL when
 *   max_logprobs == 0, anywhere the device can write (device memory, or mapped pinned host
 *   memory: no copy back); tokens_dev, when not NULL, receives the tokens too (the next
 *   step's inputs stay on the device).
 * A row whose every token is masked gets token -1 (the host reports the error).
 * Inputs must have been validated as sample_cpu does. */
#define SAMPLE_MAX_SPLITS 32
typedef struct SampleSplit {
    int splits;
    void *parts;
    int *tickets;
} SampleSplit;
#define SAMPLE_INLINE_BYTES 2048
typedef struct SampleInputs {
    const void *dev;
    int o_adj, o_u;
    unsigned char bytes[SAMPLE_INLINE_BYTES];   /* 8-byte aligned (after 16 bytes) */
} SampleInputs;
typedef struct SampleOutputs {
    int32_t *tokens;
    float *logprobs;
    int32_t *ranks;
    int32_t *topk_ids;
    float *topk_logprobs;
    int32_t *tokens_dev;
} SampleOutputs;
cudaError_t sample_cuda(const void *logits, int dtype, int ld, float *work, int R, int V,
                        const SampleInputs *in, int max_logprobs, SampleOutputs out,
                        SampleSplit split, cudaStream_t stream);

/* gemv.cu — the matmul of small decode batches, fp16/bf16 only:
 *     out(M, N) = act(norm(in)(M, K) @ w + bias [+ out if accumulate])
 * norm = layernorm with ln_w/ln_b/eps when ln_w != NULL (fp32 statistics over K),
 * else identity; w (K, N), or (N, K) with w_nk; bias may be NULL; act is an
 * ACT_CODE_*. With k_cache != NULL (w (K, N) only, N = 3 * H * D, the qkv
 * projection) the K and V columns [H*D, 3*H*D) of each row m are also written to
 * the paged caches (num_blocks, H, block_size, D) at slot_mapping[m] (negative:
 * skipped), as reshape_and_cache would. Split-K partials are reduced inside a
 * thread-block cluster (distributed shared memory): no work buffers; without
 * clusters (before sm_90, a.clusters = 0) K is not split.
 * gemv_supported says whether gemv_cuda serves the shape (else use cuBLASLt). */
#define GEMV_MAX_M 4
#define GEMV_MAX_SPLIT 8      /* K splits = blocks of one cluster (portable cluster size) */
#define GEMV_MAX_STAGE 8192   /* fp32 input values staged in shared memory per block */
enum { ACT_CODE_NONE = -1, ACT_CODE_GELU_TANH = 0, ACT_CODE_GELU_ERF = 1, ACT_CODE_RELU = 2 };
typedef struct GemvArgs {
    void *out;
    const void *in, *w, *bias;
    const void *ln_w, *ln_b;
    float eps;
    int M, K, N, accumulate, act;
    /* fused cache write (qkv): NULL k_cache = none */
    void *k_cache, *v_cache;
    const int32_t *slot_mapping;
    int kv_heads, head_size, block_size;
    int num_sms;   /* multiprocessors of the device (sizes the split) */
    int clusters;  /* thread-block clusters available (sm_90+): split-K; else ks = 1 */
    int pdl;
} GemvArgs;
int gemv_supported(const GemvArgs *a, int w_nk, int dtype);
cudaError_t gemv_nk_prefer_carveout(int dtype, int percent);
cudaError_t gemv_cuda(const GemvArgs *a, int w_nk, int dtype, cudaStream_t stream);

/* decode_layer.cu — a batch-1 step's transformer layer in two cluster kernels (fp16/bf16,
 * compute capability 9.0+), launched with layer_decode_cuda(which):
 *   LAYER_DECODE_ATTN  grid (H, AH_RANKS): res_out = x = round(res_in + sum of P part_in
 *                      rows + part_bias) (x = res_in when P == 0); LN (ln_w, ln_b); qkv =
 *                      x @ w1 (C, 3C) + b1, K/V written to the caches at slot_mapping[0];
 *                      attention of the one query over seq_lens[0] keys of block_tables
 *                      row 0; part_out (H, C) = each head's output @ its D rows of w2 (C, C)
 *   LAYER_DECODE_MLP   grid (LAYER_DECODE_MLP_CLUSTERS(C), MH_RANKS): res_out = x as above;
 *                      LN; h = act(x @ w1 (C, 4C) + b1); part_out (clusters, C) = each
 *                      MH_RANKS x MH_COLS columns of h @ the matching rows of w2 (4C, C)
 *   LAYER_DECODE_RESIDUAL  res_out = x as above (the last layer's, for ln_f)
 * part_out holds fp32 partial sums without bias; the next launch adds them (part_in, P
 * rows, part_bias). Shapes: C % 64 == 0, D = C / H in {32, 64, 128}; key_cap >=
 * ceil(seq_lens[0] / AH_RANKS) (keys per rank: sizes the scores); the first kv_stage cached
 * keys of a rank are copied into shared memory before the wait, the rest read from the
 * cache after it. Every launch copies the vectors it needs (biases, layernorm weights)
 * and its weight tiles into shared memory before it waits for the previous launch;
 * trigger says when the next launch may start (LAYER_TRIGGER_*). layer_decode_prepare
 * sets the kernels' shared-memory limits and (carveout >= 0: percent) their preferred
 * shared-memory carveout once; gemv_nk_prefer_carveout the latter for the M = 1 lm_head. */
#define AH_RANKS 6    /* blocks per head (attn half cluster) */
#define MH_RANKS 8    /* blocks per 256 fc columns (mlp half cluster) */
#define MH_COLS 32    /* fc columns per mlp-half block (64 measured slower: 0.295 vs 0.274 ms) */
#define LAYER_DECODE_PROJ_COLS(C) ((((C) + AH_RANKS - 1) / AH_RANKS + 7) / 8 * 8)
/* mlp-half clusters = rows of its part_out: the 4C fc columns, MH_RANKS x MH_COLS each */
#define LAYER_DECODE_MLP_CLUSTERS(C) (4 * (C) / (MH_RANKS * MH_COLS))
/* when a launch lets the next one start (PDL trigger): at entry, past its wait for the
 * previous launch, or once its layernorm is done (its loads from L2 are over) */
enum { LAYER_TRIGGER_ENTRY = 0, LAYER_TRIGGER_WAIT = 1, LAYER_TRIGGER_LN = 2 };
enum { LAYER_DECODE_ATTN = 0, LAYER_DECODE_MLP = 1, LAYER_DECODE_RESIDUAL = 2 };
typedef struct LayerDecodeArgs {
    const void *res_in;               /* (C), or NULL: x is the embedding (below) */
    /* with res_in NULL (the first layer's attn half, P == 0): x = round(wte[input_ids[0]] +
     * wpe[positions[0]]), so the step needs no embedding kernel */
    const void *wte, *wpe;
    const int32_t *input_ids, *positions;
    const float *part_in;             /* (P, C) fp32, or NULL with P == 0 */
    const void *part_bias;            /* (C), added to the partials' sum, or NULL */
    int P;
    void *res_out;                    /* (C): x, written by block (0, 0) */
    const void *ln_w, *ln_b;          /* (C) */
    const void *w1, *b1, *w2;         /* see above */
    float *part_out;
    void *k_cache, *v_cache;          /* (num_blocks, H, block_size, D) (attn half) */
    const int32_t *slot_mapping, *seq_lens, *block_tables;   /* row 0 (attn half) */
    int C, H, D, block_size, key_cap, act;
    int kv_stage;                     /* cached keys per rank staged in shared memory (attn half) */
    int trigger;                      /* LAYER_TRIGGER_* (the residual launch: ENTRY or after its wait) */
    int ln_cluster;                   /* the layernorm's statistics sent with x (decode_layer_steps.cuh) */
    float eps, scale;                 /* layernorm epsilon, 1 / sqrt(D) */
    /* GPT2_ENGINE_LAYER_TRACE (trace != NULL): thread 0 of block b (< LAYER_TRACE_BLOCKS) of
     * launch trace_kernel stores globaltimer at its marks (decode_layer.cu: LayerTraceMark)
     * to trace[((s * trace_kernels + trace_kernel) * LAYER_TRACE_BLOCKS + b) *
     * LAYER_TRACE_MARKS + mark], s = *trace_step % LAYER_TRACE_STEPS; the residual launch
     * advances *trace_step */
    unsigned long long *trace;
    unsigned *trace_step;
    int trace_kernel, trace_kernels;
} LayerDecodeArgs;
#define LAYER_TRACE_STEPS 32
#define LAYER_TRACE_BLOCKS 256
#define LAYER_TRACE_MARKS 12
size_t layer_decode_smem(int which, int C, int D, int key_cap, int kv_stage);
cudaError_t layer_decode_prepare(int dtype, int C, int D, int key_cap, int kv_stage, int carveout);
cudaError_t layer_decode_cuda(const LayerDecodeArgs *a, int which, int dtype,
                              cudaStream_t stream, int pdl);

/* decode_fused.cu — a one-token step (batch 1) of the whole forward in one
 * persistent, cooperatively launched kernel (fp16/bf16; opt-in, slower than the
 * per-layer kernels on an H200: the file says why): embed, every layer
 * (layernorms, the four matmuls, split-KV attention over the paged cache with this
 * step's K/V written to it) and the lm_head, writing logits[0 .. V) in the storage
 * type. Built for sm_90 (+ PTX) only, as setup.py says. The host (decode_fused_cuda.c)
 * checks compute capability >= 9.0 and the shape conditions:
 * C % 64 == 0, D % 32 == 0 with D <= 128, C <= 2048, 4C / 64 <= grid, H * nsplit
 * <= grid, every weight 16-byte aligned. layers: device array of n_layer entries;
 * work: 2 * work_floats fp32 (scratch); sync: two device uints, zero before the
 * first launch and left zero after each. */
typedef struct FusedDecodeLayer {
    const void *ln1_w, *ln1_b, *qkv_w, *qkv_b, *proj_w, *proj_b;
    const void *ln2_w, *ln2_b, *fc_w, *fc_b, *fc2_w, *fc2_b;
    void *k_cache, *v_cache;          /* (num_blocks, H, block_size, D) */
} FusedDecodeLayer;

typedef struct FusedDecodeArgs {
    const FusedDecodeLayer *layers;
    const void *wte, *wpe, *lnf_w, *lnf_b;
    void *logits;                     /* (V) */
    const int32_t *input_ids, *positions, *slot_mapping, *seq_lens, *block_tables; /* row 0 */
    float *work;
    int work_floats;
    unsigned *sync;
    int n_layer, C, H, D, V, block_size, act, nsplit;
    float eps, scale;
    long long lookahead;              /* weight bytes kept in flight toward L2 */
    unsigned long long *trace;        /* NULL, or FUSED_TRACE_SLOTS counters (decode_fused.cu:
                                       * trace_mark); the last counts launches */
} FusedDecodeArgs;
#define FUSED_TRACE_SLOTS 18
size_t fused_decode_smem_bytes(int C, int D);
size_t fused_decode_work_floats(int C, int H, int D, int nsplit, int grid);
/* blocks of the kernel that fit on one SM with smem bytes (sets the kernel's
 * shared-memory limit); 0 when it cannot run */
int fused_decode_blocks_per_sm(int dtype, int C, size_t smem);
cudaError_t fused_decode_cuda(const FusedDecodeArgs *a, int dtype, int grid, size_t smem,
                              cudaStream_t stream);

/* ======================================================================
 * FLASH attention backend (attention_flash_cuda.c): flash_attention.cu,
 * flash_attention_sm90a.cu
 * Tensor-core flash attention over the paged KV cache; q (T, H*D) with row
 * stride q_stride, out (T, H*D), caches (num_blocks, H, block_size, D),
 * block_tables (num_seqs, bt_stride). Sequences [seq_begin, seq_begin+num_seqs)
 * of query_start_loc / seq_lens / block_tables are processed. dtype: DTYPE_F16
 * or DTYPE_BF16; D: 64 or 128.
 * ====================================================================== */

/* 1 when flash_attention_* can serve this head size and dtype. */
int flash_attention_supported(int head_size, int dtype);

/* Split-KV count for a decode launch of head size D: as many (sequence, head,
 * slice) blocks as fit on num_sms at once, each slice at least one key item per
 * warp of max_seq_len, at most max_splits (and 64). */
int flash_attention_num_splits(int num_seqs, int H, int D, int max_seq_len, int num_sms,
                               int max_splits);

/* Causal attention for sequences of any query length (prefill, chunked prefill).
 * tile_counter: two ints on the device, zero before the call and left zero after it,
 * from which the Hopper kernel's CTAs draw their tiles; one per stream (launches on one
 * stream take turns with it). NULL: a static schedule. */
cudaError_t flash_attention_prefill(void *out, const void *q, int q_stride, const void *k_cache,
                                    const void *v_cache, const int32_t *query_start_loc,
                                    const int32_t *seq_lens, const int32_t *block_tables,
                                    int bt_stride, int seq_begin, int num_seqs,
                                    int max_query_len, int H, int D, int block_size, float scale,
                                    int dtype, int *tile_counter, cudaStream_t stream);

/* flash_attention_sm90a.cu: the Hopper (sm_90a, wgmma) prefill that
 * flash_attention_prefill dispatches to on compute capability 9.0 unless the
 * environment variable GPT2_ENGINE_FLASH_WGMMA is "0" (read per call; "legacy" picks
 * its cp.async kernel instead of the TMA one, for A/B runs). Same parameters and results.
 * _supported: 1 when it serves this head size (64, 128), dtype (DTYPE_F16,
 * DTYPE_BF16) and block size (a power of two). */
int flash_attention_prefill_sm90a_supported(int head_size, int dtype, int block_size);
cudaError_t flash_attention_prefill_sm90a(void *out, const void *q, int q_stride,
                                          const void *k_cache, const void *v_cache,
                                          const int32_t *query_start_loc,
                                          const int32_t *seq_lens, const int32_t *block_tables,
                                          int bt_stride, int seq_begin, int num_seqs,
                                          int max_query_len, int H, int D, int block_size,
                                          float scale, int dtype, int *tile_counter,
                                          cudaStream_t stream);

/* Decode (one query token per sequence). num_splits > 1 splits the keys; then
 * partial_o (seq_begin+num_seqs, H, num_splits, D) and partial_lse
 * (seq_begin+num_seqs, H, num_splits) fp32 are the workspace, merged into out by
 * the last split to finish (splits past a sequence's seq_lens entry are neither
 * written nor read); tickets (seq_begin+num_seqs, H) int32 must be zero before the
 * first call, and every call leaves them zero. */
cudaError_t flash_attention_decode(void *out, const void *q, int q_stride, const void *k_cache,
                                   const void *v_cache, const int32_t *query_start_loc,
                                   const int32_t *seq_lens, const int32_t *block_tables,
                                   int bt_stride, int seq_begin, int num_seqs, int H, int D,
                                   int block_size, float scale, int dtype, int num_splits,
                                   float *partial_o, float *partial_lse, int *tickets,
                                   cudaStream_t stream, int pdl);

/* ======================================================================
 * PAGED attention backend (attention_paged_cuda.c): paged_attention.cu
 * vLLM-style paged decode (v1 single pass, v2 split-KV partitions merged by
 * log-sum-exp), causal prefill / chunked prefill, and merge_attn_states.
 * ====================================================================== */

/* One attention call over the paged KV cache. Device pointers.
 *   q (T, H*D) row stride q_stride elements; out (T, H*D) contiguous;
 *   k_cache, v_cache (num_blocks, H, block_size, D); block_tables (S, block_table_stride);
 *   seq_lens (S) context length incl. this step; query_start_loc (S + 1).
 * dtype is a DType; block_size a power of two. */
typedef struct PagedAttnArgs {
    void *out;
    const void *q;
    int q_stride;
    const void *k_cache, *v_cache;
    const int32_t *block_tables;
    int block_table_stride;
    const int32_t *seq_lens;
    const int32_t *query_start_loc;
    int num_heads, head_size, block_size;
    float scale;
    int dtype;
} PagedAttnArgs;

/* 1 for the head sizes the kernels are built for (32, 64, 80, 96, 128). */
int paged_attention_supports_head_size(int head_size);
/* Floats of v2 workspace for up to max_num_seqs decodes of up to max_model_len tokens:
 * max_num_seqs * H * ceil(max_model_len / 128) * (D + 2) (128: the shortest partition). */
size_t paged_attention_workspace_floats(int max_num_seqs, int num_heads, int head_size,
                                        int max_model_len);
/* Decode for sequences 0 .. num_decodes-1 (one query token each, at row
 * query_start_loc[s]). max_seq_len sizes the grid (max_model_len under graph
 * capture; the kernels loop to the device seq_lens). version: 0 auto (vLLM's rule:
 * v1 when max_seq_len <= 8192 and (one 512-token partition or num_decodes*H > 512)),
 * 1 single pass, 2 split-KV partitions merged by log-sum-exp (needs the workspace and
 * tickets: num_decodes * H int32, zero before the first call; every call leaves them zero). */
cudaError_t paged_attention_decode(const PagedAttnArgs *a, int num_decodes, int max_seq_len,
                                   int version, float *workspace, size_t workspace_floats,
                                   int *tickets, cudaStream_t stream, int pdl);
/* Causal prefill / chunked prefill for sequences seq_begin .. seq_begin+num_prefills-1:
 * query i of sequence s is at position seq_lens[s] - q_len + i and attends to cache
 * positions 0 .. that position (its own K/V already cached). */
cudaError_t paged_attention_prefill(const PagedAttnArgs *a, int seq_begin, int num_prefills,
                                    int max_query_len, cudaStream_t stream);
/* vLLM merge_attn_states: out, a, b (T, H, D) in dtype; lse_* (H, T) fp32 natural log
 * (+inf read as -inf); out_lse (H, T) may be NULL. */
cudaError_t merge_attn_states(void *out, float *out_lse, const void *a, const float *lse_a,
                              const void *b, const float *lse_b, int num_tokens, int num_heads,
                              int head_size, int dtype, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* GPT2_KERNELS_H */
