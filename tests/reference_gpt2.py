"""reference_gpt2.py — an independent GPT-2 in NumPy float64, the oracle for the
engine's logits. Written from the GPT-2 paper/HF semantics, sharing no code with
the engine: dense causal attention over the whole prompt, no KV cache.

weights: {logical name: array} as tools/make_random_model.py returns them
("wte.weight", "h.0.attn.c_attn.weight" (Conv1D [in, out]), ..., "ln_f.bias").
"""
import math

import numpy as np


def _layernorm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _act(x, name):
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if name == "gelu":
        from math import erf
        return 0.5 * x * (1.0 + np.vectorize(erf)(x / math.sqrt(2.0)))
    if name == "relu":
        return np.maximum(x, 0.0)
    raise ValueError(name)


def reference_logits(weights, config, ids):
    """Logits (len(ids), vocab_size) in float64 for one prompt."""
    W = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    C, H = config["n_embd"], config["n_head"]
    D = C // H
    eps = config.get("layer_norm_epsilon", 1e-5)
    act = config.get("activation_function", "gelu_new")
    ids = np.asarray(ids)
    T = len(ids)
    x = W["wte.weight"][ids] + W["wpe.weight"][np.arange(T)]
    mask = np.triu(np.full((T, T), -np.inf), k=1)
    for i in range(config["n_layer"]):
        p = f"h.{i}."
        h = _layernorm(x, W[p + "ln_1.weight"], W[p + "ln_1.bias"], eps)
        qkv = h @ W[p + "attn.c_attn.weight"] + W[p + "attn.c_attn.bias"]
        q, k, v = (qkv[:, j * C:(j + 1) * C].reshape(T, H, D).transpose(1, 0, 2) for j in range(3))
        s = q @ k.transpose(0, 2, 1) / math.sqrt(D) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(T, C)
        x = x + a @ W[p + "attn.c_proj.weight"] + W[p + "attn.c_proj.bias"]
        h = _layernorm(x, W[p + "ln_2.weight"], W[p + "ln_2.bias"], eps)
        f = _act(h @ W[p + "mlp.c_fc.weight"] + W[p + "mlp.c_fc.bias"], act)
        x = x + f @ W[p + "mlp.c_proj.weight"] + W[p + "mlp.c_proj.bias"]
    x = _layernorm(x, W["ln_f.weight"], W["ln_f.bias"], eps)
    return x @ W["wte.weight"].T


def greedy_rollout(weights, config, ids, n):
    """argmax continuation of n tokens (float64)."""
    ids = list(ids)
    out = []
    for _ in range(n):
        t = int(np.argmax(reference_logits(weights, config, ids)[-1]))
        out.append(t)
        ids.append(t)
    return out


def rel_error(got, ref):
    """max |got - ref| / max |ref| — the tolerance measure used by the logits tests."""
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.max(np.abs(np.asarray(got, dtype=np.float64) - ref)) / np.max(np.abs(ref)))
