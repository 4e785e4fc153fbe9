/* sample_cuda.c — host side of the CUDA backend's sampling ops (sampling.h):
 * validates the rows exactly as sample_cpu does, packs rows, adjustments and the
 * per-row uniforms (sampling_uniform01, the shared inline RNG) into the launch's own
 * parameters (up to SAMPLE_INLINE_BYTES; else into pinned staging and one h2d copy),
 * runs kernels/sampling.cu, which writes every output straight into mapped pinned
 * staging (GPT2_ENGINE_SAMPLE_IN=copy / _OUT=copy: the copies instead); sample_launch
 * does that, sample_wait unpacks into the caller's SamplerOutput. So a small batch's
 * sampling is one launch, with no copy-engine work before or after it.
 * `sample` is the two back to back. Two tickets, each with its own pinned
 * staging and event, let a step's sampling be queued while the previous one's
 * output is still unread. Buffers grow on demand and are reused, so a steady
 * state allocates nothing. upload_ints (a step's ints, with the launch when they are
 * few, and its feed) reads the device tokens of the latest launch. */
#include "backend_cuda.h"
#include "kernels.h"

#include <math.h>
#include <string.h>

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

/* Split plain greedy rows (kernels.h: SampleSplit) for batches of up to SAMPLE_SPLIT_ROWS
 * rows: as many blocks per row as put the rows on the SMs, at most im->sample_splits_max,
 * each with >= SAMPLE_SPLIT_IDS ids (one 16-byte load per thread of the 1024-thread block). */
#define SAMPLE_SPLIT_ROWS 32
#define SAMPLE_SPLIT_IDS 8192
#define SAMPLE_SPLIT_PART_BYTES 16   /* sampling.cu's GreedyPart */

static Status sample_split(CudaImpl *im, int R, int V, SampleSplit *sp, Error *err)
{
    int s = (V + SAMPLE_SPLIT_IDS - 1) / SAMPLE_SPLIT_IDS;
    if (R > SAMPLE_SPLIT_ROWS || R < 1) s = 1;
    s = GPT2_MIN(s, GPT2_MIN(im->num_sms / GPT2_MAX(R, 1), im->sample_splits_max));
    *sp = (SampleSplit){GPT2_MAX(s, 1), NULL, NULL};
    if (sp->splits == 1) return GPT2_OK;
    if (!im->sample_split) {        /* once: tickets (zero, reset by each launch) | parts */
        const size_t bytes =
            SAMPLE_SPLIT_ROWS * (sizeof(int) + SAMPLE_MAX_SPLITS * SAMPLE_SPLIT_PART_BYTES);
        CUDA_CHECK(cudaMalloc(&im->sample_split, bytes));
        CUDA_CHECK(cudaMemsetAsync(im->sample_split, 0, bytes, im->stream));
    }
    sp->tickets = im->sample_split;
    sp->parts = (char *)im->sample_split + SAMPLE_SPLIT_ROWS * sizeof(int);
    return GPT2_OK;
fail:
    return err ? err->code : GPT2_ERR_DEVICE;
}

void cuda_sample_buffers_free(CudaImpl *im)
{
    if (im->sample_in) cudaFree(im->sample_in);
    if (im->sample_out) cudaFree(im->sample_out);
    if (im->sample_work) cudaFree(im->sample_work);
    if (im->sample_split) cudaFree(im->sample_split);
    im->sample_split = NULL;
    for (int i = 0; i < 2; i++) {
        if (im->host_stage[i]) cudaFreeHost(im->host_stage[i]);
        im->host_stage[i] = im->host_stage_dev[i] = NULL;
        im->host_stage_bytes[i] = 0;
        im->sample_pending[i] = 0;
    }
    im->sample_in = im->sample_out = NULL;
    im->sample_work = NULL;
    im->sample_in_bytes = im->sample_out_bytes = im->sample_work_bytes = 0;
}

/* Output staging of R rows with max_logprobs top entries:
 * tokens | logprobs | ranks | topk_ids | topk_logprobs, each 16-byte aligned. */
typedef struct OutLayout { size_t lp, rk, ti, tl, bytes; } OutLayout;

static OutLayout out_layout(int R, int max_logprobs)
{
    const size_t r4 = round16((size_t)R * 4), k4 = round16((size_t)R * max_logprobs * 4);
    return (OutLayout){r4, 2 * r4, 3 * r4, 3 * r4 + k4, 3 * r4 + 2 * k4};
}

/* Grows a device buffer the sampler shares between tickets: a launch still
 * queued may use the old one, so the stream drains first (only when it grows). */
static Status reserve_shared(CudaImpl *im, void **buf, size_t *cap, size_t bytes, Error *err)
{
    if (*cap >= bytes) return GPT2_OK;
    CUDA_CHECK(cudaStreamSynchronize(im->stream));
    return cuda_buffer_reserve(buf, cap, bytes, err);
fail:
    return err ? err->code : GPT2_ERR_DEVICE;
}

Status cuda_sample_launch(Backend *b, const void *logits, DType logits_dtype, int ld, int R,
                          int V, const SamplingRow *rows, const TokenAdjust *adj, int n_adj,
                          int max_logprobs, int *ticket, Error *err)
{
    CudaImpl *im = cuda_impl(b);
    *ticket = -1;
    Status vs = sampling_validate(logits, R, V, rows, adj, n_adj, max_logprobs,
                                  SAMPLING_NO_OUTPUT, err);
    if (vs != GPT2_OK) return vs;
    if (ld < V)
        return error_set(err, GPT2_ERR_INTERNAL, "sample: row stride %d < V %d", ld, V);
    if (im->capturing)
        return error_set(err, GPT2_ERR_INTERNAL, "sample: not allowed during graph capture");
    const int t = im->sample_next;
    if (im->sample_pending[t])
        return error_set(err, GPT2_ERR_INTERNAL, "sample_launch: two launches are already "
                         "outstanding (sample_wait first)");

    /* input staging: rows (R) | adj (n_adj) | uniforms (R) */
    const size_t o_adj = round16((size_t)R * sizeof(SamplingRow));
    const size_t o_u = o_adj + round16((size_t)n_adj * sizeof(TokenAdjust));
    const size_t in_bytes = o_u + round16((size_t)R * sizeof(float));
    const OutLayout ol = out_layout(R, max_logprobs);
    const size_t stage = in_bytes > ol.bytes ? in_bytes : ol.bytes;
    CUDA_CHECK(cuda_use_device(b));
    if (im->host_stage_bytes[t] < stage) {      /* this ticket's last use was waited for */
        if (im->host_stage[t]) cudaFreeHost(im->host_stage[t]);
        im->host_stage[t] = im->host_stage_dev[t] = NULL;
        im->host_stage_bytes[t] = 0;
        CUDA_CHECK(cudaHostAlloc(&im->host_stage[t], stage, cudaHostAllocMapped));
        im->host_stage_bytes[t] = stage;
        CUDA_CHECK(cudaHostGetDevicePointer(&im->host_stage_dev[t], im->host_stage[t], 0));
    }
    const int in_param = im->sample_in_param && in_bytes <= SAMPLE_INLINE_BYTES;
    if ((!in_param &&
         reserve_shared(im, &im->sample_in, &im->sample_in_bytes, in_bytes, err) != GPT2_OK) ||
        reserve_shared(im, &im->sample_out, &im->sample_out_bytes, ol.bytes, err) != GPT2_OK ||
        reserve_shared(im, (void **)&im->sample_work, &im->sample_work_bytes,
                       (size_t)(R ? R : 1) * V * sizeof(float), err) != GPT2_OK)
        return err ? err->code : GPT2_ERR_DEVICE;
    SampleSplit split;
    if (sample_split(im, R, V, &split, err) != GPT2_OK) return err ? err->code : GPT2_ERR_DEVICE;
    if (R > 0) {
        /* inputs: with the launch (in.bytes) when they fit, else staged and copied up */
        SampleInputs in;
        in.dev = in_param ? NULL : im->sample_in;
        in.o_adj = (int)o_adj, in.o_u = (int)o_u;
        char *h = in_param ? (char *)in.bytes : im->host_stage[t];
        memcpy(h, rows, (size_t)R * sizeof(SamplingRow));
        if (n_adj) memcpy(h + o_adj, adj, (size_t)n_adj * sizeof(TokenAdjust));
        float *u = (float *)(h + o_u);
        for (int r = 0; r < R; r++) u[r] = sampling_uniform01(rows[r].seed, rows[r].step);
        if (!in_param)
            CUDA_CHECK(cudaMemcpyAsync(im->sample_in, h, in_bytes, cudaMemcpyHostToDevice,
                                       im->stream));
        /* outputs: written into this ticket's mapped staging (the tokens also into
         * sample_out, for upload_ints' feed), or into sample_out and copied down */
        const int mapped = im->sample_out_mapped;
        char *dout = mapped ? im->host_stage_dev[t] : im->sample_out;
        const SampleOutputs out = {
            (int32_t *)dout, (float *)(dout + ol.lp), (int32_t *)(dout + ol.rk),
            max_logprobs ? (int32_t *)(dout + ol.ti) : NULL,
            max_logprobs ? (float *)(dout + ol.tl) : NULL,
            mapped ? (int32_t *)im->sample_out : NULL};
        CUDA_CHECK(sample_cuda(logits, (int)logits_dtype, ld, im->sample_work, R, V, &in,
                               max_logprobs, out, split, im->stream));
        if (!mapped)
            CUDA_CHECK(cudaMemcpyAsync(im->host_stage[t], dout, ol.bytes,
                                       cudaMemcpyDeviceToHost, im->stream));
    }
    CUDA_CHECK(cudaEventRecord(im->sample_done[t], im->stream));
    im->sample_rows[t] = R;
    im->sample_lp[t] = max_logprobs;
    im->sample_pending[t] = 1;
    im->sample_next = t ^ 1;
    *ticket = t;
    return GPT2_OK;
fail:
    return err ? err->code : GPT2_ERR_DEVICE;
}

Status cuda_sample_wait(Backend *b, int ticket, SamplerOutput *out, Error *err)
{
    CudaImpl *im = cuda_impl(b);
    if (ticket < 0 || ticket > 1 || !im->sample_pending[ticket])
        return error_set(err, GPT2_ERR_INTERNAL, "sample_wait: no launch with ticket %d", ticket);
    const int R = im->sample_rows[ticket], max_logprobs = im->sample_lp[ticket];
    im->sample_pending[ticket] = 0;
    CUDA_CHECK(cuda_use_device(b));
    CUDA_CHECK(cudaEventSynchronize(im->sample_done[ticket]));
    if (R == 0) return GPT2_OK;
    if (sampling_validate_output(out, max_logprobs))
        return error_set(err, GPT2_ERR_VALUE, "sample: NULL buffer");
    const char *h = im->host_stage[ticket];
    const OutLayout ol = out_layout(R, max_logprobs);
    memcpy(out->tokens, h, (size_t)R * 4);
    memcpy(out->logprobs, h + ol.lp, (size_t)R * 4);
    memcpy(out->ranks, h + ol.rk, (size_t)R * 4);
    if (max_logprobs) {
        memcpy(out->topk_ids, h + ol.ti, (size_t)R * max_logprobs * 4);
        memcpy(out->topk_logprobs, h + ol.tl, (size_t)R * max_logprobs * 4);
    }
    for (int r = 0; r < R; r++)
        if (out->tokens[r] < 0)
            return error_set(err, GPT2_ERR_VALUE,
                             "sample: row %d has every token masked (logit_bias/min_tokens "
                             "left no finite logit)", r);
    return GPT2_OK;
fail:
    return err ? err->code : GPT2_ERR_DEVICE;
}

Status cuda_sample(Backend *b, const void *logits, DType logits_dtype, int ld, int R, int V,
                   const SamplingRow *rows, const TokenAdjust *adj, int n_adj, int max_logprobs,
                   SamplerOutput *out, Error *err)
{
    Status vs = sampling_validate(logits, R, V, rows, adj, n_adj, max_logprobs, out, err);
    if (vs != GPT2_OK || R == 0) return vs;
    int ticket;
    Status s = cuda_sample_launch(b, logits, logits_dtype, ld, R, V, rows, adj, n_adj,
                                  max_logprobs, &ticket, err);
    return s ? s : cuda_sample_wait(b, ticket, out, err);
}

Status cuda_upload_ints(Backend *b, int32_t *dst, const int32_t *src, int n, int ids_off,
                        int feed_idx_off, int feed_row_off, int n_feeds, Error *err)
{
    CudaImpl *im = cuda_impl(b);
    if (n <= 0) return GPT2_OK;                 /* the feed lists are among the ints */
    if (n_feeds > 0 && !im->sample_out)
        return error_set(err, GPT2_ERR_INTERNAL, "upload_ints: nothing was sampled yet to feed");
    const int32_t *tokens = (const int32_t *)im->sample_out;
    CUDA_CHECK(cuda_use_device(b));
    if (im->upload_param && n <= UPLOAD_INLINE_INTS) {     /* one launch, no copy */
        UploadInts in;
        memcpy(in.v, src, (size_t)n * sizeof *src);
        CUDA_CHECK(upload_ints_cuda(dst, &in, n, ids_off, feed_idx_off, feed_row_off, n_feeds,
                                    tokens, im->stream));
        return GPT2_OK;
    }
    CUDA_CHECK(cudaMemcpyAsync(dst, src, (size_t)n * sizeof *src, cudaMemcpyHostToDevice,
                               im->stream));
    if (n_feeds > 0)
        CUDA_CHECK(feed_tokens_cuda(dst + ids_off, dst + feed_idx_off, dst + feed_row_off,
                                    tokens, n_feeds, im->stream));
    return GPT2_OK;
fail:
    return err ? err->code : GPT2_ERR_DEVICE;
}
