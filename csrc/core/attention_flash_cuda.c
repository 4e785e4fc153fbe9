/* attention_flash_cuda.c — the "FLASH" attention backend: tensor-core flash
 * attention over the paged KV cache (kernels/flash_attention.cu) behind the
 * AttentionBackend interface of attention.h.
 *
 * Serves: device "cuda", compute capability >= 8.0 (mma.sync), head size 64 or
 * 128, float16 or bfloat16, power-of-two block size. A float32 model is refused with a reason naming
 * PAGED (the selector's auto mode then picks PAGED and logs that reason).
 *
 * forward() launches on the device backend's stream (first member of the CUDA
 * backend's impl):
 *   - decode for the leading md->num_decodes sequences, split-KV when there are
 *     too few (sequence, head) pairs to fill the GPU: partial (out, lse) in the
 *     state's workspace, merged by log-sum-exp in the same kernel (the last split
 *     of a (sequence, heads) to finish merges; tickets zeroed once at create); the split count depends only on
 *     num_decodes and md->max_seq_len (= max_model_len under graph capture) and
 *     the kernels bound every loop by the device seq_lens (splits past a
 *     sequence's keys do nothing), so replays are exact;
 *   - prefill / chunked prefill for the remaining sequences.
 * Workspace: max_num_seqs * H * FLASH_WS_SPLITS * (D + 1) floats; fewer decodes
 * may use more splits (up to FLASH_MAX_SPLITS) in the same space.
 */
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "attention.h"
#include "backend_cuda.h"
#include "kernels.h"

#define FLASH_WS_SPLITS 16    /* workspace partials per (sequence, head) at max_num_seqs */
#define FLASH_MAX_SPLITS 64   /* splits of one decode launch, at most */

typedef struct FlashState {
    int num_heads, head_size, block_size;
    DType dtype;
    float scale;
    int max_num_seqs;
    int num_sms;                 /* multiprocessors of the backend's device */
    float *partial_o;            /* (max_num_seqs * FLASH_WS_SPLITS, H, D) fp32 */
    float *partial_lse;          /* (max_num_seqs * FLASH_WS_SPLITS, H) fp32 */
    int *tickets;                /* (max_num_seqs, H) split-arrival counters, then the
                                  * prefill's tile counter (2 ints); all kept zero */
} FlashState;

static Status flash_check(const AttentionConfig *cfg, Error *err)
{
    if (!cfg->device || strcmp(cfg->device, "cuda") != 0)
        return error_set(err, GPT2_ERR_VALUE, "FLASH needs device 'cuda' (got '%s')",
                         cfg->device ? cfg->device : "(none)");
    if (cfg->compute_capability < 80)
        return error_set(err, GPT2_ERR_VALUE, "FLASH needs compute capability >= 8.0 "
                         "(tensor-core mma.sync); this GPU is %d.%d (use PAGED)",
                         cfg->compute_capability / 10, cfg->compute_capability % 10);
    if (cfg->dtype != DTYPE_F16 && cfg->dtype != DTYPE_BF16)
        return error_set(err, GPT2_ERR_VALUE, "FLASH needs float16 or bfloat16; the model "
                         "runs in %s (use PAGED)", dtype_name(cfg->dtype));
    if (!flash_attention_supported(cfg->head_size, (int)cfg->dtype))
        return error_set(err, GPT2_ERR_VALUE, "FLASH supports head sizes 64 and 128 (got %d; "
                         "use PAGED)", cfg->head_size);
    if (cfg->block_size <= 0 || (cfg->block_size & (cfg->block_size - 1)) != 0)
        return error_set(err, GPT2_ERR_VALUE, "FLASH needs a power-of-two block size (got %d)",
                         cfg->block_size);
    if (cfg->num_heads <= 0 || cfg->max_num_seqs <= 0)
        return error_set(err, GPT2_ERR_VALUE, "FLASH: num_heads and max_num_seqs must be "
                         "positive");
    return GPT2_OK;
}

static void flash_destroy(void *state, Backend *b)
{
    FlashState *st = state;
    if (!st) return;
    if (b) {
        b->ops->free(b, st->partial_o);
        b->ops->free(b, st->partial_lse);
        b->ops->free(b, st->tickets);
    }
    st->partial_o = st->partial_lse = NULL;
    st->tickets = NULL;
    free(st);
}

static Status flash_create(void **state, Backend *b, const AttentionConfig *cfg, Error *err)
{
    *state = NULL;
    Status s = flash_check(cfg, err);
    if (s != GPT2_OK) return s;
    FlashState *st = calloc(1, sizeof *st);
    if (!st) return error_set(err, GPT2_ERR_NOMEM, "FLASH: out of host memory");
    st->num_heads = cfg->num_heads;
    st->head_size = cfg->head_size;
    st->block_size = cfg->block_size;
    st->dtype = cfg->dtype;
    st->scale = cfg->scale;
    st->max_num_seqs = cfg->max_num_seqs;
    if (cudaDeviceGetAttribute(&st->num_sms, cudaDevAttrMultiProcessorCount, b->device) !=
            cudaSuccess || st->num_sms <= 0)
        st->num_sms = 108;   /* only sizes the split heuristic */
    const size_t units = (size_t)cfg->max_num_seqs * cfg->num_heads * FLASH_WS_SPLITS;
    s = b->ops->alloc(b, (void **)&st->partial_o, units * cfg->head_size * sizeof(float), err);
    if (s == GPT2_OK)
        s = b->ops->alloc(b, (void **)&st->partial_lse, units * sizeof(float), err);
    /* decode's split tickets, then the prefill's tile counter (2 ints): all kept zero */
    const size_t tickets = ((size_t)cfg->max_num_seqs * cfg->num_heads + 2) * sizeof(int);
    if (s == GPT2_OK) s = b->ops->alloc(b, (void **)&st->tickets, tickets, err);
    if (s == GPT2_OK) s = b->ops->memset_zero(b, st->tickets, tickets, err);
    if (s != GPT2_OK) {
        error_prefix(err, "FLASH split-KV workspace (%zu partials): ", units);
        flash_destroy(st, b);
        return s;
    }
    *state = st;
    return GPT2_OK;
}

static Status flash_forward(void *state, Backend *b, void *out, const void *q, int q_stride,
                            const void *k_cache, const void *v_cache,
                            const AttentionMetadata *md, Error *err)
{
    FlashState *st = state;
    if (!st || !b || !b->impl) return error_set(err, GPT2_ERR_INTERNAL, "FLASH: no state");
    int empty = 0;
    if (attention_check_batch("FLASH", md, &empty, err) != GPT2_OK) return err->code;
    if (empty) return GPT2_OK;
    if (q_stride % 8 != 0)
        return error_set(err, GPT2_ERR_INTERNAL, "FLASH: q row stride %d is not a multiple of "
                         "8 elements (16-byte loads)", q_stride);
    const cudaStream_t stream = cuda_impl(b)->stream;
    const int pdl = cuda_impl(b)->pdl;
    const int H = st->num_heads, D = st->head_size, dt = (int)st->dtype;
    cudaError_t e;
    if (md->num_decodes > 0) {
        /* (num_decodes, H, splits, D) partials must fit the workspace */
        const long long fit = (long long)st->max_num_seqs * FLASH_WS_SPLITS / md->num_decodes;
        const int max_splits = fit < FLASH_MAX_SPLITS ? (int)fit : FLASH_MAX_SPLITS;
        int splits = 1;
        if (max_splits >= 2)
            splits = flash_attention_num_splits(md->num_decodes, H, D, md->max_seq_len,
                                                st->num_sms, max_splits);
        e = flash_attention_decode(out, q, q_stride, k_cache, v_cache, md->query_start_loc,
                                   md->seq_lens, md->block_tables, md->block_table_stride, 0,
                                   md->num_decodes, H, D, st->block_size, st->scale, dt, splits,
                                   st->partial_o, st->partial_lse, st->tickets, stream, pdl);
        if (e != cudaSuccess)
            return error_set(err, GPT2_ERR_DEVICE, "%s:%d: flash_attention_decode (%d seqs, "
                             "%d splits): %s", __FILE__, __LINE__, md->num_decodes, splits,
                             cudaGetErrorString(e));
    }
    const int num_prefills = md->num_seqs - md->num_decodes;
    if (num_prefills > 0) {
        e = flash_attention_prefill(out, q, q_stride, k_cache, v_cache, md->query_start_loc,
                                    md->seq_lens, md->block_tables, md->block_table_stride,
                                    md->num_decodes, num_prefills, md->max_query_len, H, D,
                                    st->block_size, st->scale, dt,
                                    st->tickets + (size_t)st->max_num_seqs * H, stream);
        if (e != cudaSuccess)
            return error_set(err, GPT2_ERR_DEVICE, "%s:%d: flash_attention_prefill (%d seqs, "
                             "max_query_len %d): %s", __FILE__, __LINE__, num_prefills,
                             md->max_query_len, cudaGetErrorString(e));
    }
    return GPT2_OK;
}

const AttentionBackend attention_backend_flash = {
    "FLASH", flash_check, flash_create, flash_destroy, flash_forward,
};
