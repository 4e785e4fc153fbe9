/* sample_cuda.c — host side of the CUDA backend's `sample` op (sampling.h):
 * validates the rows exactly as sample_cpu does, stages rows, adjustments and the
 * per-row uniforms (sampling_uniform01, the shared inline RNG) into one pinned
 * buffer, does one h2d copy, runs kernels/sampling.cu, one d2h copy of every
 * output, and unpacks into the caller's SamplerOutput. Staging buffers grow on
 * demand and are reused, so a steady state allocates nothing. */
#include "backend_cuda.h"
#include "kernels.h"

#include <math.h>
#include <string.h>

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

void cuda_sample_buffers_free(CudaImpl *im)
{
    if (im->sample_in) cudaFree(im->sample_in);
    if (im->sample_out) cudaFree(im->sample_out);
    if (im->sample_work) cudaFree(im->sample_work);
    if (im->host_stage) cudaFreeHost(im->host_stage);
    im->sample_in = im->sample_out = im->host_stage = NULL;
    im->sample_work = NULL;
    im->sample_in_bytes = im->sample_out_bytes = im->sample_work_bytes = 0;
    im->host_stage_bytes = 0;
}

Status cuda_sample(Backend *b, const void *logits, DType logits_dtype, int ld, int R, int V,
                   const SamplingRow *rows, const TokenAdjust *adj, int n_adj, int max_logprobs,
                   SamplerOutput *out, Error *err)
{
    CudaImpl *im = cuda_impl(b);
    Status vs = sampling_validate(logits, R, V, rows, adj, n_adj, max_logprobs, out, err);
    if (vs != GPT2_OK || R == 0) return vs;
    if (ld < V)
        return error_set(err, GPT2_ERR_INTERNAL, "sample: row stride %d < V %d", ld, V);
    if (im->capturing)
        return error_set(err, GPT2_ERR_INTERNAL, "sample: not allowed during graph capture");

    /* input staging: rows (R) | adj (n_adj) | uniforms (R) */
    const size_t o_adj = round16((size_t)R * sizeof(SamplingRow));
    const size_t o_u = o_adj + round16((size_t)n_adj * sizeof(TokenAdjust));
    const size_t in_bytes = o_u + round16((size_t)R * sizeof(float));
    /* output staging: tokens | logprobs | ranks | topk_ids | topk_logprobs */
    const size_t r4 = round16((size_t)R * 4), k4 = round16((size_t)R * max_logprobs * 4);
    const size_t o_lp = r4, o_rk = 2 * r4, o_ti = 3 * r4, o_tl = 3 * r4 + k4;
    const size_t out_bytes = 3 * r4 + 2 * k4;
    const size_t stage = in_bytes > out_bytes ? in_bytes : out_bytes;
    CUDA_CHECK(cuda_use_device(b));
    if (im->host_stage_bytes < stage) {
        if (im->host_stage) cudaFreeHost(im->host_stage);
        im->host_stage = NULL;
        im->host_stage_bytes = 0;
        CUDA_CHECK(cudaHostAlloc(&im->host_stage, stage, cudaHostAllocDefault));
        im->host_stage_bytes = stage;
    }
    if (cuda_buffer_reserve(&im->sample_in, &im->sample_in_bytes, in_bytes, err) != GPT2_OK ||
        cuda_buffer_reserve(&im->sample_out, &im->sample_out_bytes, out_bytes, err) != GPT2_OK ||
        cuda_buffer_reserve((void **)&im->sample_work, &im->sample_work_bytes,
                            (size_t)R * V * sizeof(float), err) != GPT2_OK)
        return err ? err->code : GPT2_ERR_DEVICE;

    char *h = im->host_stage;
    memcpy(h, rows, (size_t)R * sizeof(SamplingRow));
    if (n_adj) memcpy(h + o_adj, adj, (size_t)n_adj * sizeof(TokenAdjust));
    float *u = (float *)(h + o_u);
    for (int r = 0; r < R; r++) u[r] = sampling_uniform01(rows[r].seed, rows[r].step);
    CUDA_CHECK(cudaMemcpyAsync(im->sample_in, h, in_bytes, cudaMemcpyHostToDevice, im->stream));

    char *din = im->sample_in, *dout = im->sample_out;
    CUDA_CHECK(sample_cuda(logits, (int)logits_dtype, ld, im->sample_work, R, V,
                           (const SamplingRow *)din,
                           (const TokenAdjust *)(din + o_adj), (const float *)(din + o_u),
                           max_logprobs, (int32_t *)dout, (float *)(dout + o_lp),
                           (int32_t *)(dout + o_rk),
                           max_logprobs ? (int32_t *)(dout + o_ti) : NULL,
                           max_logprobs ? (float *)(dout + o_tl) : NULL, im->stream));
    CUDA_CHECK(cudaMemcpyAsync(h, dout, out_bytes, cudaMemcpyDeviceToHost, im->stream));
    CUDA_CHECK(cudaStreamSynchronize(im->stream));

    memcpy(out->tokens, h, (size_t)R * 4);
    memcpy(out->logprobs, h + o_lp, (size_t)R * 4);
    memcpy(out->ranks, h + o_rk, (size_t)R * 4);
    if (max_logprobs) {
        memcpy(out->topk_ids, h + o_ti, (size_t)R * max_logprobs * 4);
        memcpy(out->topk_logprobs, h + o_tl, (size_t)R * max_logprobs * 4);
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
