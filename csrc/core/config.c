/* config.c — GPT2Config from config.json (see config.h). Defaults follow
 * transformers' GPT2Config where a key is optional there
 * (layer_norm_epsilon 1e-5, activation_function "gelu_new"). */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_MAX_DIM (1 << 24)        /* generous sanity bound for every size */
#define CONFIG_MAX_FILE (16u << 20)

const char *activation_name(Activation a)
{
    switch (a) {
    case ACT_GELU_TANH: return "gelu_tanh";
    case ACT_GELU_ERF: return "gelu";
    case ACT_RELU: return "relu";
    }
    return "?";
}

/* The first of `keys` that is present (NULL-terminated list), or NULL. */
static const JsonValue *get_any(const JsonValue *root, const char *const *keys, const char **which)
{
    for (; *keys; keys++) {
        const JsonValue *v = json_get(root, *keys);
        if (v && v->type != JSON_NULL) { *which = *keys; return v; }
    }
    return NULL;
}

static Status get_dim(const JsonValue *root, const char *const *keys, int *out, Error *err)
{
    const char *key = keys[0];
    const JsonValue *v = get_any(root, keys, &key);
    if (!v) return error_set(err, GPT2_ERR_FORMAT, "missing key \"%s\"", keys[0]);
    if (v->type != JSON_NUMBER || !v->is_int)
        return error_set(err, GPT2_ERR_FORMAT, "\"%s\" must be an integer, got a %s",
                         key, json_type_name(v->type));
    if (v->integer <= 0 || v->integer > CONFIG_MAX_DIM)
        return error_set(err, GPT2_ERR_FORMAT, "\"%s\" = %lld is out of range [1, %d]",
                         key, (long long)v->integer, CONFIG_MAX_DIM);
    *out = (int)v->integer;
    return GPT2_OK;
}

static Status check_flag(const JsonValue *root, const char *key, int supported, Error *err)
{
    const JsonValue *v = json_get(root, key);
    if (!v || v->type == JSON_NULL) return GPT2_OK;
    if (v->type != JSON_BOOL)
        return error_set(err, GPT2_ERR_FORMAT, "\"%s\" must be true or false", key);
    if (v->boolean != supported)
        return error_set(err, GPT2_ERR_VALUE, "\"%s\": %s is not supported", key,
                         v->boolean ? "true" : "false");
    return GPT2_OK;
}

Status config_from_json(GPT2Config *cfg, const JsonValue *root, Error *err)
{
    static const char *const k_embd[] = {"n_embd", "hidden_size", NULL};
    static const char *const k_layer[] = {"n_layer", "num_hidden_layers", NULL};
    static const char *const k_head[] = {"n_head", "num_attention_heads", NULL};
    static const char *const k_pos[] = {"n_positions", "max_position_embeddings", "n_ctx", NULL};
    static const char *const k_vocab[] = {"vocab_size", NULL};
    Status s;
    memset(cfg, 0, sizeof *cfg);
    if (!root || root->type != JSON_OBJECT)
        return error_set(err, GPT2_ERR_FORMAT, "top level must be a JSON object");
    const JsonValue *mt = json_get(root, "model_type");
    if (mt && mt->type == JSON_STRING && strcmp(mt->str, "gpt2") != 0)
        return error_set(err, GPT2_ERR_VALUE,
                         "model_type \"%.64s\" is not supported (only \"gpt2\")", mt->str);
    if ((s = get_dim(root, k_embd, &cfg->n_embd, err)) != GPT2_OK ||
        (s = get_dim(root, k_layer, &cfg->n_layer, err)) != GPT2_OK ||
        (s = get_dim(root, k_head, &cfg->n_head, err)) != GPT2_OK ||
        (s = get_dim(root, k_pos, &cfg->n_positions, err)) != GPT2_OK ||
        (s = get_dim(root, k_vocab, &cfg->vocab_size, err)) != GPT2_OK)
        return s;
    if (cfg->n_embd % cfg->n_head != 0)
        return error_set(err, GPT2_ERR_VALUE,
                         "n_embd (%d) is not divisible by n_head (%d)",
                         cfg->n_embd, cfg->n_head);
    cfg->head_size = cfg->n_embd / cfg->n_head;

    const JsonValue *eps = json_get(root, "layer_norm_epsilon");
    cfg->layer_norm_epsilon = 1e-5f;
    if (eps && eps->type != JSON_NULL) {
        if (eps->type != JSON_NUMBER || !(eps->number > 0) || !isfinite(eps->number) || eps->number >= 1)
            return error_set(err, GPT2_ERR_FORMAT,
                             "\"layer_norm_epsilon\" must be a number in (0, 1)");
        cfg->layer_norm_epsilon = (float)eps->number;
    }

    const JsonValue *act = json_get(root, "activation_function");
    const char *a = "gelu_new";
    if (act && act->type != JSON_NULL) {
        if (act->type != JSON_STRING)
            return error_set(err, GPT2_ERR_FORMAT, "\"activation_function\" must be a string");
        a = act->str;
    }
    if (!strcmp(a, "gelu_new") || !strcmp(a, "gelu_pytorch_tanh") || !strcmp(a, "gelu_fast"))
        cfg->activation = ACT_GELU_TANH;
    else if (!strcmp(a, "gelu")) cfg->activation = ACT_GELU_ERF;
    else if (!strcmp(a, "relu")) cfg->activation = ACT_RELU;
    else
        return error_set(err, GPT2_ERR_VALUE,
                         "activation_function \"%.64s\" is not supported (use one of "
                         "gelu_new, gelu_pytorch_tanh, gelu_fast, gelu, relu)", a);

    const JsonValue *inner = json_get(root, "n_inner");
    if (inner && inner->type != JSON_NULL) {
        if (inner->type != JSON_NUMBER || !inner->is_int)
            return error_set(err, GPT2_ERR_FORMAT, "\"n_inner\" must be an integer or null");
        if (inner->integer != 4 * (int64_t)cfg->n_embd)
            return error_set(err, GPT2_ERR_VALUE,
                             "n_inner (%lld) != 4*n_embd (%d) is not supported",
                             (long long)inner->integer, 4 * cfg->n_embd);
    }
    /* Variants of the attention math we do not implement. */
    if ((s = check_flag(root, "scale_attn_weights", 1, err)) != GPT2_OK ||
        (s = check_flag(root, "scale_attn_by_inverse_layer_idx", 0, err)) != GPT2_OK ||
        (s = check_flag(root, "add_cross_attention", 0, err)) != GPT2_OK)
        return s;
    return GPT2_OK;
}

Status config_load(GPT2Config *cfg, const char *path, Error *err)
{
    memset(cfg, 0, sizeof *cfg);
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        return error_set(err, e == ENOENT ? GPT2_ERR_NOT_FOUND : GPT2_ERR_IO,
                         "cannot open '%s': %s", path, strerror(e));
    }
    char *buf = malloc(CONFIG_MAX_FILE);
    if (!buf) { fclose(f); return error_set(err, GPT2_ERR_NOMEM, "out of memory"); }
    size_t n = fread(buf, 1, CONFIG_MAX_FILE, f);
    int bad = ferror(f), too_big = n == CONFIG_MAX_FILE;
    fclose(f);
    Status s;
    if (bad) s = error_set(err, GPT2_ERR_IO, "error reading '%s'", path);
    else if (too_big) s = error_set(err, GPT2_ERR_FORMAT, "'%s' is larger than %u bytes", path, CONFIG_MAX_FILE);
    else {
        JsonDoc doc;
        s = json_parse(&doc, buf, n, err);
        if (s == GPT2_OK) {
            s = config_from_json(cfg, doc.root, err);
            json_doc_free(&doc);
        }
        if (s != GPT2_OK) error_prefix(err, "%s", path);
    }
    free(buf);
    return s;
}
