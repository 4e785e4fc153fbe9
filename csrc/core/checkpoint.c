/* checkpoint.c — open a GPT-2 checkpoint directory (single file or sharded),
 * resolve every tensor by logical name with shape/dtype checks, and build host
 * weights in a compute dtype (zero copy into the mmap, or one converted copy).
 *
 * Logical tensor order (index i): 0 wte (V, C), 1 wpe (P, C), then per layer l
 * at 2 + 12*l the 12 tensors of LAYER_SPEC, then ln_f weight, ln_f bias. */
#include "checkpoint.h"
#include "json.h"
#include "safetensors.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PER_LAYER 12
#define NAME_MAX_LEN 256

/* Per-layer tensors: name suffix and shape in units of C (0 = no dimension). */
static const struct { const char *suffix; int d0, d1; } LAYER_SPEC[PER_LAYER] = {
    {"ln_1.weight", 1, 0},       {"ln_1.bias", 1, 0},
    {"attn.c_attn.weight", 1, 3}, {"attn.c_attn.bias", 3, 0},
    {"attn.c_proj.weight", 1, 1}, {"attn.c_proj.bias", 1, 0},
    {"ln_2.weight", 1, 0},       {"ln_2.bias", 1, 0},
    {"mlp.c_fc.weight", 1, 4},   {"mlp.c_fc.bias", 4, 0},
    {"mlp.c_proj.weight", 4, 1}, {"mlp.c_proj.bias", 1, 0},
};

struct Checkpoint {
    char *dir;
    GPT2Config cfg;
    SafeTensors *shards;          /* (n_shards) */
    char **shard_names;           /* (n_slots) file names inside dir, owned */
    size_t n_shards, n_slots;
    const char *prefix;           /* "transformer." (save_pretrained) or "" (original) */
    const STTensor **tensors;     /* (n_tensors) in logical order */
    int *tensor_shard;            /* (n_tensors) */
    size_t n_tensors;             /* 4 + 12*L */
    DType dtype;
};

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int file_exists(const char *dir, const char *name)
{
    char *p = path_join(dir, name);
    struct stat sb;
    int ok = p && stat(p, &sb) == 0;
    free(p);
    return ok;
}

/* Logical name and expected shape of tensor i. Returns ndim. */
static int tensor_spec(const Checkpoint *ck, size_t i, char *name, int64_t shape[2])
{
    const GPT2Config *c = &ck->cfg;
    int64_t C = c->n_embd;
    size_t L = (size_t)c->n_layer;
    if (i == 0) { snprintf(name, NAME_MAX_LEN, "%swte.weight", ck->prefix); shape[0] = c->vocab_size; shape[1] = C; return 2; }
    if (i == 1) { snprintf(name, NAME_MAX_LEN, "%swpe.weight", ck->prefix); shape[0] = c->n_positions; shape[1] = C; return 2; }
    if (i >= 2 + PER_LAYER * L) {
        snprintf(name, NAME_MAX_LEN, "%sln_f.%s", ck->prefix, i == 2 + PER_LAYER * L ? "weight" : "bias");
        shape[0] = C;
        return 1;
    }
    size_t l = (i - 2) / PER_LAYER, k = (i - 2) % PER_LAYER;
    snprintf(name, NAME_MAX_LEN, "%sh.%zu.%s", ck->prefix, l, LAYER_SPEC[k].suffix);
    shape[0] = LAYER_SPEC[k].d0 * C;
    shape[1] = LAYER_SPEC[k].d1 * C;
    return LAYER_SPEC[k].d1 ? 2 : 1;
}

static void shape_str(char *buf, size_t n, const int64_t *shape, int ndim)
{
    size_t off = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && off < n; d++)
        off += (size_t)snprintf(buf + off, n - off, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (off < n) snprintf(buf + off, n - off, "]");
}

/* Finds `name`: via the index's weight_map when sharded, else in the one file.
 * Sets *t = NULL when absent; errors only for an inconsistent index. */
static Status find_tensor(const Checkpoint *ck, const JsonValue *weight_map, const char *name,
                          const STTensor **t, int *shard, Error *err)
{
    *t = NULL;
    *shard = 0;
    if (!weight_map) { *t = safetensors_find(&ck->shards[0], name); return GPT2_OK; }
    const JsonValue *f = json_get(weight_map, name);
    if (!f) return GPT2_OK;
    for (size_t s = 0; s < ck->n_shards; s++)
        if (strcmp(ck->shard_names[s], f->str) == 0) {
            *shard = (int)s;
            *t = safetensors_find(&ck->shards[s], name);
            if (!*t)
                return error_set(err, GPT2_ERR_FORMAT,
                                 "model.safetensors.index.json maps tensor '%s' to '%s', "
                                 "but that file has no such tensor", name, f->str);
            return GPT2_OK;
        }
    return error_set(err, GPT2_ERR_INTERNAL, "shard '%s' not opened", f->str);
}

/* Reads model.safetensors.index.json and opens each distinct shard once. */
static Status open_sharded(Checkpoint *ck, JsonDoc *index, const JsonValue **weight_map, Error *err)
{
    char *path = path_join(ck->dir, "model.safetensors.index.json");
    if (!path) return error_set(err, GPT2_ERR_NOMEM, "out of memory");
    Status s = GPT2_OK;
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) { s = error_set(err, GPT2_ERR_IO, "cannot open '%s': %s", path, strerror(errno)); goto done; }
    long n = (fseek(f, 0, SEEK_END) == 0) ? ftell(f) : -1;
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) { fclose(f); s = error_set(err, GPT2_ERR_IO, "cannot read '%s'", path); goto done; }
    buf = malloc((size_t)n + 1);
    if (!buf) { fclose(f); s = error_set(err, GPT2_ERR_NOMEM, "out of memory"); goto done; }
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) { s = error_set(err, GPT2_ERR_IO, "short read of '%s'", path); goto done; }
    if ((s = json_parse(index, buf, got, err)) != GPT2_OK) { error_prefix(err, "%s", path); goto done; }
    const JsonValue *wm = json_get(index->root, "weight_map");
    if (!wm || wm->type != JSON_OBJECT) {
        s = error_set(err, GPT2_ERR_FORMAT, "%s: missing \"weight_map\" object", path);
        goto done;
    }
    ck->shard_names = calloc(wm->count ? wm->count : 1, sizeof *ck->shard_names);
    ck->shards = calloc(wm->count ? wm->count : 1, sizeof *ck->shards);
    if (!ck->shard_names || !ck->shards) { s = error_set(err, GPT2_ERR_NOMEM, "out of memory"); goto done; }
    ck->n_slots = wm->count ? wm->count : 1;
    for (const JsonValue *e = wm->first; e; e = e->next) {
        if (e->type != JSON_STRING || e->str_len == 0 || strchr(e->str, '/') ||
            strcmp(e->str, "..") == 0 || strcmp(e->str, ".") == 0 || strlen(e->str) != e->str_len) {
            s = error_set(err, GPT2_ERR_FORMAT, "%s: weight_map entry for '%s' is not a file name",
                          path, e->key);
            goto done;
        }
        size_t k = 0;
        while (k < ck->n_shards && strcmp(ck->shard_names[k], e->str) != 0) k++;
        if (k < ck->n_shards) continue;
        char *sp = path_join(ck->dir, e->str);
        ck->shard_names[k] = strdup(e->str);
        if (!sp || !ck->shard_names[k]) { free(sp); s = error_set(err, GPT2_ERR_NOMEM, "out of memory"); goto done; }
        s = safetensors_open(&ck->shards[k], sp, err);
        free(sp);
        if (s != GPT2_OK) goto done;
        ck->n_shards++;
    }
    if (ck->n_shards == 0) s = error_set(err, GPT2_ERR_FORMAT, "%s: \"weight_map\" is empty", path);
    *weight_map = wm;
done:
    free(buf);
    free(path);
    return s;
}

static Status resolve_tensors(Checkpoint *ck, const JsonValue *weight_map, Error *err)
{
    const GPT2Config *c = &ck->cfg;
    char name[NAME_MAX_LEN], got[128], want[128];
    const STTensor *t;
    int shard;
    Status s;
    /* Key style: save_pretrained prefixes "transformer.", the original file does not. */
    ck->prefix = "transformer.";
    if ((s = find_tensor(ck, weight_map, "transformer.wte.weight", &t, &shard, err)) != GPT2_OK) return s;
    if (!t) {
        ck->prefix = "";
        if ((s = find_tensor(ck, weight_map, "wte.weight", &t, &shard, err)) != GPT2_OK) return s;
        if (!t)
            return error_set(err, GPT2_ERR_FORMAT,
                             "missing tensor 'transformer.wte.weight' (or 'wte.weight'): "
                             "not a GPT-2 checkpoint?");
    }
    /* Before sizing tables by n_layer, check the last layer exists at all. */
    snprintf(name, sizeof name, "%sh.%d.ln_1.weight", ck->prefix, c->n_layer - 1);
    if ((s = find_tensor(ck, weight_map, name, &t, &shard, err)) != GPT2_OK) return s;
    if (!t)
        return error_set(err, GPT2_ERR_FORMAT, "missing tensor '%s' (config.json has n_layer=%d)",
                         name, c->n_layer);
    ck->n_tensors = 4 + (size_t)PER_LAYER * (size_t)c->n_layer;
    ck->tensors = calloc(ck->n_tensors, sizeof *ck->tensors);
    ck->tensor_shard = calloc(ck->n_tensors, sizeof *ck->tensor_shard);
    if (!ck->tensors || !ck->tensor_shard) return error_set(err, GPT2_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < ck->n_tensors; i++) {
        int64_t shape[2];
        int ndim = tensor_spec(ck, i, name, shape);
        if ((s = find_tensor(ck, weight_map, name, &t, &shard, err)) != GPT2_OK) return s;
        if (!t)
            return error_set(err, GPT2_ERR_FORMAT, "missing tensor '%s' (config.json has n_layer=%d)",
                             name, c->n_layer);
        const char *file = ck->shard_names ? ck->shard_names[shard] : "model.safetensors";
        if (!t->supported)
            return error_set(err, GPT2_ERR_FORMAT,
                             "tensor '%s' in %s has dtype %s; only F32, F16 and BF16 are supported",
                             name, file, t->dtype_name);
        if (t->ndim != ndim || t->shape[0] != shape[0] || (ndim == 2 && t->shape[1] != shape[1])) {
            shape_str(got, sizeof got, t->shape, t->ndim);
            shape_str(want, sizeof want, shape, ndim);
            return error_set(err, GPT2_ERR_FORMAT,
                             "tensor '%s' in %s has shape %s, expected %s from config.json "
                             "(n_embd=%d, vocab_size=%d, n_positions=%d)", name, file, got, want,
                             c->n_embd, c->vocab_size, c->n_positions);
        }
        ck->tensors[i] = t;
        ck->tensor_shard[i] = shard;
    }
    ck->dtype = ck->tensors[0]->dtype;
    /* More layers stored than config.json declares: the config contradicts the file. */
    snprintf(name, sizeof name, "%sh.%d.ln_1.weight", ck->prefix, c->n_layer);
    if ((s = find_tensor(ck, weight_map, name, &t, &shard, err)) != GPT2_OK) return s;
    if (t)
        return error_set(err, GPT2_ERR_FORMAT, "checkpoint has tensor '%s' but config.json says n_layer=%d",
                         name, c->n_layer);
    /* An untied lm_head is ignored (we tie to wte), but it must have wte's shape. */
    if ((s = find_tensor(ck, weight_map, "lm_head.weight", &t, &shard, err)) != GPT2_OK) return s;
    if (t && (t->ndim != 2 || t->shape[0] != c->vocab_size || t->shape[1] != c->n_embd)) {
        int64_t want_shape[2] = {c->vocab_size, c->n_embd};
        shape_str(got, sizeof got, t->shape, t->ndim);
        shape_str(want, sizeof want, want_shape, 2);
        return error_set(err, GPT2_ERR_FORMAT,
                         "tensor 'lm_head.weight' has shape %s, expected %s (vocab_size, n_embd)", got, want);
    }
    return GPT2_OK;
}

Status checkpoint_open(Checkpoint **out, const char *model_dir, Error *err)
{
    *out = NULL;
    struct stat sb;
    if (!model_dir || stat(model_dir, &sb) != 0)
        return error_set(err, GPT2_ERR_NOT_FOUND, "model directory '%s' does not exist",
                         model_dir ? model_dir : "(null)");
    if (!S_ISDIR(sb.st_mode))
        return error_set(err, GPT2_ERR_NOT_FOUND, "model path '%s' is not a directory", model_dir);
    Checkpoint *ck = calloc(1, sizeof *ck);
    JsonDoc index = {0};
    const JsonValue *weight_map = NULL;
    char *cfg_path = NULL;
    Status s;
    if (!ck || !(ck->dir = strdup(model_dir))) { s = error_set(err, GPT2_ERR_NOMEM, "out of memory"); goto fail; }
    if (!(cfg_path = path_join(model_dir, "config.json"))) { s = error_set(err, GPT2_ERR_NOMEM, "out of memory"); goto fail; }
    if ((s = config_load(&ck->cfg, cfg_path, err)) != GPT2_OK) goto fail;
    if (file_exists(model_dir, "model.safetensors")) {
        char *p = path_join(model_dir, "model.safetensors");
        ck->shards = calloc(1, sizeof *ck->shards);
        if (!p || !ck->shards) { free(p); s = error_set(err, GPT2_ERR_NOMEM, "out of memory"); goto fail; }
        s = safetensors_open(&ck->shards[0], p, err);
        free(p);
        if (s != GPT2_OK) goto fail;
        ck->n_shards = 1;
    } else if (file_exists(model_dir, "model.safetensors.index.json")) {
        if ((s = open_sharded(ck, &index, &weight_map, err)) != GPT2_OK) goto fail;
    } else {
        s = error_set(err, GPT2_ERR_NOT_FOUND,
                      "no model.safetensors or model.safetensors.index.json in '%s'%s", model_dir,
                      file_exists(model_dir, "pytorch_model.bin")
                          ? " (pytorch_model.bin found: only safetensors checkpoints are supported)" : "");
        goto fail;
    }
    if ((s = resolve_tensors(ck, weight_map, err)) != GPT2_OK) {
        error_prefix(err, "%s", model_dir);
        goto fail;
    }
    json_doc_free(&index);
    free(cfg_path);
    *out = ck;
    return GPT2_OK;
fail:
    json_doc_free(&index);
    free(cfg_path);
    checkpoint_close(ck);
    return s;
}

void checkpoint_close(Checkpoint *ck)
{
    if (!ck) return;
    for (size_t k = 0; k < ck->n_shards; k++) safetensors_close(&ck->shards[k]);
    for (size_t k = 0; ck->shard_names && k < ck->n_slots; k++) free(ck->shard_names[k]);
    free(ck->shards);
    free(ck->shard_names);
    free(ck->tensors);
    free(ck->tensor_shard);
    free(ck->dir);
    free(ck);
}

const GPT2Config *checkpoint_config(const Checkpoint *ck) { return &ck->cfg; }
DType checkpoint_dtype(const Checkpoint *ck) { return ck->dtype; }

/* ---------------------------------------------------------------- weights */

/* Where tensor i goes in GPT2Weights. */
static void **weight_slot(GPT2Weights *w, size_t i, size_t n)
{
    if (i == 0) return &w->wte;
    if (i == 1) return &w->wpe;
    if (i == n - 2) return &w->ln_f_w;
    if (i == n - 1) return &w->ln_f_b;
    GPT2LayerWeights *lw = &w->layers[(i - 2) / PER_LAYER];
    void **fields[PER_LAYER] = {
        &lw->ln_1_w, &lw->ln_1_b, &lw->c_attn_w, &lw->c_attn_b, &lw->attn_proj_w, &lw->attn_proj_b,
        &lw->ln_2_w, &lw->ln_2_b, &lw->c_fc_w, &lw->c_fc_b, &lw->mlp_proj_w, &lw->mlp_proj_b,
    };
    return fields[(i - 2) % PER_LAYER];
}

typedef struct ConvertJob {
    const Checkpoint *ck;
    const size_t *elem_start;     /* (n_tensors + 1) prefix sums of numel */
    uint8_t *dst;
    DType dtype;
    size_t lo, hi;                /* element range of the concatenation this thread converts */
} ConvertJob;

static void *convert_range(void *arg)
{
    ConvertJob *j = arg;
    size_t es = dtype_size(j->dtype);
    for (size_t i = 0; i < j->ck->n_tensors; i++) {
        size_t a = j->elem_start[i], b = j->elem_start[i + 1];
        size_t lo = GPT2_MAX(a, j->lo), hi = GPT2_MIN(b, j->hi);
        if (lo >= hi) continue;
        const STTensor *t = j->ck->tensors[i];
        dtype_convert(j->dst + lo * es, j->dtype, (const uint8_t *)t->data + (lo - a) * t->elem_size,
                      t->dtype, hi - lo);
    }
    return NULL;
}

Status checkpoint_load_weights(Checkpoint *ck, DType dtype, int allow_zero_copy, GPT2Weights *w,
                               Error *err)
{
    memset(w, 0, sizeof *w);
    w->dtype = dtype;
    size_t n = ck->n_tensors, es = dtype_size(dtype), total = 0;
    size_t *elem_start = NULL;
    int zero_copy = allow_zero_copy;
    for (size_t i = 0; i < n; i++) {
        const STTensor *t = ck->tensors[i];
        if (t->dtype != dtype || (uintptr_t)t->data % es != 0) zero_copy = 0;
        total += t->numel;   /* cannot overflow: each tensor lies inside a mapped file */
    }
    if (total > SIZE_MAX / es) return error_set(err, GPT2_ERR_NOMEM, "weights too large");
    w->nbytes = total * es;
    w->layers = calloc(ck->cfg.n_layer, sizeof *w->layers);
    if (!w->layers) return error_set(err, GPT2_ERR_NOMEM, "out of memory allocating layer table");
    if (zero_copy) {
        for (size_t i = 0; i < n; i++) *weight_slot(w, i, n) = (void *)ck->tensors[i]->data;
        return GPT2_OK;
    }
    if (posix_memalign(&w->storage, 64, w->nbytes ? w->nbytes : 64) != 0) {
        w->storage = NULL;
        gpt2_weights_free(w);
        return error_set(err, GPT2_ERR_NOMEM, "out of memory allocating %zu bytes of %s weights",
                         total * es, dtype_name(dtype));
    }
    elem_start = malloc((n + 1) * sizeof *elem_start);
    if (!elem_start) { gpt2_weights_free(w); return error_set(err, GPT2_ERR_NOMEM, "out of memory"); }
    elem_start[0] = 0;
    for (size_t i = 0; i < n; i++) {
        elem_start[i + 1] = elem_start[i] + ck->tensors[i]->numel;
        *weight_slot(w, i, n) = (uint8_t *)w->storage + elem_start[i] * es;
    }
    /* One pass, split into equal element ranges over the concatenation of all
     * tensors; small models stay on this thread. */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nt = total < (1u << 20) ? 1 : (int)GPT2_MAX(1, GPT2_MIN(ncpu, 16));
    ConvertJob jobs[16];
    pthread_t tids[16];
    int started[16] = {0};
    for (int k = 0; k < nt; k++) {
        jobs[k] = (ConvertJob){.ck = ck, .elem_start = elem_start, .dst = w->storage, .dtype = dtype,
                               .lo = total / nt * k, .hi = k == nt - 1 ? total : total / nt * (k + 1)};
        if (k > 0) started[k] = pthread_create(&tids[k], NULL, convert_range, &jobs[k]) == 0;
    }
    convert_range(&jobs[0]);
    for (int k = 1; k < nt; k++) {
        if (started[k]) pthread_join(tids[k], NULL);
        else convert_range(&jobs[k]);       /* thread creation failed: do it here */
    }
    free(elem_start);
    return GPT2_OK;
}

void gpt2_weights_free(GPT2Weights *w)
{
    if (!w) return;
    free(w->storage);
    free(w->layers);
    memset(w, 0, sizeof *w);
}
