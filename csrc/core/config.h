/* config.h — GPT2Config: the model hyper-parameters, read from a Hugging Face
 * config.json (transformers' GPT2Config keys; the attribute_map aliases
 * hidden_size / num_hidden_layers / num_attention_heads / max_position_embeddings
 * and the legacy n_ctx are accepted too). */
#ifndef GPT2_CONFIG_H
#define GPT2_CONFIG_H

#include "common.h"
#include "json.h"

typedef enum Activation {
    ACT_GELU_TANH,   /* "gelu_new", "gelu_pytorch_tanh", "gelu_fast" */
    ACT_GELU_ERF,    /* "gelu" */
    ACT_RELU,        /* "relu" */
} Activation;

typedef struct GPT2Config {
    int n_embd;        /* C */
    int n_layer;       /* L */
    int n_head;        /* NH */
    int head_size;     /* C / NH */
    int n_positions;   /* maximum sequence length */
    int vocab_size;    /* V */
    float layer_norm_epsilon;
    Activation activation;
} GPT2Config;

/* Reads and validates config.json. Missing/mistyped keys: GPT2_ERR_FORMAT;
 * well-formed values the engine cannot run (n_embd % n_head != 0, an unknown
 * activation_function, n_inner != 4*n_embd, ...): GPT2_ERR_VALUE. */
Status config_load(GPT2Config *cfg, const char *config_json_path, Error *err);
/* The same from an already parsed document (messages do not name a file). */
Status config_from_json(GPT2Config *cfg, const JsonValue *root, Error *err);
const char *activation_name(Activation a);

#endif /* GPT2_CONFIG_H */
