/* decode_layer_trace_cuda.c — GPT2_ENGINE_LAYER_TRACE for the two-kernel layers
 * (decode_layer_cuda.c): the kernels (kernels/decode_layer_steps.cuh: LayerTrace) store the
 * global timer at each block's marks into a device buffer of layer_trace_words() words
 * (kernels.h has the layout); layer_trace_print() summarises the steps kept, per launch:
 * the mean time, from the step's first stamp, at which its first and its last block
 * reached each mark; to stderr (to = "1") or appended to the file `to`. */
#include "backend_cuda.h"
#include "kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t layer_trace_words(int n_layer)
{
    return (size_t)LAYER_TRACE_STEPS * (2 * n_layer + 1) * LAYER_TRACE_BLOCKS * LAYER_TRACE_MARKS;
}

/* One launch's view of a traced step: the earliest and latest block at each mark, in us
 * from the step's first stamp (mean over the steps traced). */
typedef struct TraceRow {
    double lo[LAYER_TRACE_MARKS], hi[LAYER_TRACE_MARKS];
} TraceRow;

void layer_trace_print(const unsigned long long *trace, const unsigned *trace_step, int n_layer,
                       int C, const char *to)
{
    unsigned steps = 0;
    const int K = 2 * n_layer + 1;
    const size_t words = layer_trace_words(n_layer);
    unsigned long long *h = malloc(words * sizeof *h);
    TraceRow *rows = calloc((size_t)K, sizeof *rows);
    if (!h || !rows || cudaMemcpy(&steps, trace_step, sizeof steps, cudaMemcpyDeviceToHost) ||
        cudaMemcpy(h, trace, words * sizeof *h, cudaMemcpyDeviceToHost) || steps == 0) {
        free(h), free(rows);
        return;
    }
    const int ns = (int)GPT2_MIN(steps, (unsigned)LAYER_TRACE_STEPS);
    const size_t per_kernel = (size_t)LAYER_TRACE_BLOCKS * LAYER_TRACE_MARKS;
    for (int s = 0; s < ns; s++) {
        const unsigned long long *st = h + (size_t)s * K * per_kernel;
        unsigned long long t0 = ~0ull;
        for (size_t i = 0; i < (size_t)K * per_kernel; i++)
            if (st[i] && st[i] < t0) t0 = st[i];
        for (int k = 0; k < K; k++)
            for (int m = 0; m < LAYER_TRACE_MARKS; m++) {
                unsigned long long lo = ~0ull, hi = 0;
                for (int b = 0; b < LAYER_TRACE_BLOCKS; b++) {
                    const unsigned long long v = st[k * per_kernel + b * LAYER_TRACE_MARKS + m];
                    if (!v) continue;
                    lo = GPT2_MIN(lo, v), hi = GPT2_MAX(hi, v);
                }
                if (hi) {
                    rows[k].lo[m] += (double)(lo - t0) / 1e3 / ns;
                    rows[k].hi[m] += (double)(hi - t0) / 1e3 / ns;
                }
            }
    }
    FILE *fp = strcmp(to, "1") != 0 ? fopen(to, "a") : NULL;
    FILE *o = fp ? fp : stderr;
    fprintf(o, "layer decode trace (C=%d, %d layers, mean of %d steps): us from the step's "
            "first stamp, earliest..latest block (one time: the latest)\n%-9s %13s %13s %7s "
            "%7s %7s %7s %7s %7s %7s %7s %7s %13s\n", C, n_layer, ns, "launch", "entry",
            "waited", "vec", "x", "ln", "copies", "mm1", "b2", "scores", "pv", "b3/mm2", "exit");
    for (int k = 0; k < K; k++) {
        const TraceRow *r = &rows[k];
        char name[16];
        if (k == K - 1) snprintf(name, sizeof name, "residual");
        else snprintf(name, sizeof name, "%s %d", k % 2 ? "mlp" : "attn", k / 2);
        fprintf(o, "%-9s %6.2f %6.2f %6.2f %6.2f", name, r->lo[0], r->hi[0], r->lo[1], r->hi[1]);
        for (int m = 2; m < LAYER_TRACE_MARKS - 1; m++) fprintf(o, " %7.2f", r->hi[m]);
        fprintf(o, " %6.2f %6.2f\n", r->lo[LAYER_TRACE_MARKS - 1], r->hi[LAYER_TRACE_MARKS - 1]);
    }
    if (fp) fclose(fp);
    free(h), free(rows);
}
