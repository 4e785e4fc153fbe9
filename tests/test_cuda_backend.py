"""The device backends' ops (BackendOps, csrc/core/backend.h) against NumPy float64
references on fresh random data, through the test entry points
_C._backend_op_<name>(device, dtype, ...) of csrc/python/ops_backend.c.

Every op runs on "cpu" (float32 only) and on "cuda" (float32, float16, bfloat16;
skipped without a GPU). Inputs are drawn in float32 and rounded to the compute
dtype first, so the reference sees exactly what the device sees. Tolerance per
element: |out - ref| <= atol + rtol * |ref| (fp32 1e-5, fp16/bf16 1e-2).
The CUDA sampler is compared row by row with the CPU reference sample_cpu.
"""
import math

import numpy as np
import pytest

import gpt2_engine
from gpt2_engine import _C

MATMUL_W_NK, MATMUL_GELU, MATMUL_ACCUMULATE = 1, 2, 4
ACT_GELU_TANH, ACT_GELU_ERF, ACT_RELU = 0, 1, 2


def _cuda_ok():
    try:
        return bool(_C.built_with_cuda) and bool(gpt2_engine.cuda_available())
    except Exception:
        return False


HAVE_CUDA = _cuda_ok()
gpu = pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA build and a visible GPU")

CASES = [
    pytest.param("cpu", "float32", id="cpu-fp32"),
    pytest.param("cuda", "float32", id="cuda-fp32", marks=gpu),
    pytest.param("cuda", "float16", id="cuda-fp16", marks=gpu),
    pytest.param("cuda", "bfloat16", id="cuda-bf16", marks=gpu),
]
TOL = {"float32": (1e-5, 1e-5), "float16": (1e-2, 1e-2), "bfloat16": (1e-2, 1e-2)}


def rnd(a, dtype):
    """a rounded to dtype (round to nearest even), as float32."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if dtype == "float32":
        return a
    if dtype == "float16":
        return a.astype(np.float16).astype(np.float32)
    u = a.view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


def check(out, ref, dtype, atol=None, rtol=None):
    a, r = TOL[dtype]
    atol = a if atol is None else atol
    rtol = r if rtol is None else rtol
    out = np.asarray(out, np.float64)
    ref = np.asarray(ref, np.float64)
    assert out.shape == ref.shape
    assert np.all(np.isfinite(out)), "non-finite output"
    excess = np.abs(out - ref) - (atol + rtol * np.abs(ref))
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    assert excess[worst] <= 0, (
        f"worst element {worst}: out {out[worst]!r} ref {ref[worst]!r} "
        f"(|diff| {abs(out[worst] - ref[worst]):.3g}, atol {atol}, rtol {rtol})")


@pytest.fixture
def rng(request):
    return np.random.default_rng(abs(hash(request.node.nodeid)) % (2**32))


# ---------------------------------------------------------------- memory

@pytest.mark.parametrize("device,dtype", CASES)
def test_mem_info(device, dtype):
    free, total = _C._backend_op_mem_info(device, dtype)
    assert 0 < free <= total


def test_cpu_rejects_half():
    with pytest.raises(ValueError):
        _C._backend_op_to_float("cpu", "float16", np.zeros(4, np.float32))


# ---------------------------------------------------------------- embed

@pytest.mark.parametrize("device,dtype", CASES)
@pytest.mark.parametrize("T,C", [(1, 48), (3, 64), (17, 768), (128, 50), (5, 777)])
def test_embed(device, dtype, T, C, rng):
    V, P = 97, 130
    wte = rnd(rng.standard_normal((V, C)), dtype)
    wpe = rnd(rng.standard_normal((P, C)), dtype)
    ids = rng.integers(0, V, T).astype(np.int32)
    pos = rng.integers(0, P, T).astype(np.int32)
    out = _C._backend_op_embed(device, dtype, ids, pos, wte, wpe)
    ref = wte[ids].astype(np.float64) + wpe[pos]
    check(out, ref, dtype)


# ---------------------------------------------------------------- layernorm

@pytest.mark.parametrize("device,dtype", CASES)
@pytest.mark.parametrize("T,C", [(1, 48), (3, 64), (17, 768), (128, 50), (4, 1600), (2, 777),
                                 (5, 2048), (3, 4104), (6, 1000)])
def test_layernorm(device, dtype, T, C, rng):
    x = rnd(rng.standard_normal((T, C)) * 2 + 0.5, dtype)
    w = rnd(1 + 0.1 * rng.standard_normal(C), dtype)
    b = rnd(0.1 * rng.standard_normal(C), dtype)
    out = _C._backend_op_layernorm(device, dtype, x, w, b, 1e-5)
    x64 = x.astype(np.float64)
    mean = x64.mean(1, keepdims=True)
    var = ((x64 - mean) ** 2).mean(1, keepdims=True)
    ref = (x64 - mean) / np.sqrt(var + 1e-5) * w + b
    check(out, ref, dtype)


# ---------------------------------------------------------------- matmul

def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


_erf = np.frompyfunc(math.erf, 1, 1)


def gelu_erf(x):
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)).astype(np.float64))


FLAG_SETS = [
    pytest.param(0, ACT_GELU_TANH, True, id="bias"),
    pytest.param(0, ACT_GELU_TANH, False, id="nobias"),
    pytest.param(MATMUL_GELU, ACT_GELU_TANH, True, id="gelu_tanh"),
    pytest.param(MATMUL_GELU, ACT_GELU_ERF, True, id="gelu_erf"),
    pytest.param(MATMUL_GELU, ACT_RELU, True, id="relu"),
    pytest.param(MATMUL_ACCUMULATE, ACT_GELU_TANH, True, id="accumulate"),
    pytest.param(MATMUL_W_NK, ACT_GELU_TANH, False, id="w_nk"),
    pytest.param(MATMUL_W_NK | MATMUL_GELU, ACT_GELU_TANH, True, id="w_nk_gelu"),
]


@pytest.mark.parametrize("device,dtype", CASES)
@pytest.mark.parametrize("flags,act,with_bias", FLAG_SETS)
@pytest.mark.parametrize("M,K,N", [(1, 48, 48), (3, 64, 192), (17, 768, 777), (128, 777, 64),
                                   (5, 50, 33),
                                   # decode shapes (M <= 4, N % 64 == 0: the split-K GEMV path
                                   # on CUDA in fp16/bf16), gpt2 and gpt2-xl, and an odd K
                                   (1, 768, 2304), (2, 3072, 768), (4, 777, 128), (1, 1600, 6400),
                                   (3, 31, 64)])
def test_matmul(device, dtype, flags, act, with_bias, M, K, N, rng):
    x = rnd(rng.standard_normal((M, K)), dtype)
    wshape = (N, K) if flags & MATMUL_W_NK else (K, N)
    w = rnd(rng.standard_normal(wshape) / math.sqrt(K), dtype)
    bias = rnd(0.5 * rng.standard_normal(N), dtype) if with_bias else None
    init = rnd(rng.standard_normal((M, N)), dtype) if flags & MATMUL_ACCUMULATE else None
    out = _C._backend_op_matmul(device, dtype, x, w, bias, flags, act, init)
    w64 = w.astype(np.float64)
    ref = x.astype(np.float64) @ (w64.T if flags & MATMUL_W_NK else w64)
    if bias is not None:
        ref = ref + bias
    if init is not None:
        ref = ref + init
    if flags & MATMUL_GELU:
        ref = {ACT_GELU_TANH: gelu_tanh, ACT_GELU_ERF: gelu_erf,
               ACT_RELU: lambda v: np.maximum(v, 0)}[act](ref)
    # fp32: the K-term dot products round at ~sqrt(K) * 6e-8 of O(1) values
    check(out, ref, dtype, atol=2e-5 if dtype == "float32" else None)


LN_MATMUL_FLAGS = [
    pytest.param(0, True, id="bias"),
    pytest.param(MATMUL_GELU, True, id="gelu"),
    pytest.param(MATMUL_ACCUMULATE, False, id="accumulate"),
    pytest.param(MATMUL_W_NK, False, id="w_nk"),
]


@pytest.mark.parametrize("device,dtype", CASES)
@pytest.mark.parametrize("flags,with_bias", LN_MATMUL_FLAGS)
@pytest.mark.parametrize("M,K,N", [
    # M <= 4: the fused GEMV on CUDA fp16/bf16 (w (K, N) needs N % 64 == 0; W_NK needs
    # K % 8 == 0 and M * K <= 8192), else layernorm + cuBLASLt
    (1, 768, 2304), (2, 768, 3072), (3, 1600, 4800), (4, 1600, 64), (1, 48, 128), (4, 2304, 192),
    (2, 40, 1000), (3, 777, 64), (1, 2048, 512),
    (3, 64, 48), (17, 768, 777), (5, 96, 128)])
def test_layernorm_matmul(device, dtype, flags, with_bias, M, K, N, rng):
    """layernorm_matmul = layernorm, rounded to the compute dtype, then matmul."""
    x = rnd(rng.standard_normal((M, K)) * 2 + 0.5, dtype)
    g = rnd(1 + 0.1 * rng.standard_normal(K), dtype)
    gb = rnd(0.1 * rng.standard_normal(K), dtype)
    wshape = (N, K) if flags & MATMUL_W_NK else (K, N)
    w = rnd(rng.standard_normal(wshape) / math.sqrt(K), dtype)
    bias = rnd(0.5 * rng.standard_normal(N), dtype) if with_bias else None
    init = rnd(rng.standard_normal((M, N)), dtype) if flags & MATMUL_ACCUMULATE else None
    out = _C._backend_op_matmul(device, dtype, x, w, bias, flags, ACT_GELU_TANH, init,
                                (g, gb, 1e-5))
    x64 = x.astype(np.float64)
    mean = x64.mean(1, keepdims=True)
    var = ((x64 - mean) ** 2).mean(1, keepdims=True)
    h = rnd((x64 - mean) / np.sqrt(var + 1e-5) * g + gb, dtype).astype(np.float64)
    w64 = w.astype(np.float64)
    ref = h @ (w64.T if flags & MATMUL_W_NK else w64)
    if bias is not None:
        ref = ref + bias
    if init is not None:
        ref = ref + init
    if flags & MATMUL_GELU:
        ref = gelu_tanh(ref)
    check(out, ref, dtype, atol=5e-5 if dtype == "float32" else None)


@gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("M,K,N,flags", [(1, 768, 2304, 0), (4, 3072, 768, MATMUL_ACCUMULATE),
                                         (2, 1600, 6400, MATMUL_GELU), (3, 768, 1000, MATMUL_W_NK),
                                         (1, 6400, 1600, MATMUL_ACCUMULATE),   # 6 K splits
                                         (1, 1600, 4000, MATMUL_W_NK),         # nk, M = 1
                                         (4, 2048, 1024, 0),    # 32 KB staged: smem opt-in
                                         (3, 96, 192, MATMUL_ACCUMULATE),      # 3 splits
                                         (1, 768, 1000, MATMUL_W_NK),          # nk, M = 1
                                         (1, 768, 50264, MATMUL_W_NK),         # the lm_head
                                         (1, 64, 77, MATMUL_W_NK)])            # odd N
def test_gemv_matches_cublas(dtype, M, K, N, flags, rng, monkeypatch):
    """The small-batch GEMV and cuBLASLt (GPT2_ENGINE_GEMV=0) agree on decode shapes,
    with and without the layernorm folded in."""
    x = rnd(rng.standard_normal((M, K)), dtype)
    w = rnd(rng.standard_normal((N, K) if flags & MATMUL_W_NK else (K, N)) / math.sqrt(K), dtype)
    bias = rnd(0.5 * rng.standard_normal(N), dtype)
    init = rnd(rng.standard_normal((M, N)), dtype) if flags & MATMUL_ACCUMULATE else None
    ln = (rnd(1 + 0.1 * rng.standard_normal(K), dtype), rnd(0.1 * rng.standard_normal(K), dtype),
          1e-5)
    for with_ln in (None, ln):
        outs = []
        for env in ("1", "0"):
            monkeypatch.setenv("GPT2_ENGINE_GEMV", env)
            outs.append(_C._backend_op_matmul("cuda", dtype, x, w, bias, flags, ACT_GELU_TANH,
                                              init, with_ln))
        check(outs[0], outs[1].astype(np.float64), dtype)


def test_matmul_bad_shape():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError):
        _C._backend_op_matmul("cpu", "float32", x, np.zeros((5, 6), np.float32), None, 0, 0, None)


# ---------------------------------------------------------------- reshape_and_cache

@pytest.mark.parametrize("device,dtype", CASES)
@pytest.mark.parametrize("T,H,D,BS,NB", [(1, 2, 64, 16, 4), (17, 12, 64, 16, 8),
                                         (3, 3, 5, 8, 2), (128, 4, 32, 32, 6)])
def test_reshape_and_cache(device, dtype, T, H, D, BS, NB, rng):
    S = 3 * H * D + (1 if D % 2 else 0)         # rows live inside a wider qkv row
    k = rnd(rng.standard_normal((T, S)), dtype)
    v = rnd(rng.standard_normal((T, S)), dtype)
    kc = rnd(rng.standard_normal((NB, H, BS, D)), dtype)
    vc = rnd(rng.standard_normal((NB, H, BS, D)), dtype)
    slots = rng.permutation(NB * BS)[:T].astype(np.int32)
    slots[rng.random(T) < 0.2] = -1              # padding tokens are skipped
    ok, ov = _C._backend_op_reshape_and_cache(device, dtype, k, v, kc, vc, slots, H, D)
    rk, rv = kc.copy(), vc.copy()
    for t, s in enumerate(slots):
        if s < 0:
            continue
        rk[s // BS, :, s % BS, :] = k[t, :H * D].reshape(H, D)
        rv[s // BS, :, s % BS, :] = v[t, :H * D].reshape(H, D)
    np.testing.assert_array_equal(ok, rk)       # a pure copy: exact
    np.testing.assert_array_equal(ov, rv)


# ---------------------------------------------------------------- gather_rows, to_float

@pytest.mark.parametrize("device,dtype", CASES)
@pytest.mark.parametrize("R,n,C", [(1, 1, 48), (17, 3, 64), (128, 17, 768), (9, 9, 777)])
def test_gather_rows(device, dtype, R, n, C, rng):
    x = rnd(rng.standard_normal((R, C)), dtype)
    rows = rng.integers(0, R, n).astype(np.int32)
    out = _C._backend_op_gather_rows(device, dtype, x, rows)
    np.testing.assert_array_equal(out, x[rows])


@pytest.mark.parametrize("device,dtype", CASES)
@pytest.mark.parametrize("shape", [(1,), (3, 17), (128, 777), (5, 50257)])
def test_to_float(device, dtype, shape, rng):
    x = rnd(rng.standard_normal(shape) * 10, dtype)
    out = _C._backend_op_to_float(device, dtype, x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("device,dtype", CASES)
@pytest.mark.parametrize("rows,cols,ld", [(1, 7, 8), (3, 50257, 50264), (17, 777, 784), (4, 9, 9)])
def test_to_float_drops_padding_columns(device, dtype, rows, cols, ld, rng):
    x = rnd(rng.standard_normal((rows, ld)) * 10, dtype)
    out = _C._backend_op_to_float(device, dtype, x, cols)
    assert out.shape == (rows, cols)
    np.testing.assert_array_equal(out, x[:, :cols])


# ---------------------------------------------------------------- CUDA graphs

@gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("M,K,N", [(3, 64, 48), (17, 768, 777),
                                   # split-K GEMV in fp16/bf16 (cluster reduction) replayed from a graph
                                   (2, 768, 3072), (1, 3072, 768)])
def test_graph_replay(dtype, M, K, N, rng):
    x1 = rnd(rng.standard_normal((M, K)), dtype)
    x2 = rnd(rng.standard_normal((M, K)), dtype)
    w = rnd(rng.standard_normal((K, N)) / math.sqrt(K), dtype)
    b = rnd(0.5 * rng.standard_normal(N), dtype)
    gw = rnd(1 + 0.1 * rng.standard_normal(N), dtype)
    gb = rnd(0.1 * rng.standard_normal(N), dtype)
    y1, y2 = _C._backend_op_graph("cuda", dtype, x1, x2, w, b, gw, gb, 1e-5)
    for x, y in ((x1, y1), (x2, y2)):
        h = rnd(gelu_tanh(x.astype(np.float64) @ w + b), dtype).astype(np.float64)
        mean = h.mean(1, keepdims=True)
        var = ((h - mean) ** 2).mean(1, keepdims=True)
        ref = (h - mean) / np.sqrt(var + 1e-5) * gw + gb
        # fp32: the GEMM's rounding is amplified by 1/std of the row in layernorm
        check(y, ref, dtype, atol=1e-4 if dtype == "float32" else 3e-2)


def test_cpu_has_no_graphs():
    z = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError):
        _C._backend_op_graph("cpu", "float32", z, z, np.zeros((4, 4), np.float32),
                             np.zeros(4, np.float32), np.ones(4, np.float32),
                             np.zeros(4, np.float32), 1e-5)


# ---------------------------------------------------------------- sampling

def row(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, presence=0.0, frequency=0.0,
        repetition=1.0, seed=0, step=0, target=-1, num_logprobs=0, adj_start=0, adj_count=0):
    return (temperature, top_k, top_p, min_p, presence, frequency, repetition, seed, step,
            target, num_logprobs, adj_start, adj_count)


SAMPLE_CONFIGS = {
    "greedy": dict(temperature=0.0),
    "plain": dict(temperature=1.0),
    "hot": dict(temperature=1.7),
    "top_k1": dict(temperature=0.8, top_k=1),
    "top_k": dict(temperature=0.8, top_k=7),
    "top_p": dict(temperature=0.9, top_p=0.85),
    "top_p_small": dict(temperature=1.0, top_p=0.05),
    "min_p": dict(temperature=1.0, min_p=0.2),
    "combined": dict(temperature=0.7, top_k=40, top_p=0.8, min_p=0.02),
}


def numpy_raw_stats(logits):
    """log_softmax(raw) in float64, ranks helper."""
    x = logits.astype(np.float64)
    m = x.max(1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(1, keepdims=True)))


def run_sample(device, logits, rows, adj, max_logprobs):
    return _C._backend_op_sample(device, "float32", logits, rows, adj, max_logprobs)


@pytest.mark.parametrize("V", [7, 1000, 50257])
@pytest.mark.parametrize("name", sorted(SAMPLE_CONFIGS))
def test_sample_cpu_matches_numpy(name, V, rng):
    """The CPU reference's raw logprobs, ranks, top-k and greedy tokens vs NumPy."""
    R, ML = 5, 20
    logits = (rng.standard_normal((R, V)) * 3).astype(np.float32)
    rows = [row(seed=int(rng.integers(2**63)), step=r, num_logprobs=min(ML, r * 5),
                **SAMPLE_CONFIGS[name]) for r in range(R)]
    tok, lp, rk, ti, tl = run_sample("cpu", logits, rows, [], ML)
    ls = numpy_raw_stats(logits)
    for r in range(R):
        assert 0 <= tok[r] < V
        assert abs(lp[r] - ls[r, tok[r]]) < 1e-4
        assert rk[r] == 1 + np.sum(logits[r] > logits[r, tok[r]])
        if name == "greedy":
            assert tok[r] == np.argmax(logits[r])
        if name == "top_k1":
            assert tok[r] == np.argmax(logits[r])
        k = min(rows[r][10], V)
        order = np.lexsort((np.arange(V), -logits[r]))[:k]
        np.testing.assert_array_equal(ti[r, :k], order)
        np.testing.assert_allclose(tl[r, :k], ls[r, order], atol=1e-4)
        assert np.all(ti[r, k:] == -1)


def assert_same_samples(a, b, max_logprobs, rows):
    tok_a, lp_a, rk_a, ti_a, tl_a = a
    tok_b, lp_b, rk_b, ti_b, tl_b = b
    np.testing.assert_array_equal(tok_a, tok_b)
    np.testing.assert_allclose(lp_a, lp_b, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(rk_a, rk_b)
    for r, rw in enumerate(rows):
        k = rw[10]
        np.testing.assert_array_equal(ti_a[r], ti_b[r])
        np.testing.assert_allclose(tl_a[r, :k], tl_b[r, :k], atol=1e-4, rtol=0)


@gpu
@pytest.mark.parametrize("V", [7, 1000, 50257])
@pytest.mark.parametrize("name", sorted(SAMPLE_CONFIGS))
def test_sample_cuda_matches_cpu(name, V, rng):
    R, ML = 16, 20
    logits = (rng.standard_normal((R, V)) * 3).astype(np.float32)
    rows = [row(seed=int(rng.integers(2**63)), step=int(rng.integers(1000)),
                num_logprobs=int(rng.integers(0, ML + 1)), **SAMPLE_CONFIGS[name])
            for r in range(R)]
    cpu = run_sample("cpu", logits, rows, [], ML)
    cuda = run_sample("cuda", logits, rows, [], ML)
    assert_same_samples(cuda, cpu, ML, rows)


@gpu
@pytest.mark.parametrize("name", ["greedy", "plain", "top_p", "combined"])
def test_sample_cuda_adjustments(name, rng):
    """Penalties, logit bias and -inf masks (sparse TokenAdjust lists), target tokens."""
    R, V, ML = 12, 3001, 5
    logits = (rng.standard_normal((R, V)) * 2).astype(np.float32)
    rows, adj = [], []
    for r in range(R):
        n = int(rng.integers(0, 30))
        start = len(adj)
        for _ in range(n):
            adj.append((int(rng.integers(V)), int(rng.integers(0, 4)), int(rng.integers(0, 2)),
                        float(rng.choice([0.0, 0.0, 1.5, -2.0, -np.inf]))))
        if r == 0:          # mask row 0's favourite, so the bias decides
            adj.append((int(np.argmax(logits[0])), 0, 0, float("-inf")))
            n += 1
        target = int(rng.integers(V)) if r % 5 == 4 else -1
        rows.append(row(seed=int(rng.integers(2**63)), step=r, target=target,
                        num_logprobs=ML if r % 2 else 0, presence=0.3 * (r % 3),
                        frequency=0.2 * (r % 2), repetition=[1.0, 1.3, 0.8][r % 3],
                        adj_start=start, adj_count=n, **SAMPLE_CONFIGS[name]))
    cpu = run_sample("cpu", logits, rows, adj, ML)
    cuda = run_sample("cuda", logits, rows, adj, ML)
    assert_same_samples(cuda, cpu, ML, rows)
    for r, rw in enumerate(rows):
        if rw[9] >= 0:
            assert cuda[0][r] == rw[9]


@gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("V,ld", [(1000, 1000), (50257, 50257), (50257, 50264), (7, 7)])
@pytest.mark.parametrize("name", ["greedy", "plain", "top_k", "combined"])
def test_sample_cuda_half_logits_match_cpu(name, V, ld, dtype, rng):
    """The sampler reads the lm_head's fp16/bf16 rows as they are, at the padded
    stride (ld = V rounded up to 8: every row 16-byte aligned, read 8 logits per
    load) or unpadded (rows at every alignment): the same decisions as the CPU
    reference on those rounded values. Rounding makes ties, which both break by
    the lowest id."""
    R, ML = 12, 20
    logits = rnd((rng.standard_normal((R, V)) * 3).astype(np.float32), dtype)
    rows = [row(seed=int(rng.integers(2**63)), step=r, num_logprobs=min(ML, r * 2),
                **SAMPLE_CONFIGS[name]) for r in range(R)]
    cuda = _C._backend_op_sample("cuda", dtype, logits, rows, [], ML, ld)
    cpu = run_sample("cpu", logits, rows, [], ML)
    assert_same_samples(cuda, cpu, ML, rows)


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("R,V", [(1, 50257), (1, 8193), (2, 50264), (5, 16385), (32, 50257),
                                 (33, 50257)])
def test_sample_cuda_split_greedy_rows(R, V, dtype, rng):
    """Few rows: a plain greedy row is read by up to 16 blocks, an id range each, merged by
    the last to finish (sample_cuda.c: sample_split). Beside other rows in the batch: the
    same tokens, logprobs, ranks and top logprobs as the CPU, with the row maximum tied in
    two ranges (lowest id wins), ranges entirely -inf or NaN, and the max in the last id."""
    ML = 6
    logits = (rng.standard_normal((R, V)) * 3).astype(np.float32)
    per = ((V + 15) // 16 + 7) // 8 * 8           # a range at 16 splits (fewer: wider)
    for r in range(R):
        kind = r % 4
        if kind == 0:                              # tie across ranges
            logits[r, [per + 3, V - 5]] = 40.0
        elif kind == 1:                            # the first half masked, the max last
            logits[r, :V // 2] = -np.inf
            logits[r, V // 3] = np.nan
            logits[r, V - 1] = 30.0
    logits = rnd(logits, dtype)
    rows = [row(seed=r, step=r, num_logprobs=ML * (r % 2),
                **SAMPLE_CONFIGS["greedy" if r % 4 != 3 else "top_k"]) for r in range(R)]
    cuda = _C._backend_op_sample("cuda", dtype, logits, rows, [], ML)
    cpu = run_sample("cpu", logits, rows, [], ML)
    assert_same_samples(cuda, cpu, ML, rows)
    for r in range(R):
        if r % 4 == 0:
            assert cuda[0][r] == per + 3
        elif r % 4 == 1:
            assert cuda[0][r] == V - 1


SAMPLE_IO = [("param", "mapped"), ("param", "copy"), ("copy", "mapped"), ("copy", "copy")]


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("R,n_adj", [(1, 0), (3, 40), (30, 0), (31, 0), (40, 90)])
@pytest.mark.parametrize("io", SAMPLE_IO, ids=lambda v: "-".join(v))
def test_sample_cuda_io_paths(io, R, n_adj, dtype, rng, monkeypatch):
    """The sampler's inputs go with the launch itself while they fit (SAMPLE_INLINE_BYTES:
    R = 30 rows without adjustments do, 31 do not; R = 3 with 40 adjustments do) or by a
    copy (GPT2_ENGINE_SAMPLE_IN=copy); its outputs straight into mapped pinned memory or
    by a copy (GPT2_ENGINE_SAMPLE_OUT=copy). Every way: the CPU's results, for greedy,
    sampled, target and logprob rows with adjustments."""
    monkeypatch.setenv("GPT2_ENGINE_SAMPLE_IN", io[0])
    monkeypatch.setenv("GPT2_ENGINE_SAMPLE_OUT", io[1])
    V, ML = 3001, 4
    logits = rnd((rng.standard_normal((R, V)) * 2).astype(np.float32), dtype)
    adj = [(int(rng.integers(V)), int(rng.integers(0, 3)), int(rng.integers(0, 2)),
            float(rng.choice([0.0, 1.5, -np.inf]))) for _ in range(n_adj)]
    names = ["greedy", "combined", "top_p", "plain"]
    rows = []
    for r in range(R):
        start, count = (r * n_adj // R, (r + 1) * n_adj // R - r * n_adj // R)
        rows.append(row(seed=int(rng.integers(2**63)), step=r, target=5 if r % 7 == 6 else -1,
                        num_logprobs=ML * (r % 2), presence=0.2 * (r % 3), adj_start=start,
                        adj_count=count, **SAMPLE_CONFIGS[names[r % 4]]))
    cuda = _C._backend_op_sample("cuda", dtype, logits, rows, adj, ML)
    cpu = run_sample("cpu", logits, rows, adj, ML)
    assert_same_samples(cuda, cpu, ML, rows)


@gpu
@pytest.mark.parametrize("var", ["GPT2_ENGINE_SAMPLE_IN", "GPT2_ENGINE_SAMPLE_OUT",
                                 "GPT2_ENGINE_UPLOAD"])
def test_sample_io_bad_value_raises(var, monkeypatch):
    monkeypatch.setenv(var, "sideways")
    with pytest.raises(ValueError, match=var):
        run_sample("cuda", np.zeros((1, 7), np.float32), [row(temperature=0.0)], [], 0)
    monkeypatch.delenv(var)
    assert run_sample("cuda", np.eye(1, 7, 3, dtype=np.float32), [row(temperature=0.0)], [],
                      0)[0][0] == 3


@gpu
def test_sample_cuda_seeded_is_batch_independent(rng):
    V = 1000
    logits = (rng.standard_normal((8, V)) * 2).astype(np.float32)
    rows = [row(temperature=1.0, seed=1234 + r, step=7) for r in range(8)]
    full = run_sample("cuda", logits, rows, [], 0)[0]
    for r in (0, 5):
        alone = run_sample("cuda", logits[r:r + 1], rows[r:r + 1], [], 0)[0]
        assert alone[0] == full[r]


@gpu
def test_sample_cuda_distribution(rng):
    """Tokens drawn over many seeds follow softmax(logits / T) restricted to top_k."""
    V, n = 6, 4000
    base = np.array([2.0, 1.0, 0.5, 0.0, -1.0, -3.0], np.float32)
    logits = np.tile(base, (n, 1))
    rows = [row(temperature=0.8, top_k=4, seed=s, step=0) for s in range(n)]
    tok = run_sample("cuda", logits, rows, [], 0)[0]
    p = np.exp(base[:4] / 0.8)
    p /= p.sum()
    freq = np.bincount(tok, minlength=V) / n
    assert np.all(freq[4:] == 0)
    assert np.all(np.abs(freq[:4] - p) < 0.03), (freq, p)


@pytest.mark.parametrize("device", [pytest.param("cpu"), pytest.param("cuda", marks=gpu)])
def test_sample_all_masked_raises(device):
    V = 5
    logits = np.zeros((1, V), np.float32)
    adj = [(t, 0, 0, float("-inf")) for t in range(V)]
    with pytest.raises(ValueError):
        run_sample(device, logits, [row(temperature=0.0, adj_count=V)], adj, 0)
