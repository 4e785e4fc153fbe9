"""FLASH attention backend (kernels/flash_attention.cu) against PAGED, the CPU backend
and a NumPy float64 reference, through gpt2_engine.ops.paged_attention.

Fresh random data per case: ragged batches, prompt lengths 1 .. n_positions,
lengths that are not a multiple of block_size, scattered block tables, decode-only
(split-KV and not), prefill-only and mixed batches, chunked prefill equal to one-shot
prefill, head sizes 64 and 128, float16 and bfloat16 (tolerance 1e-2). A float32
request is refused with a reason. Skipped without a CUDA build and a visible GPU.

On compute capability 9.0 prefill runs a wgmma kernel (flash_attention_sm90a.cu): the
warp-specialized TMA one by default, the cp.async one under GPT2_ENGINE_FLASH_WGMMA=legacy
(and for block sizes below 8), the mma.sync one under =0. The PREFILL cases run all
three (elsewhere all settings run the mma.sync kernel) on lengths around the 64-row
warpgroup and 64/128-key tile edges and the kernels' 128/192/256-row blocks (256: the
TMA kernel at D=64, whose Q boxes then start before a short sequence), one-token prefills, contexts
cached before the chunk, sequences of 16+ key tiles (the TMA kernel's K/V ring wraps
around several times), and block sizes 1 (cp.async), 8 (the smallest TMA page: 1 KB
at D=64), 16, 32 and 256 (a page spanning two key tiles). Cache slots past every
sequence's end hold infinities in one test: no kernel may let them reach the output
(the TMA kernel reads whole pages and must zero or mask those rows). The TMA kernel
runs each of its tile orders (GPT2_ENGINE_FLASH_SCHED).

Decode has its own kernel: the DECODE cases cover context lengths around the
kernel's key items (16 and 32 keys) and block sizes (1, 15, 16, 17, 63, 64, 65,
1000+), one to a few sequences with many splits (some of them empty, as in a
graph sized for max_model_len), and batches large enough (on a ~100-SM GPU) for
one split with 1, 2 and 4 heads per block, head counts not divisible by 4 included.
"""
import math

import numpy as np
import pytest

import gpt2_engine
from gpt2_engine import ops

HAVE_GPU = bool(gpt2_engine._C.built_with_cuda) and gpt2_engine.cuda_available()
gpu = pytest.mark.skipif(not HAVE_GPU, reason="needs a CUDA build and a visible GPU")
TOL = 1e-2


def round_to(x, dtype):
    """x rounded to dtype (round to nearest even) and back to float32."""
    x = np.asarray(x, np.float32)
    if dtype == "float16":
        return x.astype(np.float16).astype(np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


def reference(q, kc, vc, bt, seq_lens, qsl, scale):
    """NumPy float64 causal attention over the paged cache: out (T, H, D)."""
    T, H, D = q.shape
    BS = kc.shape[2]
    out = np.zeros((T, H, D))
    for s in range(len(seq_lens)):
        L, a, b = int(seq_lens[s]), int(qsl[s]), int(qsl[s + 1])
        pos = np.arange(L)
        blk = bt[s][pos // BS]
        k = kc[blk, :, pos % BS, :].astype(np.float64)
        v = vc[blk, :, pos % BS, :].astype(np.float64)
        logits = np.einsum("nhd,lhd->hnl", q[a:b].astype(np.float64), k) * scale
        qpos = L - (b - a) + np.arange(b - a)
        logits = np.where(pos[None, None, :] <= qpos[None, :, None], logits, -np.inf)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        out[a:b] = np.einsum("hnl,lhd->nhd", p / p.sum(-1, keepdims=True), v)
    return out


def make_batch(rng, q_lens, ctx_lens, H, D, BS, dtype, spare_blocks=5):
    """Random q and paged K/V (already rounded to dtype) with scattered block tables."""
    seq_lens = np.array([c + n for c, n in zip(ctx_lens, q_lens)], np.int32)
    nblk = [(int(L) + BS - 1) // BS for L in seq_lens]
    NB = sum(nblk) + spare_blocks
    perm = rng.permutation(NB).astype(np.int32)
    bt = np.full((len(q_lens), max(nblk)), -1, np.int32)
    k = 0
    for s, n in enumerate(nblk):
        bt[s, :n] = perm[k:k + n]
        k += n
    kc = round_to(rng.standard_normal((NB, H, BS, D)), dtype)
    vc = round_to(rng.standard_normal((NB, H, BS, D)), dtype)
    T = int(sum(q_lens))
    q = round_to(rng.standard_normal((T, H, D)), dtype)
    qsl = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32)
    return q, kc, vc, bt, seq_lens, qsl


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


CASES = {
    # name: (query lengths, cached context lengths); decodes lead, as the engine orders them
    "ragged prefill": ([3, 37, 200, 129, 1000], [0, 0, 0, 0, 0]),
    "lengths 1 and 2": ([1, 2, 1], [0, 0, 0]),
    "decode only": ([1] * 7, [0, 15, 16, 17, 100, 999, 2047]),
    "mixed": ([1, 1, 1, 55, 300], [10, 500, 63, 0, 0]),
    "chunked prefill over cache": ([64, 17, 300], [100, 33, 700]),
    "n_positions": ([1024], [0]),
}


@gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("BS", [16, 32])
@pytest.mark.parametrize("case", list(CASES))
def test_flash_matches_reference_and_paged(case, BS, D, dtype):
    rng = np.random.default_rng(abs(hash((case, BS, D, dtype))) % 2**32)
    q_lens, ctx = CASES[case]
    H = 3
    q, kc, vc, bt, sl, qsl = make_batch(rng, q_lens, ctx, H, D, BS, dtype)
    scale = 1.0 / math.sqrt(D)
    ref = reference(q, kc, vc, bt, sl, qsl, scale)
    flash = ops.paged_attention(q, kc, vc, bt, sl, qsl, backend="FLASH", dtype=dtype)
    assert np.all(np.isfinite(flash)), "FLASH left unwritten (NaN) elements"
    assert rel_err(flash, ref) < TOL
    paged = ops.paged_attention(q, kc, vc, bt, sl, qsl, backend="PAGED", dtype=dtype)
    assert rel_err(flash, paged) < TOL


PREFILL = {
    # name: (query lengths, cached context lengths); all run as prefills (num_decodes=0)
    "tile edges": ([1, 7, 63, 64, 65, 127, 128, 129], [0] * 8),
    # the TMA kernel's 256-row q tiles at D=64 (its Q boxes start before a sequence's
    # first row when the tile is partial: earlier sequences' rows, or zero-filled)
    "edges256": ([255, 256, 257, 511, 513], [0, 0, 3, 0, 40]),
    "one-token prefills first": ([1, 1, 191, 192, 193], [0, 5, 0, 0, 0]),
    "long": ([1000, 2048], [0, 0]),
    "long over cache": ([1500, 2], [700, 3000]),
    "chunked over cache": ([65, 1, 129, 300, 64, 7], [100, 33, 700, 1, 2047, 128]),
}


@gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("BS", [1, 8, 16, 32, 256])
@pytest.mark.parametrize("case", list(PREFILL))
def test_flash_prefill_wgmma_and_mma_sync(case, BS, D, dtype, monkeypatch):
    """The FLASH prefill with each kernel (GPT2_ENGINE_FLASH_WGMMA=1: TMA, legacy:
    cp.async, 0: mma.sync) against the NumPy reference, overall and per sequence."""
    rng = np.random.default_rng(abs(hash((case, BS, D, dtype, "prefill"))) % 2**32)
    q_lens, ctx = PREFILL[case]
    H = 2
    q, kc, vc, bt, sl, qsl = make_batch(rng, q_lens, ctx, H, D, BS, dtype)
    ref = reference(q, kc, vc, bt, sl, qsl, 1.0 / math.sqrt(D))
    check_prefill_kernels(monkeypatch, q, kc, vc, bt, sl, qsl, ref, dtype)


# the TMA kernel's tile orders (GPT2_ENGINE_FLASH_SCHED "MODE[,GROUP[,CTAS]]"): bit 0
# longest-first by sections of GROUP (sequence, head) pairs (1 and 3 pairs: several
# sections, the last one short), bit 1 q tiles aligned to the sequence's end, bit 2 a
# persistent grid (capped at CTAS CTAs: each takes many q tiles, its K/V ring running on
# across them; 1 CTA: all of them), bit 3 persistent CTAs drawing their tiles from the
# backend's tile counter; "" is the default (15)
TMA_SCHEDS = ("", "3,1", "1,3", "2", "0", "7,3,3", "5,0,1", "6,0,2", "4,0,5",
              "7", "15,3,3", "13,0,1", "10,0,2", "8,0,5")


def check_prefill_kernels(monkeypatch, q, kc, vc, bt, sl, qsl, ref, dtype):
    runs = [("1", sched) for sched in TMA_SCHEDS] + [("legacy", ""), ("0", "")]
    for flag, sched in runs:
        monkeypatch.setenv("GPT2_ENGINE_FLASH_WGMMA", flag)
        monkeypatch.setenv("GPT2_ENGINE_FLASH_SCHED", sched)
        what = f"WGMMA={flag} SCHED={sched!r}"
        out = ops.paged_attention(q, kc, vc, bt, sl, qsl, backend="FLASH", dtype=dtype,
                                  num_decodes=0)
        assert np.all(np.isfinite(out)), f"{what}: unwritten (NaN) elements"
        err = rel_err(out, ref)
        assert err < TOL, f"{what}: max rel err {err:.2e} vs NumPy"
        worst = max(rel_err(out[a:b], ref[a:b]) for a, b in zip(qsl[:-1], qsl[1:]))
        assert worst < 2 * TOL, f"{what}: worst sequence rel err {worst:.2e}"


@gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("BS", [8, 16, 256])
def test_flash_prefill_ignores_slots_past_seq_len(BS, D, dtype, monkeypatch):
    """Cache slots past each sequence's end (the rest of its last block, the spare
    blocks) hold the float32 maximum, infinity once rounded to float16 or bfloat16:
    a kernel that reads them must mask K and zero V there (0 * inf would be NaN)."""
    rng = np.random.default_rng(abs(hash((BS, D, dtype, "inf tail"))) % 2**32)
    q_lens, ctx = [1, 7, 130, 200, 33], [0, 20, 0, 57, 300]
    H = 2
    q, kc, vc, bt, sl, qsl = make_batch(rng, q_lens, ctx, H, D, BS, dtype)
    used = np.zeros(kc.shape[0] * BS, bool)
    for s, L in enumerate(sl):
        pos = np.arange(int(L))
        used[bt[s][pos // BS] * BS + pos % BS] = True
    big = np.finfo(np.float32).max
    for c in (kc, vc):
        flat = c.transpose(0, 2, 1, 3).reshape(-1, H, D)   # (block * BS + row, H, D) view
        flat[~used] = big
        c[...] = flat.reshape(kc.shape[0], BS, H, D).transpose(0, 2, 1, 3)
    ref = reference(q, kc, vc, bt, sl, qsl, 1.0 / math.sqrt(D))
    assert np.all(np.isfinite(ref))
    check_prefill_kernels(monkeypatch, q, kc, vc, bt, sl, qsl, ref, dtype)


@gpu
@pytest.mark.parametrize("D", [64, 128])
def test_flash_matches_cpu_backend(D):
    rng = np.random.default_rng(7 + D)
    q, kc, vc, bt, sl, qsl = make_batch(rng, [1, 1, 5, 77, 130], [40, 300, 11, 0, 21], 2, D, 16,
                                        "float16")
    cpu = ops.paged_attention(q, kc, vc, bt, sl, qsl, backend="CPU", dtype="float32")
    flash = ops.paged_attention(q, kc, vc, bt, sl, qsl, backend="FLASH", dtype="float16")
    assert rel_err(flash, cpu) < TOL


@gpu
@pytest.mark.parametrize("D", [64, 128])
def test_chunked_prefill_equals_one_shot(D):
    """A prompt prefilled in chunks (each attending to the cached earlier chunks)
    gives the rows of the one-shot prefill."""
    rng = np.random.default_rng(11 + D)
    L, H, BS = 777, 2, 16
    q, kc, vc, bt, sl, qsl = make_batch(rng, [L], [0], H, D, BS, "float16")
    one = ops.paged_attention(q, kc, vc, bt, sl, qsl, backend="FLASH", dtype="float16")
    rows, done = [], 0
    for c in (100, 256, 1, 300, 120):
        part = ops.paged_attention(q[done:done + c], kc, vc, bt, [done + c], [0, c],
                                   backend="FLASH", dtype="float16", num_decodes=0)
        rows.append(part)
        done += c
    assert np.max(np.abs(np.concatenate(rows) - one)) < 1e-3


@gpu
def test_long_decode_split_kv():
    """Few sequences with long contexts: the split-KV path merged by log-sum-exp."""
    rng = np.random.default_rng(3)
    q, kc, vc, bt, sl, qsl = make_batch(rng, [1, 1], [4095, 2500], 2, 64, 16, "bfloat16")
    ref = reference(q, kc, vc, bt, sl, qsl, 1 / 8)
    flash = ops.paged_attention(q, kc, vc, bt, sl, qsl, backend="FLASH", dtype="bfloat16")
    assert rel_err(flash, ref) < TOL


DECODE = {
    # name: (context lengths = seq_lens, heads, block sizes)
    "one token": ([1], 2, (16,)),
    "one seq around items": ([17], 2, (16,)),
    "one long seq": ([4097], 2, (16, 32)),
    "three ragged": ([1, 63, 1500], 3, (16, 8)),
    "edges": ([1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000, 2049], 3, (16, 32)),
    "long and tiny (empty splits)": ([4096, 1, 2, 17], 2, (16,)),
    "batch 70": ("70:1-300", 4, (16,)),
    "batch 300 h5": ("300:1-100", 5, (16,)),
    "batch 200 h12": ("200:1-150", 12, (16,)),
    "batch 400 h11": ("400:1-200", 11, (16, 32)),
    "batch 40 h12 long": ("40:900-2100", 12, (16,)),   # one split, long contexts
}


def decode_lengths(rng, spec):
    if isinstance(spec, str):   # "count:lo-hi", uniform random lengths
        n, rng_s = spec.split(":")
        lo, hi = map(int, rng_s.split("-"))
        return [int(x) for x in rng.integers(lo, hi + 1, int(n))]
    return list(spec)


@gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("case", list(DECODE))
def test_flash_decode_matches_reference_and_paged(case, D, dtype):
    spec, H, block_sizes = DECODE[case]
    for BS in block_sizes:
        rng = np.random.default_rng(abs(hash((case, BS, D, dtype, "decode"))) % 2**32)
        lens = decode_lengths(rng, spec)
        q, kc, vc, bt, sl, qsl = make_batch(rng, [1] * len(lens), [n - 1 for n in lens], H, D,
                                            BS, dtype)
        scale = 1.0 / math.sqrt(D)
        ref = reference(q, kc, vc, bt, sl, qsl, scale)
        flash = ops.paged_attention(q, kc, vc, bt, sl, qsl, backend="FLASH", dtype=dtype)
        assert np.all(np.isfinite(flash)), f"FLASH left unwritten (NaN) elements (BS {BS})"
        err = rel_err(flash, ref)
        assert err < TOL, f"BS {BS}: max rel err {err:.2e} vs NumPy"
        # per sequence too: a wrong short sequence must not hide behind a long one's scale
        worst = max(rel_err(flash[i], ref[i]) for i in range(len(lens)))
        assert worst < 2 * TOL, f"BS {BS}: worst sequence rel err {worst:.2e}"
        paged = ops.paged_attention(q, kc, vc, bt, sl, qsl, backend="PAGED", dtype=dtype)
        assert rel_err(flash, paged) < TOL


@gpu
def test_flash_refuses_float32_and_odd_head_size():
    rng = np.random.default_rng(0)
    q, kc, vc, bt, sl, qsl = make_batch(rng, [4], [0], 2, 64, 16, "float16")
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        ops.paged_attention(q, kc, vc, bt, sl, qsl, backend="FLASH", dtype="float32")
    q, kc, vc, bt, sl, qsl = make_batch(rng, [4], [0], 2, 80, 16, "float16")
    with pytest.raises(ValueError, match="head sizes"):
        ops.paged_attention(q, kc, vc, bt, sl, qsl, backend="FLASH", dtype="float16")
