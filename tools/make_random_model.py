#!/usr/bin/env python3
"""make_random_model.py — write a random GPT-2 checkpoint in Hugging Face layout
(config.json + model.safetensors, or shards + model.safetensors.index.json),
with NumPy only: the safetensors format is written by hand (8-byte little-endian
header length, JSON header with "__metadata__": {"format": "pt"} and per-tensor
dtype/shape/data_offsets, padded with spaces to a multiple of 8 bytes, tensors
back to back ordered by (element size descending, name) as the safetensors
library does). transformers' GPT2LMHeadModel.from_pretrained loads the result.

CLI:    python tools/make_random_model.py OUT_DIR [--n-embd 64 --n-layer 2 ...]
Python: from tools.make_random_model import make_random_model
        weights = make_random_model(out_dir, n_embd=64, dtype="bfloat16")
        # -> {"wte.weight": float32 array, "h.0.ln_1.weight": ..., ...}: the exact
        #    values written (after rounding to the stored dtype), keyed by logical
        #    name without the "transformer." prefix, buffers and lm_head excluded.
"""
import argparse
import json
import os

import numpy as np

ST_DTYPE = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu", "relu")


def to_bf16_bits(x):
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    u = u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))
    return (u >> np.uint32(16)).astype(np.uint16)


def bf16_bits_to_f32(b):
    return (b.astype(np.uint32) << np.uint32(16)).view(np.float32)


def encode(x, dtype):
    """float32 array -> (safetensors dtype string, stored array, float32 value as stored)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "float32":
        return "F32", x, x
    if dtype == "float16":
        h = x.astype(np.float16)
        return "F16", h, h.astype(np.float32)
    if dtype == "bfloat16":
        b = to_bf16_bits(x)
        return "BF16", b, bf16_bits_to_f32(b)
    raise ValueError(f"dtype must be one of {sorted(ST_DTYPE)}, got {dtype!r}")


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: (dtype_str, array)} with array holding the raw elements
    (any numpy dtype of the right itemsize; bf16 as uint16). Returns total data bytes."""
    size = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2, "I16": 2,
            "U8": 1, "I8": 1, "BOOL": 1}
    order = sorted(tensors, key=lambda n: (-size[tensors[n][0]], n))
    header = {"__metadata__": metadata if metadata is not None else {"format": "pt"}}
    offset = 0
    for name in order:
        dt, arr = tensors[name]
        nbytes = arr.size * arr.itemsize
        assert arr.itemsize == size[dt], (name, dt, arr.dtype)
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(len(hb).to_bytes(8, "little"))
        f.write(hb)
        for name in order:
            f.write(np.ascontiguousarray(tensors[name][1]).data)
    return offset


def config_dict(n_embd, n_layer, n_head, n_positions, vocab_size, dtype, activation, eps):
    eos = min(50256, vocab_size - 1)
    return {
        "activation_function": activation, "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1, "bos_token_id": eos, "embd_pdrop": 0.1, "eos_token_id": eos,
        "initializer_range": 0.02, "layer_norm_epsilon": eps, "model_type": "gpt2",
        "n_ctx": n_positions, "n_embd": n_embd, "n_head": n_head, "n_inner": None,
        "n_layer": n_layer, "n_positions": n_positions, "reorder_and_upcast_attn": False,
        "resid_pdrop": 0.1, "scale_attn_by_inverse_layer_idx": False, "scale_attn_weights": True,
        "summary_activation": None, "summary_first_dropout": 0.1, "summary_proj_to_labels": True,
        "summary_type": "cls_index", "summary_use_proj": True, "torch_dtype": dtype,
        "use_cache": True, "vocab_size": vocab_size,
    }


def make_random_model(out_dir, n_embd=64, n_layer=2, n_head=4, n_positions=128, vocab_size=512,
                      dtype="float32", key_style="hf", shards=1, seed=0, std=0.02,
                      activation="gelu_new", layer_norm_epsilon=1e-5, lm_head=False):
    """Writes the checkpoint; returns {logical name: float32 array as stored}.
    lm_head=True also writes an explicit (tied, equal) "lm_head.weight" (hf style only)."""
    if key_style not in ("hf", "original"):
        raise ValueError(f"key_style must be 'hf' or 'original', got {key_style!r}")
    if shards < 1:
        raise ValueError("shards must be >= 1")
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    C, L, P, V = n_embd, n_layer, n_positions, vocab_size

    def normal(*shape, scale=std):
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)

    logical = {"wte.weight": normal(V, C), "wpe.weight": normal(P, C, scale=std / 2)}
    for i in range(L):
        h = f"h.{i}."
        logical.update({
            h + "ln_1.weight": 1 + normal(C, scale=0.1), h + "ln_1.bias": normal(C, scale=0.1),
            h + "attn.c_attn.weight": normal(C, 3 * C), h + "attn.c_attn.bias": normal(3 * C),
            h + "attn.c_proj.weight": normal(C, C), h + "attn.c_proj.bias": normal(C),
            h + "ln_2.weight": 1 + normal(C, scale=0.1), h + "ln_2.bias": normal(C, scale=0.1),
            h + "mlp.c_fc.weight": normal(C, 4 * C), h + "mlp.c_fc.bias": normal(4 * C),
            h + "mlp.c_proj.weight": normal(4 * C, C), h + "mlp.c_proj.bias": normal(C),
        })
    logical["ln_f.weight"] = 1 + normal(C, scale=0.1)
    logical["ln_f.bias"] = normal(C, scale=0.1)

    prefix = "transformer." if key_style == "hf" else ""
    stored, values = {}, {}
    for name, x in logical.items():
        dt, arr, val = encode(x, dtype)
        stored[prefix + name] = (dt, arr)
        values[name] = val
    if lm_head and key_style == "hf":
        stored["lm_head.weight"] = stored["transformer.wte.weight"]
    if key_style == "original":   # the buffers of the original openai-community/gpt2 file
        causal = np.tril(np.ones((P, P), dtype=np.float32)).reshape(1, 1, P, P)
        for i in range(L):
            stored[f"h.{i}.attn.bias"] = ("F32", causal)
            stored[f"h.{i}.attn.masked_bias"] = ("F32", np.array(-1e4, dtype=np.float32))

    if shards == 1:
        write_safetensors(os.path.join(out_dir, "model.safetensors"), stored)
    else:
        names = list(stored)                 # logical order; contiguous, balanced by bytes
        total = sum(stored[n][1].nbytes for n in names)
        groups, acc = [[] for _ in range(shards)], 0
        for n in names:
            k = min(shards - 1, acc * shards // max(total, 1))
            groups[k].append(n)
            acc += stored[n][1].nbytes
        weight_map = {}
        for k, g in enumerate(groups):
            fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
            write_safetensors(os.path.join(out_dir, fname), {n: stored[n] for n in g})
            weight_map.update({n: fname for n in g})
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config_dict(C, L, n_head, P, V, dtype, activation, layer_norm_epsilon), f, indent=2)
    return values


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--n-embd", type=int, default=64)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-positions", type=int, default=128)
    ap.add_argument("--vocab-size", type=int, default=512)
    ap.add_argument("--dtype", choices=sorted(ST_DTYPE), default="float32")
    ap.add_argument("--key-style", choices=("hf", "original"), default="hf")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--std", type=float, default=0.02, help="init scale (GPT-2 uses 0.02)")
    ap.add_argument("--activation", choices=ACTIVATIONS, default="gelu_new")
    ap.add_argument("--lm-head", action="store_true", help="also write a tied lm_head.weight")
    a = ap.parse_args()
    make_random_model(a.out_dir, n_embd=a.n_embd, n_layer=a.n_layer, n_head=a.n_head,
                      n_positions=a.n_positions, vocab_size=a.vocab_size, dtype=a.dtype,
                      key_style=a.key_style, shards=a.shards, seed=a.seed, std=a.std,
                      activation=a.activation, lm_head=a.lm_head)


if __name__ == "__main__":
    main()
