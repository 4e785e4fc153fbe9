/* attention_paged_cuda.c — the "PAGED" attention backend: vLLM-style paged
 * attention kernels (kernels/paged_attention.cu) behind the AttentionBackend
 * interface of attention.h.
 *
 * forward() launches, on the device backend's stream (the first member of the
 * CUDA backend's impl is its cudaStream_t):
 *   - decode for the leading md->num_decodes sequences (v1 or v2 chosen as vLLM
 *     does, from num_decodes * H and md->max_seq_len), then
 *   - causal prefill / chunked prefill for the remaining sequences.
 * The state holds the v2 workspace, sized once from the config:
 *   max_num_seqs * H * ceil(max_model_len / 128) * (D + 2) floats
 * (partial outputs (S, H, parts, D), partition maxima and sums (S, H, parts)).
 * Under graph capture every kernel reads seq_lens / query_start_loc from the
 * device, and the decode grid is sized from md->max_seq_len (= max_model_len).
 */
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "attention.h"
#include "backend_cuda.h"
#include "kernels.h"

typedef struct PagedState {
    int num_heads, head_size, block_size;
    DType dtype;
    float scale;
    int max_num_seqs, max_model_len;
    float *workspace;            /* v2 partials, device memory of the backend */
    size_t workspace_floats;
    int *tickets;                /* (max_num_seqs, H) v2 merge counters, kept zero */
} PagedState;

static int is_pow2(int x) { return x > 0 && (x & (x - 1)) == 0; }

static Status paged_check(const AttentionConfig *cfg, Error *err)
{
    if (!cfg->device || strcmp(cfg->device, "cuda") != 0)
        return error_set(err, GPT2_ERR_VALUE, "PAGED needs device 'cuda' (got '%s')",
                         cfg->device ? cfg->device : "(none)");
    if (!paged_attention_supports_head_size(cfg->head_size))
        return error_set(err, GPT2_ERR_VALUE, "PAGED supports head sizes 32, 64, 80, 96, 128 "
                         "(got %d)", cfg->head_size);
    if (!is_pow2(cfg->block_size) || cfg->block_size > 256)
        return error_set(err, GPT2_ERR_VALUE, "PAGED needs a power-of-two block size <= 256 "
                         "(got %d)", cfg->block_size);
    if (cfg->dtype != DTYPE_F32 && cfg->dtype != DTYPE_F16 && cfg->dtype != DTYPE_BF16)
        return error_set(err, GPT2_ERR_VALUE, "PAGED: unknown dtype %d", (int)cfg->dtype);
    if (cfg->num_heads <= 0 || cfg->max_num_seqs <= 0 || cfg->max_model_len <= 0)
        return error_set(err, GPT2_ERR_VALUE, "PAGED: num_heads, max_num_seqs and "
                         "max_model_len must be positive");
    return GPT2_OK;
}

static void paged_destroy(void *state, Backend *b)
{
    PagedState *st = state;
    if (!st) return;
    if (st->workspace && b) b->ops->free(b, st->workspace);
    if (st->tickets && b) b->ops->free(b, st->tickets);
    st->workspace = NULL;
    st->tickets = NULL;
    free(st);
}

static Status paged_create(void **state, Backend *b, const AttentionConfig *cfg, Error *err)
{
    *state = NULL;
    Status s = paged_check(cfg, err);
    if (s != GPT2_OK) return s;
    PagedState *st = calloc(1, sizeof *st);
    if (!st) return error_set(err, GPT2_ERR_NOMEM, "PAGED: out of host memory");
    st->num_heads = cfg->num_heads;
    st->head_size = cfg->head_size;
    st->block_size = cfg->block_size;
    st->dtype = cfg->dtype;
    st->scale = cfg->scale;
    st->max_num_seqs = cfg->max_num_seqs;
    st->max_model_len = cfg->max_model_len;
    st->workspace_floats = paged_attention_workspace_floats(cfg->max_num_seqs, cfg->num_heads,
                                                            cfg->head_size, cfg->max_model_len);
    s = b->ops->alloc(b, (void **)&st->workspace, st->workspace_floats * sizeof(float), err);
    const size_t tickets = (size_t)cfg->max_num_seqs * cfg->num_heads * sizeof(int);
    if (s == GPT2_OK) s = b->ops->alloc(b, (void **)&st->tickets, tickets, err);
    if (s == GPT2_OK) s = b->ops->memset_zero(b, st->tickets, tickets, err);
    if (s != GPT2_OK) {
        error_prefix(err, "PAGED workspace (%zu floats): ", st->workspace_floats);
        paged_destroy(st, b);
        return s;
    }
    *state = st;
    return GPT2_OK;
}

static Status paged_forward(void *state, Backend *b, void *out, const void *q, int q_stride,
                            const void *k_cache, const void *v_cache,
                            const AttentionMetadata *md, Error *err)
{
    PagedState *st = state;
    if (!st || !b || !b->impl) return error_set(err, GPT2_ERR_INTERNAL, "PAGED: no state");
    int empty = 0;
    if (attention_check_batch("PAGED", md, &empty, err) != GPT2_OK) return err->code;
    if (empty) return GPT2_OK;
    const cudaStream_t stream = cuda_impl(b)->stream;
    const int pdl = cuda_impl(b)->pdl;
    const PagedAttnArgs a = {
        .out = out, .q = q, .q_stride = q_stride, .k_cache = k_cache, .v_cache = v_cache,
        .block_tables = md->block_tables, .block_table_stride = md->block_table_stride,
        .seq_lens = md->seq_lens, .query_start_loc = md->query_start_loc,
        .num_heads = st->num_heads, .head_size = st->head_size, .block_size = st->block_size,
        .scale = st->scale, .dtype = (int)st->dtype,
    };
    cudaError_t e;
    if (md->num_decodes > 0) {
        if (md->num_decodes > st->max_num_seqs)
            return error_set(err, GPT2_ERR_INTERNAL, "PAGED: %d decodes exceed max_num_seqs %d",
                             md->num_decodes, st->max_num_seqs);
        /* The v2 workspace is sized for max_model_len; a longer context (ops on
         * arbitrary inputs) falls back to v1, which has no length limit. */
        const size_t need = paged_attention_workspace_floats(md->num_decodes, st->num_heads,
                                                             st->head_size, md->max_seq_len);
        const int version = need > st->workspace_floats ? 1 : 0;
        e = paged_attention_decode(&a, md->num_decodes, md->max_seq_len, version, st->workspace,
                                   st->workspace_floats, st->tickets, stream, pdl);
        if (e != cudaSuccess)
            return error_set(err, GPT2_ERR_DEVICE, "%s:%d: paged_attention_decode (%d seqs, "
                             "max_seq_len %d): %s", __FILE__, __LINE__, md->num_decodes,
                             md->max_seq_len, cudaGetErrorString(e));
    }
    const int num_prefills = md->num_seqs - md->num_decodes;
    if (num_prefills > 0) {
        e = paged_attention_prefill(&a, md->num_decodes, num_prefills, md->max_query_len,
                                    stream);
        if (e != cudaSuccess)
            return error_set(err, GPT2_ERR_DEVICE, "%s:%d: paged_attention_prefill (%d seqs, "
                             "max_query_len %d): %s", __FILE__, __LINE__, num_prefills,
                             md->max_query_len, cudaGetErrorString(e));
    }
    return GPT2_OK;
}

const AttentionBackend attention_backend_paged = {
    "PAGED", paged_check, paged_create, paged_destroy, paged_forward,
};
