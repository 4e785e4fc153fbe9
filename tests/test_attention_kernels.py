"""Attention kernels and low-level ops (gpt2_engine.ops) against NumPy float64.

- CPU attention backend vs a NumPy float64 reference of paged causal attention
  (runs everywhere, CI included), plus reshape_and_cache / merge_attn_states on the
  CPU and the argument checks of gpt2_engine.ops.
- PAGED (CUDA) vs NumPy and vs the CPU backend on fresh random data: odd batch sizes,
  lengths that are not multiples of the block size, length 1 and long contexts,
  decode-only / prefill-only / mixed batches, chunked prefill equal to one-shot
  prefill, scattered block tables, both decode paths (v1: one pass; v2: split-KV
  partitions), fp32 (1e-5) and fp16/bf16 (1e-2); skipped without a GPU.
Every output starts as NaN in ops (poisoned), so an unwritten element fails.
"""
import math

import numpy as np
import pytest

import gpt2_engine
from gpt2_engine import ops

HAVE_GPU = bool(gpt2_engine._C.built_with_cuda) and gpt2_engine.cuda_available()
gpu = pytest.mark.skipif(not HAVE_GPU, reason="needs a CUDA build and a visible GPU")

TOL = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 1e-2}


# ---------------------------------------------------------------- references
def round_to(x, dtype):
    """x rounded to dtype (round to nearest even) and back to float32."""
    x = np.asarray(x, np.float32)
    if dtype == "float16":
        return x.astype(np.float16).astype(np.float32)
    if dtype == "bfloat16":
        u = x.view(np.uint32).astype(np.uint64)
        u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
        return u.astype(np.uint32).view(np.float32)
    return x


def ref_paged_attention(q, k_cache, v_cache, block_tables, seq_lens, qsl, scale):
    """NumPy float64: out (T, H, D); query i of sequence s at position L - q_len + i."""
    q = q.astype(np.float64)
    T, H, D = q.shape
    BS = k_cache.shape[2]
    out = np.zeros((T, H, D))
    for s in range(len(seq_lens)):
        L, q0, q1 = int(seq_lens[s]), int(qsl[s]), int(qsl[s + 1])
        pos = np.arange(L)
        blocks = block_tables[s][pos // BS]
        k = k_cache[blocks, :, pos % BS, :].astype(np.float64)      # (L, H, D)
        v = v_cache[blocks, :, pos % BS, :].astype(np.float64)
        qs = q[q0:q1]                                                  # (n, H, D)
        logits = np.einsum("nhd,lhd->hnl", qs, k) * scale
        qpos = L - (q1 - q0) + np.arange(q1 - q0)
        logits = np.where(pos[None, None, :] <= qpos[None, :, None], logits, -np.inf)
        logits -= logits.max(-1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(-1, keepdims=True)
        out[q0:q1] = np.einsum("hnl,lhd->nhd", p, v)
    return out


def make_batch(rng, H, D, BS, q_lens, seq_lens, dtype="float32", extra_blocks=3):
    """Random q and caches (rounded to dtype) and scattered block tables."""
    q_lens, seq_lens = np.asarray(q_lens), np.asarray(seq_lens, np.int32)
    nblk = (seq_lens + BS - 1) // BS
    NB = int(nblk.sum()) + extra_blocks
    perm = rng.permutation(NB).astype(np.int32)
    MB = int(nblk.max()) + 1
    bt = np.full((len(seq_lens), MB), -1, np.int32)       # unused entries invalid
    k = 0
    for s, n in enumerate(nblk):
        bt[s, :n] = perm[k:k + n]
        k += n
    qsl = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32)
    T = int(qsl[-1])
    q = round_to(rng.standard_normal((T, H, D)), dtype)
    kc = round_to(rng.standard_normal((NB, H, BS, D)), dtype)
    vc = round_to(rng.standard_normal((NB, H, BS, D)), dtype)
    return q, kc, vc, bt, seq_lens, qsl


def assert_close(out, ref, dtype, what=""):
    tol = TOL[dtype]
    assert np.all(np.isfinite(out)), f"{what}: non-finite output (unwritten element?)"
    err = np.abs(out - ref) / (tol + tol * np.abs(ref))
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert err.max() <= 1.0, (f"{what}: worst |out-ref| {abs(out[worst] - ref[worst]):.3g} at "
                              f"{worst}: {out[worst]} vs {ref[worst]} (tol {tol} abs+rel)")


def run_and_check(backend, dtype, H, D, BS, q_lens, seq_lens, seed):
    rng = np.random.default_rng(seed)
    q, kc, vc, bt, sl, qsl = make_batch(rng, H, D, BS, q_lens, seq_lens, dtype)
    scale = 1.0 / math.sqrt(D)
    out = ops.paged_attention(q, kc, vc, bt, sl, qsl, backend=backend, dtype=dtype)
    ref = ref_paged_attention(q, kc, vc, bt, sl, qsl, scale)
    assert out.shape == q.shape
    assert_close(out, ref, dtype, f"{backend} {dtype} H={H} D={D} BS={BS}")
    return q, kc, vc, bt, sl, qsl, out


# ------------------------------------------------------- CPU backend (CI too)
@pytest.mark.parametrize("D,BS", [(64, 16), (32, 8), (80, 32)])
def test_cpu_backend_matches_numpy(D, BS):
    rng = np.random.default_rng(D + BS)
    for _ in range(2):
        S = int(rng.integers(1, 6))
        nd = int(rng.integers(0, S + 1))
        q_lens = [1] * nd + list(rng.integers(1, 40, S - nd))
        seq_lens = [int(ql + rng.integers(0, 70)) for ql in q_lens]
        run_and_check("CPU", "float32", 3, D, BS, q_lens, seq_lens, int(rng.integers(1 << 30)))


def test_cpu_backend_length_one_and_flat_q():
    rng = np.random.default_rng(7)
    q, kc, vc, bt, sl, qsl = make_batch(rng, 2, 32, 16, [1, 1, 3], [1, 17, 3])
    out = ops.paged_attention(q.reshape(q.shape[0], -1), kc, vc, bt, sl, qsl, backend="CPU",
                              dtype="float32")
    ref = ref_paged_attention(q, kc, vc, bt, sl, qsl, 1 / math.sqrt(32))
    assert out.shape == (q.shape[0], 64)
    assert_close(out.reshape(q.shape), ref, "float32")
    # a length-1 context attends only to itself: out = v of position 0
    np.testing.assert_allclose(out.reshape(q.shape)[0], vc[bt[0, 0], :, 0, :], rtol=1e-6)


def ref_reshape_and_cache(k, v, kc, vc, slots):
    kc, vc = kc.copy(), vc.copy()
    BS = kc.shape[2]
    for t, s in enumerate(slots):
        if s >= 0:
            kc[s // BS, :, s % BS, :] = k[t]
            vc[s // BS, :, s % BS, :] = v[t]
    return kc, vc


def reshape_and_cache_case(device, dtype, seed):
    rng = np.random.default_rng(seed)
    T, H, D, NB, BS = 13, 3, 40, 7, 8
    k = round_to(rng.standard_normal((T, H, D)), dtype)
    v = round_to(rng.standard_normal((T, H, D)), dtype)
    kc = round_to(rng.standard_normal((NB, H, BS, D)), dtype)
    vc = round_to(rng.standard_normal((NB, H, BS, D)), dtype)
    slots = rng.choice(NB * BS, T, replace=False).astype(np.int32)
    slots[[2, 9]] = -1                                      # padding: skipped
    gk, gv = ops.reshape_and_cache(k, v, kc, vc, slots, device=device, dtype=dtype)
    rk, rv = ref_reshape_and_cache(k, v, kc, vc, slots)
    np.testing.assert_array_equal(gk, rk)                   # a copy: exact
    np.testing.assert_array_equal(gv, rv)


def test_reshape_and_cache_cpu():
    reshape_and_cache_case("cpu", "float32", 1)


def ref_merge(a, la, b, lb):
    la = np.where(np.isinf(la), -np.inf, la).astype(np.float64)
    lb = np.where(np.isinf(lb), -np.inf, lb).astype(np.float64)
    m = np.maximum(la, lb)
    pa, pb = np.exp(la - m), np.exp(lb - m)
    tot = pa + pb
    wa, wb = (pa / tot).T[:, :, None], (pb / tot).T[:, :, None]   # (T, H, 1)
    return a * wa + b * wb, np.log(tot) + m


def merge_case(device, dtype, seed):
    rng = np.random.default_rng(seed)
    T, H, D = 11, 4, 72
    a = round_to(rng.standard_normal((T, H, D)), dtype)
    b = round_to(rng.standard_normal((T, H, D)), dtype)
    la = (rng.standard_normal((H, T)) * 4).astype(np.float32)
    lb = (rng.standard_normal((H, T)) * 4).astype(np.float32)
    la[1, 2] = np.inf                                        # FlashAttention's empty part
    lb[3, 5] = -np.inf
    out, lse = ops.merge_attn_states(a, la, b, lb, device=device, dtype=dtype)
    rout, rlse = ref_merge(a, la, b, lb)
    assert_close(out, rout, dtype, f"merge {device} {dtype}")
    np.testing.assert_allclose(lse, rlse, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_merge_attn_states_cpu(dtype):
    merge_case("cpu", dtype, 3)


def test_merge_of_two_halves_is_attention_over_all_keys():
    """Attention over keys [0, m) and [m, L) merged by their LSEs = attention over [0, L)."""
    rng = np.random.default_rng(5)
    T, H, D, L, m = 3, 2, 16, 50, 21
    q, k, v = (rng.standard_normal(s) for s in ((T, H, D), (L, H, D), (L, H, D)))
    logits = np.einsum("thd,lhd->thl", q, k) / math.sqrt(D)

    def part(sl):
        x = logits[:, :, sl]
        lse = np.log(np.exp(x).sum(-1))
        return np.einsum("thl,lhd->thd", np.exp(x - lse[..., None]), v[sl]), lse.T
    oa, la = part(slice(0, m))
    ob, lb = part(slice(m, L))
    out, _ = ops.merge_attn_states(oa, la, ob, lb, device="cpu", dtype="float32")
    full, _ = part(slice(0, L))
    np.testing.assert_allclose(out, full, rtol=1e-5, atol=1e-5)


def test_ops_argument_errors():
    rng = np.random.default_rng(0)
    q, kc, vc, bt, sl, qsl = make_batch(rng, 2, 32, 16, [1, 4], [10, 20])
    with pytest.raises(ValueError, match="block id"):
        bad = bt.copy()
        bad[1, 0] = 10_000
        ops.paged_attention(q, kc, vc, bad, sl, qsl, backend="CPU", dtype="float32")
    with pytest.raises(ValueError, match="query_start_loc"):
        ops.paged_attention(q, kc, vc, bt, sl, qsl[:-1], backend="CPU", dtype="float32")
    with pytest.raises(ValueError, match="seq_lens"):
        ops.paged_attention(q, kc, vc, bt, np.array([10, 2]), qsl, backend="CPU",
                            dtype="float32")
    with pytest.raises(ValueError, match="q must be"):
        ops.paged_attention(q[:, :1], kc, vc, bt, sl, qsl, backend="CPU", dtype="float32")
    with pytest.raises(ValueError, match="num_decodes"):
        ops.paged_attention(q, kc, vc, bt, sl, qsl, num_decodes=2, backend="CPU",
                            dtype="float32")
    with pytest.raises(ValueError, match="dtype"):
        ops.paged_attention(q, kc, vc, bt, sl, qsl, backend="CPU", dtype="float64")
    for bad_scale in (0.0, -0.125, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="scale must be a positive"):
            ops.paged_attention(q, kc, vc, bt, sl, qsl, backend="CPU", dtype="float32",
                                scale=bad_scale)
    with pytest.raises(ValueError, match="unknown attention backend"):
        ops.paged_attention(q, kc, vc, bt, sl, qsl, backend="NOPE", dtype="float32")
    with pytest.raises(ValueError, match="slot_mapping"):
        ops.reshape_and_cache(q, q, kc, vc, np.full(q.shape[0], 10_000), device="cpu")
    with pytest.raises(ValueError, match="lse"):
        ops.merge_attn_states(q, np.zeros((3, 3)), q, np.zeros((3, 3)))


@pytest.mark.skipif(HAVE_GPU, reason="checks the error of a CPU-only setup")
def test_paged_without_gpu_is_a_clear_error():
    rng = np.random.default_rng(0)
    q, kc, vc, bt, sl, qsl = make_batch(rng, 2, 32, 16, [1], [5])
    with pytest.raises(ValueError, match="(?i)cuda"):
        ops.paged_attention(q, kc, vc, bt, sl, qsl, backend="PAGED", dtype="float16")


# ------------------------------------------------------------- PAGED (GPU)
DTYPES = ["float32", "float16", "bfloat16"]


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", [32, 64, 80, 96, 128])
def test_paged_mixed_batch(dtype, D):
    """3 decodes then 3 prefill chunks (one of length 1) over cached context."""
    BS = {32: 8, 64: 16, 80: 32, 96: 16, 128: 16}[D]
    run_and_check("PAGED", dtype, 3, D, BS, [1, 1, 1, 19, 1, 5], [1, 37, 700, 19, 90, 77],
                  seed=D * 7 + len(dtype))


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("BS", [8, 16, 32])
def test_paged_decode_paths(dtype, BS):
    # v2: few sequences, contexts past one partition (1024, 2048 and odd lengths); 16
    # partitions of 128, so the last one merges from shared memory (PAGED_DECODE_MERGE),
    # and each block's block-table entries are staged (PAGED_DECODE_STAGE_BT)
    run_and_check("PAGED", dtype, 4, 64, BS, [1] * 5, [1, 1024, 2048, 1999, 333], seed=BS)
    # v1: num_decodes * H > 512 (37 sequences x 16 heads)
    rng = np.random.default_rng(BS)
    run_and_check("PAGED", dtype, 16, 64, BS, [1] * 37, list(rng.integers(1, 600, 37)),
                  seed=BS + 1)
    # v1: a context inside one partition
    run_and_check("PAGED", dtype, 2, 128, BS, [1, 1, 1], [1, 100, 127], seed=BS + 2)


@gpu
def test_paged_decode_beyond_8192_uses_v2():
    # 71 partitions: too many to stage (the merge's three passes over global memory), and
    # the last partition's block-table entries run past the table's width (not loaded)
    run_and_check("PAGED", "float16", 2, 64, 16, [1, 1, 1], [9000, 8193, 7], seed=11)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_paged_prefill_only(dtype):
    run_and_check("PAGED", dtype, 2, 64, 16, [7, 40, 1, 1024], [7, 40, 1, 1024], seed=21)


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_paged_chunked_prefill_equals_one_shot(dtype):
    rng = np.random.default_rng(31)
    L, chunk = 2048 - 3, 300
    q, kc, vc, bt, sl, qsl = make_batch(rng, 4, 64, 16, [L], [L], dtype)
    one = ops.paged_attention(q, kc, vc, bt, sl, qsl, backend="PAGED", dtype=dtype)
    pieces, start = [], 0
    while start < L:                     # chunks attend to the cache written before them
        n = min(chunk, L - start)
        pieces.append(ops.paged_attention(q[start:start + n], kc, vc, bt,
                                          np.array([start + n], np.int32),
                                          np.array([0, n], np.int32),
                                          backend="PAGED", dtype=dtype))
        start += n
    chunked = np.concatenate(pieces)
    tol = 1e-6 if dtype == "float32" else 1e-3
    np.testing.assert_allclose(chunked, one, rtol=tol, atol=tol)
    assert_close(one, ref_paged_attention(q, kc, vc, bt, sl, qsl, 1 / 8), dtype)


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_paged_matches_cpu_backend(dtype):
    rng = np.random.default_rng(41)
    for S in (1, 5, 9):
        nd = S // 2
        q_lens = [1] * nd + list(rng.integers(1, 60, S - nd))
        seq_lens = [int(ql + rng.integers(0, 900)) for ql in q_lens]
        q, kc, vc, bt, sl, qsl = make_batch(rng, 3, 64, 16, q_lens, seq_lens, dtype)
        paged = ops.paged_attention(q, kc, vc, bt, sl, qsl, backend="PAGED", dtype=dtype)
        cpu = ops.paged_attention(q, kc, vc, bt, sl, qsl, backend="CPU", dtype="float32")
        assert_close(paged, cpu.astype(np.float64), dtype, f"PAGED vs CPU S={S}")


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_reshape_and_cache_cuda(dtype):
    reshape_and_cache_case("cuda", dtype, 2)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_merge_attn_states_cuda(dtype):
    merge_case("cuda", dtype, 4)


@gpu
def test_attention_bench_runs():
    rng = np.random.default_rng(0)
    B, H, D, BS, ctx = 4, 2, 64, 16, 300
    nbps = (ctx + BS - 1) // BS
    tables = rng.permutation(2 * B * nbps).astype(np.int32).reshape(2, B, nbps)
    for backend in ("PAGED", "FLASH"):
        ms = ops.attention_bench(rng.standard_normal((B, H, D)), (2 * B * nbps, H, BS, D),
                                 tables, np.full(B, ctx, np.int32), iters=5, backend=backend)
        assert 0 < ms < 1000
    with pytest.raises(ValueError, match="iters"):
        ops.attention_bench(rng.standard_normal((B, H, D)), (2 * B * nbps, H, BS, D), tables,
                            np.full(B, ctx, np.int32), iters=0)
