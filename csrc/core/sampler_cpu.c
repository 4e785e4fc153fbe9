/* sampler_cpu.c — the reference implementation of the sampling contract in
 * sampling.h: the CPU backend's `sample` op and the oracle the CUDA kernel is
 * tested against. Host memory only; no allocation survives the call.
 *
 * Per row (R rows of V fp32 logits), exactly as sampling.h lists:
 *   1. raw log_softmax statistics: max and log-sum-exp in double; the reported
 *      logprob of token t is (double)raw[t] - lse rounded to float; its rank is
 *      1 + #{s : raw[s] > raw[t]}; the top-k list is the num_logprobs largest raw
 *      logits, ties broken by the lowest id.
 *   2. x = raw, then each TokenAdjust of the row in order (repetition penalty,
 *      frequency/presence penalty, bias). NaN in x is treated as -inf.
 *   3. target_token >= 0: token = target_token (no sampling).
 *      temperature == 0: token = argmax x, lowest id on ties.
 *      else: p[t] = expf((x[t] - max x) / temperature) in float (the same value as
 *      softmax(x / T) up to rounding, but never inf - inf); sums in double;
 *      top_k keeps p >= the k-th largest p; top_p keeps p >= p_c where p_c is the
 *      last p (in descending order) needed for the running mass of the top-k-kept
 *      p to reach top_p * their sum (found by radix selection, no sort; the masses
 *      are double sums whose order may differ from a sorted cumsum by rounding);
 *      min_p keeps p >= min_p * max p. Ties at every
 *      cut-off are kept. u = sampling_uniform01(seed, step); the token is the first
 *      id, in id order, whose running sum of kept p exceeds u * (sum of kept p).
 * Cost: O(V) per row (three extra passes for top_p), plus O(V log k) for the top-k
 * selections (top_k, logprobs).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampling.h"

typedef struct Cand {      /* one candidate token for sorting: value desc, id asc */
    float v;
    int32_t id;
} Cand;

static int cand_cmp(const void *a, const void *b)
{
    const Cand *x = (const Cand *)a, *y = (const Cand *)b;
    if (x->v > y->v) return -1;
    if (x->v < y->v) return 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* 1 if candidate a ranks before b (larger value, then lower id). */
static int cand_before(Cand a, Cand b) { return a.v > b.v || (a.v == b.v && a.id < b.id); }

/* The k largest of v(V) in descending order (ties: lowest id first) into best(k),
 * via a min-heap of size k: O(V log k). NaN entries are ranked below -inf. */
static void topk_select(const float *v, int V, int k, Cand *best)
{
    int n = 0;
    for (int t = 0; t < V; t++) {
        Cand c = {isnan(v[t]) ? -INFINITY : v[t], t};
        if (n < k) {                          /* sift up: heap root = worst kept */
            int i = n++;
            best[i] = c;
            while (i > 0) {
                int parent = (i - 1) / 2;
                if (!cand_before(best[parent], best[i])) break;
                Cand tmp = best[parent]; best[parent] = best[i]; best[i] = tmp;
                i = parent;
            }
        } else if (cand_before(c, best[0])) { /* replace the worst, sift down */
            best[0] = c;
            int i = 0;
            for (;;) {
                int l = 2 * i + 1, r = l + 1, w = i;
                if (l < n && cand_before(best[w], best[l])) w = l;
                if (r < n && cand_before(best[w], best[r])) w = r;
                if (w == i) break;
                Cand tmp = best[w]; best[w] = best[i]; best[i] = tmp;
                i = w;
            }
        }
    }
    qsort(best, (size_t)n, sizeof(Cand), cand_cmp);
}

#define RADIX_BUCKETS 2048

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* The top_p cut-off among the candidates p[t] >= lo, p[t] > 0: the value p_c at
 * which the running mass, taken from the largest p down, first reaches
 * top_p * (their total); every p >= p_c is kept (ties included). Found without a
 * sort by radix selection on the float bits (positive floats order like their
 * bit patterns): three passes over 11 + 10 + 10 bits narrow the candidates to the
 * one bucket, then the one value, where the mass crosses. O(V). Returns lo when
 * rounding keeps the total from reaching the target (keep everything). */
static float top_p_cut(const float *p, int V, float lo, double top_p, Cand *cand, double *mass,
                       int *count)
{
    static const int shift[3] = {20, 10, 0};
    static const uint32_t buckets[3] = {2048, 1024, 1024};
    int n = 0;
    double total = 0.0;
    for (int t = 0; t < V; t++)
        if (p[t] > 0.0f && p[t] >= lo) {
            cand[n++].id = t;
            total += p[t];
        }
    const double need = top_p * total;
    double acc = 0.0;                      /* mass of the values above the current bucket */
    for (int level = 0; level < 3; level++) {
        const uint32_t nb = buckets[level];
        memset(mass, 0, nb * sizeof *mass);
        memset(count, 0, nb * sizeof *count);
        for (int i = 0; i < n; i++) {
            uint32_t key = (float_bits(p[cand[i].id]) >> shift[level]) & (nb - 1);
            mass[key] += p[cand[i].id];
            count[key]++;
        }
        int k = (int)nb - 1;
        for (; k >= 0; k--) {
            if (count[k] == 0) continue;
            if (acc + mass[k] >= need) break;
            acc += mass[k];
        }
        if (k < 0) return lo;
        int m = 0;
        for (int i = 0; i < n; i++)
            if (((float_bits(p[cand[i].id]) >> shift[level]) & (nb - 1)) == (uint32_t)k)
                cand[m++] = cand[i];
        n = m;
    }
    return p[cand[0].id];                  /* the last bucket holds one value */
}

static Status row_validate(const SamplingRow *row, int r, int V, int n_adj, int max_logprobs,
                           const TokenAdjust *adj, Error *err)
{
    if (row->target_token >= V)
        return error_set(err, GPT2_ERR_VALUE, "sample: row %d target_token %d >= vocab size %d",
                         r, (int)row->target_token, V);
    if (row->num_logprobs < 0 || row->num_logprobs > max_logprobs)
        return error_set(err, GPT2_ERR_VALUE, "sample: row %d num_logprobs %d not in [0, %d]",
                         r, (int)row->num_logprobs, max_logprobs);
    if (row->adj_count < 0 || row->adj_start < 0 || row->adj_start > n_adj ||
        row->adj_count > n_adj - row->adj_start)
        return error_set(err, GPT2_ERR_VALUE,
                         "sample: row %d adjustments [%d, %d+%d) outside [0, %d)", r,
                         (int)row->adj_start, (int)row->adj_start, (int)row->adj_count, n_adj);
    for (int i = 0; i < row->adj_count; i++) {
        int32_t t = adj[row->adj_start + i].token;
        if (t < 0 || t >= V)
            return error_set(err, GPT2_ERR_VALUE, "sample: row %d adjusts token %d outside [0, %d)",
                             r, (int)t, V);
    }
    if (row->target_token >= 0) return GPT2_OK;
    if (!(row->temperature >= 0.0f) || isinf(row->temperature))
        return error_set(err, GPT2_ERR_VALUE, "sample: row %d temperature %g must be finite >= 0",
                         r, (double)row->temperature);
    if (!(row->top_p > 0.0f && row->top_p <= 1.0f))
        return error_set(err, GPT2_ERR_VALUE, "sample: row %d top_p %g not in (0, 1]", r,
                         (double)row->top_p);
    if (!(row->min_p >= 0.0f && row->min_p <= 1.0f))
        return error_set(err, GPT2_ERR_VALUE, "sample: row %d min_p %g not in [0, 1]", r,
                         (double)row->min_p);
    if (!(row->repetition_penalty > 0.0f))
        return error_set(err, GPT2_ERR_VALUE, "sample: row %d repetition_penalty %g must be > 0",
                         r, (double)row->repetition_penalty);
    return GPT2_OK;
}

/* x(V) = raw with the row's adjustments applied (step 2). */
static void row_adjust(float *x, const float *raw, int V, const SamplingRow *row,
                       const TokenAdjust *adj)
{
    for (int t = 0; t < V; t++) x[t] = isnan(raw[t]) ? -INFINITY : raw[t];
    const float rp = row->repetition_penalty;
    for (int i = 0; i < row->adj_count; i++) {
        const TokenAdjust *a = &adj[row->adj_start + i];
        float v = x[a->token];
        if (rp != 1.0f && (a->output_count > 0 || a->in_prompt)) v = v > 0 ? v / rp : v * rp;
        v -= row->frequency_penalty * (float)a->output_count +
             row->presence_penalty * (a->output_count > 0 ? 1.0f : 0.0f);
        v += a->bias;
        x[a->token] = isnan(v) ? -INFINITY : v;
    }
}

/* Step 3 with temperature > 0. p(V), cand(V), mass/count(RADIX_BUCKETS) are scratch. Returns the token,
 * or -1 when every token is masked (-inf). */
static int32_t row_sample(const float *x, int V, const SamplingRow *row, float *p, Cand *cand,
                          double *mass, int *count)
{
    float xmax = -INFINITY;
    for (int t = 0; t < V; t++) xmax = x[t] > xmax ? x[t] : xmax;
    if (xmax == -INFINITY) return -1;
    const float temp = row->temperature;
    for (int t = 0; t < V; t++) p[t] = expf((x[t] - xmax) / temp);   /* max p = 1 */

    float cut = 0.0f;                      /* keep p[t] >= cut (and p[t] > 0) */
    int k = row->top_k > 0 && row->top_k < V ? row->top_k : 0;
    if (k > 0) {
        topk_select(p, V, k, cand);
        cut = cand[k - 1].v;
    }
    if (row->top_p < 1.0f) cut = top_p_cut(p, V, cut, (double)row->top_p, cand, mass, count);
    if (row->min_p > 0.0f) {               /* max p is exactly 1 (x == xmax) */
        float mp = row->min_p * 1.0f;
        cut = mp > cut ? mp : cut;
    }

    double kept = 0.0;
    for (int t = 0; t < V; t++)
        if (p[t] >= cut) kept += p[t];
    double target = (double)sampling_uniform01(row->seed, row->step) * kept, run = 0.0;
    int32_t last = -1;
    for (int t = 0; t < V; t++) {
        if (p[t] < cut || p[t] <= 0.0f) continue;
        run += p[t];
        last = t;
        if (run > target) return t;
    }
    return last;                           /* rounding: u * kept == kept */
}

int sampling_validate_output(const SamplerOutput *out, int max_logprobs)
{
    return out == SAMPLING_NO_OUTPUT ? 0
           : !out || !out->tokens || !out->logprobs || !out->ranks ||
             (max_logprobs > 0 && (!out->topk_ids || !out->topk_logprobs));
}

Status sampling_validate(const void *logits, int R, int V, const SamplingRow *rows,
                         const TokenAdjust *adj, int n_adj, int max_logprobs,
                         const SamplerOutput *out, Error *err)
{
    if (R < 0 || V <= 0 || n_adj < 0 || max_logprobs < 0)
        return error_set(err, GPT2_ERR_VALUE,
                         "sample: bad sizes R=%d V=%d n_adj=%d max_logprobs=%d", R, V, n_adj,
                         max_logprobs);
    if (R == 0) return GPT2_OK;
    if (!logits || !rows || (n_adj > 0 && !adj) || sampling_validate_output(out, max_logprobs))
        return error_set(err, GPT2_ERR_VALUE, "sample: NULL buffer");
    for (int r = 0; r < R; r++) {
        Status s = row_validate(&rows[r], r, V, n_adj, max_logprobs, adj, err);
        if (s != GPT2_OK) return s;
    }
    return GPT2_OK;
}

Status sample_cpu(const float *logits, int R, int V, const SamplingRow *rows,
                  const TokenAdjust *adj, int n_adj, int max_logprobs, SamplerOutput *out,
                  Error *err)
{
    Status vs = sampling_validate(logits, R, V, rows, adj, n_adj, max_logprobs, out, err);
    if (vs != GPT2_OK || R == 0) return vs;

    /* scratch: cand(V) candidates, mass(RADIX_BUCKETS), x(V), p(V), count(RADIX_BUCKETS) */
    Cand *cand = malloc((size_t)V * sizeof(Cand) + RADIX_BUCKETS * sizeof(double) +
                        (size_t)V * 2 * sizeof(float) + RADIX_BUCKETS * sizeof(int));
    if (!cand) return error_set(err, GPT2_ERR_NOMEM, "sample: out of memory for V=%d scratch", V);
    double *mass = (double *)(cand + V);
    float *x = (float *)(mass + RADIX_BUCKETS);
    float *p = x + V;
    int *count = (int *)(p + V);

    Status status = GPT2_OK;
    for (int r = 0; r < R; r++) {
        const SamplingRow *row = &rows[r];
        const float *raw = logits + (size_t)r * V;

        /* 1. raw log-sum-exp (NaN logits count as -inf) */
        float rmax = -INFINITY;
        for (int t = 0; t < V; t++) rmax = raw[t] > rmax ? raw[t] : rmax;
        double lse = rmax;
        if (rmax > -INFINITY) {
            double sum = 0.0;
            for (int t = 0; t < V; t++)
                if (!isnan(raw[t])) sum += exp((double)raw[t] - (double)rmax);
            lse = (double)rmax + log(sum);
        }

        /* 2.-3. choose the token */
        int32_t token;
        if (row->target_token >= 0) {
            token = row->target_token;
        } else {
            row_adjust(x, raw, V, row, adj);
            if (row->temperature == 0.0f) {
                token = 0;
                for (int t = 1; t < V; t++)
                    if (x[t] > x[token]) token = t;
                if (x[token] == -INFINITY) token = -1;
            } else {
                token = row_sample(x, V, row, p, cand, mass, count);
            }
            if (token < 0) {
                status = error_set(err, GPT2_ERR_VALUE,
                                   "sample: row %d has every token masked (logit_bias/min_tokens "
                                   "left no finite logit)", r);
                goto done;
            }
        }

        /* its raw logprob and rank */
        float tv = isnan(raw[token]) ? -INFINITY : raw[token];
        int32_t rank = 1;
        for (int t = 0; t < V; t++) rank += raw[t] > tv;
        out->tokens[r] = token;
        out->logprobs[r] = rmax > -INFINITY ? (float)((double)tv - lse) : -INFINITY;
        out->ranks[r] = rank;

        /* the raw top num_logprobs; unused slots: id -1, logprob -inf */
        if (max_logprobs > 0) {
            int32_t *ids = out->topk_ids + (size_t)r * max_logprobs;
            float *lps = out->topk_logprobs + (size_t)r * max_logprobs;
            int k = GPT2_MIN((int)row->num_logprobs, V);
            if (k > 0) topk_select(raw, V, k, cand);
            for (int j = 0; j < max_logprobs; j++) {
                ids[j] = j < k ? cand[j].id : -1;
                lps[j] = j < k && rmax > -INFINITY ? (float)((double)cand[j].v - lse) : -INFINITY;
            }
        }
    }
done:
    free(cand);
    return status;
}
