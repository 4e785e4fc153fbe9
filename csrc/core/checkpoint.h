/* checkpoint.h — a GPT-2 checkpoint directory in Hugging Face layout:
 * config.json plus model.safetensors, or shards listed by
 * model.safetensors.index.json ({"weight_map": {tensor: file}}).
 *
 * Both key styles are understood: transformers' save_pretrained
 * ("transformer.h.0.attn.c_attn.weight", optional tied "lm_head.weight") and the
 * original openai-community/gpt2 file ("h.0.attn.c_attn.weight", with
 * attn.bias / attn.masked_bias buffers that are ignored). Conv1D weights are
 * stored [in, out] and handed out that way. Every tensor's shape is checked
 * against config.json before anything is read.
 */
#ifndef GPT2_CHECKPOINT_H
#define GPT2_CHECKPOINT_H

#include "common.h"
#include "config.h"

typedef struct Checkpoint Checkpoint; /* opaque: open files, mmaps, key style */

/* Opens model_dir, reads config.json, mmaps and validates the safetensors
 * file(s) and checks that every GPT-2 tensor is present with the right shape. */
Status checkpoint_open(Checkpoint **out, const char *model_dir, Error *err);
void checkpoint_close(Checkpoint *ck);      /* NULL-safe */
const GPT2Config *checkpoint_config(const Checkpoint *ck);
/* Stored dtype of the weights (F32/F16/BF16; mixed -> that of wte). */
DType checkpoint_dtype(const Checkpoint *ck);

/* The weights in host memory, every pointer in `dtype`. */
typedef struct GPT2LayerWeights {
    void *ln_1_w, *ln_1_b;           /* (C) */
    void *c_attn_w, *c_attn_b;       /* (C, 3C), (3C)   Conv1D [in, out] */
    void *attn_proj_w, *attn_proj_b; /* (C, C), (C) */
    void *ln_2_w, *ln_2_b;           /* (C) */
    void *c_fc_w, *c_fc_b;           /* (C, 4C), (4C) */
    void *mlp_proj_w, *mlp_proj_b;   /* (4C, C), (C) */
} GPT2LayerWeights;

typedef struct GPT2Weights {
    DType dtype;
    void *wte;                       /* (V, C)  also the tied lm_head */
    void *wpe;                       /* (n_positions, C) */
    GPT2LayerWeights *layers;        /* (L) */
    void *ln_f_w, *ln_f_b;           /* (C) */
    void *storage;                   /* owned host allocation, or NULL when zero-copy */
    size_t nbytes;                   /* bytes of all tensors in `dtype` */
} GPT2Weights;

/* Fills w. Zero copy (pointers into the read-only mmap, storage NULL; valid
 * while ck is open; never write through them) when allow_zero_copy and every tensor is stored in `dtype` at an
 * aligned address; otherwise one allocation of exactly nbytes holding the
 * tensors back to back in the order wte, wpe, layer 0 (ln_1_w ... mlp_proj_b),
 * ..., ln_f_w, ln_f_b, converted in one multi-threaded pass. */
Status checkpoint_load_weights(Checkpoint *ck, DType dtype, int allow_zero_copy, GPT2Weights *w,
                               Error *err);
void gpt2_weights_free(GPT2Weights *w);  /* frees storage + layers array; safe twice */

#endif /* GPT2_CHECKPOINT_H */
