"""gpt2_engine.ops — the engine's low-level attention ops on NumPy arrays.

For tests and notebooks: each function copies its inputs to the device, runs the
engine's own kernel (or CPU implementation), and copies the result back as
float32. Inputs are float32 arrays (anything np.asarray accepts); ``dtype`` says
which precision the op runs in ("float32", "float16", "bfloat16"): inputs are
rounded to it on the way in, exactly as the engine stores them.

Shapes (vLLM's names): T query tokens, S sequences, H heads, D head size,
NB cache blocks, BS block size.

    k_cache, v_cache : (NB, H, BS, D)   the paged KV cache of one layer
    block_tables     : (S, max_blocks)  physical block of each logical block
    seq_lens         : (S,)             context length incl. this step's tokens
    query_start_loc  : (S + 1,)         cu_seqlens of the query tokens

Query token i of sequence s sits at position ``seq_lens[s] - q_len(s) + i`` and
attends to cache positions ``0 .. position`` (its own K/V are already cached).
"""
import math

import numpy as np

from . import _C

__all__ = ["paged_attention", "attention_bench", "reshape_and_cache", "merge_attn_states"]

_DTYPES = ("float32", "float16", "bfloat16")
_BACKENDS = ("CPU", "PAGED", "FLASH")


def _f32(x, name):
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinity")
    return a


def _i32(x, name):
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.int32)


def _check_dtype(dtype):
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")


def _check_backend(name):
    if not isinstance(name, str) or name.upper() not in _BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; valid names: "
                         f"{', '.join(_BACKENDS)}")


def _attention_inputs(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc,
                      num_decodes, scale, dtype, allow_shapes=False):
    """Validates and normalises the inputs of an attention call."""
    _check_dtype(dtype)
    q = _f32(q, "q")
    cache_is_shape = allow_shapes and isinstance(k_cache, tuple)
    if cache_is_shape:
        kshape = tuple(int(n) for n in k_cache)
        v_cache = kshape if v_cache is None else v_cache
    else:
        k_cache, v_cache = _f32(k_cache, "k_cache"), _f32(v_cache, "v_cache")
        kshape = k_cache.shape
        if v_cache.shape != kshape:
            raise ValueError(f"v_cache shape {v_cache.shape} differs from k_cache {kshape}")
    if len(kshape) != 4 or min(kshape) <= 0:
        raise ValueError(f"k_cache must be (num_blocks, H, block_size, D), got {kshape}")
    NB, H, BS, D = kshape
    flat = q.ndim == 2
    if flat:
        if q.shape[1] != H * D:
            raise ValueError(f"q is (T, H*D) = {q.shape} but the cache has H*D = {H * D}")
        q = q.reshape(q.shape[0], H, D)
    if q.ndim != 3 or q.shape[1:] != (H, D):
        raise ValueError(f"q must be (T, {H}, {D}) or (T, {H * D}), got {q.shape}")
    T = q.shape[0]
    bt = _i32(block_tables, "block_tables")
    if bt.ndim != 2 and not (allow_shapes and bt.ndim == 3):
        raise ValueError(f"block_tables must be (S, max_blocks), got shape {bt.shape}")
    S, MB = bt.shape[-2], bt.shape[-1]
    sl = _i32(seq_lens, "seq_lens")
    if sl.shape != (S,):
        raise ValueError(f"seq_lens must be ({S},) like block_tables' rows, got {sl.shape}")
    if query_start_loc is None:
        if T != S:
            raise ValueError(f"without query_start_loc every sequence has one query token, so "
                             f"q needs {S} rows, got {T}")
        qsl = np.arange(S + 1, dtype=np.int32)
    else:
        qsl = _i32(query_start_loc, "query_start_loc")
    if qsl.shape != (S + 1,) or qsl[0] != 0 or qsl[-1] != T:
        raise ValueError(f"query_start_loc must be ({S + 1},) from 0 to T={T}")
    qlen = np.diff(qsl)
    if np.any(qlen < 1):
        raise ValueError("every sequence needs at least one query token (query_start_loc "
                         "must increase strictly)")
    if np.any(sl < qlen):
        raise ValueError("seq_lens[s] must be >= the query length of sequence s")
    if np.any(sl > MB * BS):
        raise ValueError(f"seq_lens exceed the block table's capacity {MB} blocks x {BS}")
    for s in range(S):
        used = bt[..., s, : (int(sl[s]) + BS - 1) // BS]
        if used.size and (used.min() < 0 or used.max() >= NB):
            raise ValueError(f"block_tables[{s}] holds a block id outside [0, {NB})")
    if num_decodes is None:
        num_decodes = int(np.argmax(qlen != 1)) if np.any(qlen != 1) else S
    num_decodes = int(num_decodes)
    if not 0 <= num_decodes <= S or np.any(qlen[:num_decodes] != 1):
        raise ValueError("num_decodes must count leading sequences of query length 1")
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    if not (math.isfinite(scale) and scale > 0):   # the kernels scale row maxima, not scores
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    return q, k_cache, v_cache, bt, sl, qsl, num_decodes, scale, flat


def paged_attention(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc=None, *,
                    num_decodes=None, backend="PAGED", dtype="float16", scale=None):
    """Causal attention of a packed variable-length batch over the paged KV cache.

    q: (T, H, D) or (T, H*D) float32; query_start_loc None means one query token per
    sequence (pure decode). num_decodes: leading sequences run as decodes (default:
    all leading sequences of query length 1). backend: "PAGED", "FLASH" or "CPU".
    scale defaults to 1/sqrt(D). Returns out shaped like q, float32 (rounded to dtype).
    """
    _check_backend(backend)
    q, kc, vc, bt, sl, qsl, nd, scale, flat = _attention_inputs(
        q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, num_decodes, scale, dtype)
    out = _C._ops_attention(str(backend), q, kc, vc, bt, sl, qsl, nd, scale, dtype)
    return out.reshape(out.shape[0], -1) if flat else out


def attention_bench(q, k_cache, block_tables, seq_lens, query_start_loc=None, *, v_cache=None,
                    num_decodes=None, backend="PAGED", dtype="float16", scale=None, iters=100):
    """Median milliseconds of one attention forward, timed inside C (on a GPU: a
    CUDA graph of `iters` back-to-back forwards, its replays timed by CUDA events, as
    the engine replays decode steps; on the CPU: the host clock; no Python overhead).

    k_cache may be a shape tuple (NB, H, BS, D): both caches are then allocated on the
    device and filled with random values (no host copy of a large cache). v_cache
    defaults to k_cache. block_tables may be (R, S, max_blocks): iteration i uses set
    i % R, so disjoint sets can rotate the inputs past the L2 cache.
    """
    _check_backend(backend)
    if v_cache is None:
        v_cache = k_cache
    q, kc, vc, bt, sl, qsl, nd, scale, _ = _attention_inputs(
        q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, num_decodes, scale, dtype,
        allow_shapes=True)
    if not 1 <= int(iters) <= 10000:
        raise ValueError(f"iters must be in [1, 10000], got {iters}")
    return _C._ops_attention_bench(str(backend), q, kc, vc, bt, sl, qsl, nd, scale, dtype,
                                   int(iters))


def reshape_and_cache(k, v, k_cache, v_cache, slot_mapping, *, device="cpu", dtype="float32"):
    """Writes this step's keys and values into the paged cache (the device backend's op).

    k, v: (T, H, D); caches (NB, H, BS, D); slot_mapping (T,): slot s goes to block
    s // BS, offset s % BS; a negative slot is skipped. Returns the new
    (k_cache, v_cache) as float32 arrays; the inputs are not modified.
    """
    _check_dtype(dtype)
    k, v = _f32(k, "k"), _f32(v, "v")
    k_cache, v_cache = _f32(k_cache, "k_cache"), _f32(v_cache, "v_cache")
    slots = _i32(slot_mapping, "slot_mapping")
    if k.ndim != 3 or v.shape != k.shape:
        raise ValueError(f"k and v must both be (T, H, D), got {k.shape} and {v.shape}")
    T, H, D = k.shape
    if k_cache.ndim != 4 or k_cache.shape[1] != H or k_cache.shape[3] != D:
        raise ValueError(f"k_cache must be (num_blocks, {H}, block_size, {D}), got "
                         f"{k_cache.shape}")
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"v_cache shape {v_cache.shape} differs from k_cache {k_cache.shape}")
    if slots.shape != (T,):
        raise ValueError(f"slot_mapping must be ({T},), got {slots.shape}")
    capacity = k_cache.shape[0] * k_cache.shape[2]
    if np.any(slots >= capacity):
        raise ValueError(f"slot_mapping entries must be < num_blocks * block_size = {capacity}")
    return _C._ops_reshape_and_cache(str(device), k, v, k_cache, v_cache, slots, dtype)


def merge_attn_states(out_a, lse_a, out_b, lse_b, *, device="cpu", dtype="float32"):
    """Merges two partial attentions over disjoint key sets (vLLM semantics).

    out_a, out_b: (T, H, D); lse_a, lse_b: (H, T) natural-log sum of exp of the
    scaled logits (+inf is read as -inf, an empty part). Returns (out (T, H, D),
    lse (H, T)): out = out_a * w_a + out_b * w_b with w = softmax(lse_a, lse_b).
    device "cuda" runs the CUDA kernel, "cpu" the same formula on the host.
    """
    _check_dtype(dtype)
    a, b = _f32(out_a, "out_a"), _f32(out_b, "out_b")
    la = np.ascontiguousarray(np.asarray(lse_a, dtype=np.float32))
    lb = np.ascontiguousarray(np.asarray(lse_b, dtype=np.float32))
    if a.ndim != 3 or b.shape != a.shape:
        raise ValueError(f"out_a and out_b must both be (T, H, D), got {a.shape} and {b.shape}")
    T, H, _ = a.shape
    if la.shape != (H, T) or lb.shape != (H, T):
        raise ValueError(f"lse_a and lse_b must be (H, T) = ({H}, {T}), got {la.shape} and "
                         f"{lb.shape}")
    if np.any(np.isnan(la)) or np.any(np.isnan(lb)):
        raise ValueError("lse_a / lse_b contain NaN")
    return _C._ops_merge_attn_states(str(device), a, la, b, lb, dtype)
