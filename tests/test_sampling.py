"""Tests for the sampling layer (issue 4): the reference CPU sampler sample_cpu
(csrc/core/sampler_cpu.c, through the test-only _C._sample_cpu) against a NumPy
implementation of the contract in csrc/core/sampling.h, written here from the
contract's text; and the SamplingParams type: defaults, every validation rule,
repr, pickling, clone, equality.

Effects through LLM.generate on a real model live in tests/test_api.py."""
import copy
import math
import pickle

import numpy as np
import pytest

import gpt2_engine
from gpt2_engine import _C

SamplingParams = _C.SamplingParams
needs_sampler = pytest.mark.skipif(
    not hasattr(_C, "_sample_cpu"),
    reason="_C._sample_cpu is not registered (module.c must call sampler_debug_register)")

M64 = (1 << 64) - 1


# ---------------------------------------------------------------- the contract in NumPy

def mix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def uniform01(seed, step):
    h = mix64(seed ^ mix64((step + 0x632BE59BD9B4E019) & M64))
    return np.float32((h >> 40) / 16777216.0)


def ref_adjust(raw, row, adj):
    """x = raw with the row's TokenAdjust entries (token, count, in_prompt, bias), fp32."""
    x = raw.astype(np.float32).copy()
    rp = np.float32(row.get("repetition_penalty", 1.0))
    fp = np.float32(row.get("frequency_penalty", 0.0))
    pp = np.float32(row.get("presence_penalty", 0.0))
    for tok, cnt, in_prompt, bias in adj:
        v = x[tok]
        if rp != 1 and (cnt > 0 or in_prompt):
            v = v / rp if v > 0 else v * rp
        v = np.float32(v - (fp * np.float32(cnt) + pp * np.float32(1.0 if cnt > 0 else 0.0)))
        x[tok] = np.float32(v + np.float32(bias))
    return x


def ref_kept(x, row):
    """The kept probabilities (unnormalised, fp32 p with max 1) after top_k/top_p/min_p."""
    V = x.size
    T = np.float32(row.get("temperature", 1.0))
    p = np.exp(((x - x.max()) / T).astype(np.float64)).astype(np.float32)
    cut = np.float32(0)
    k = row.get("top_k", 0)
    if 0 < k < V:
        cut = np.sort(p)[::-1][k - 1]
    top_p = row.get("top_p", 1.0)
    if np.float32(top_p) < 1:
        ids = np.nonzero((p > 0) & (p >= cut))[0]
        total = np.cumsum(p[ids].astype(np.float64))[-1]
        order = ids[np.lexsort((ids, -p[ids]))]
        mass = np.cumsum(p[order].astype(np.float64))
        need = np.float64(np.float32(top_p)) * total
        hit = np.nonzero(mass >= need)[0]
        if hit.size:
            cut = p[order[hit[0]]]
    min_p = np.float32(row.get("min_p", 0.0))
    if min_p > 0:
        cut = max(cut, min_p)
    return np.where((p >= cut) & (p > 0), p, np.float32(0))


def ref_sample(raw, row, adj):
    """-> (token, margin): margin is how far the inverse-CDF target was from a
    boundary, relative (tiny margins may flip on 1-ulp differences of exp)."""
    if row.get("target_token", -1) >= 0:
        return row["target_token"], 1.0
    x = ref_adjust(raw, row, adj)
    if row.get("temperature", 1.0) == 0:
        return int(np.argmax(x)), 1.0
    kept = ref_kept(x, row)
    ids = np.nonzero(kept > 0)[0]
    run = np.cumsum(kept[ids].astype(np.float64))
    target = np.float64(uniform01(row.get("seed", 0), row.get("step", 0))) * run[-1]
    i = int(np.nonzero(run > target)[0][0]) if (run > target).any() else len(ids) - 1
    margin = min(abs(run[i] - target), abs(target - (run[i - 1] if i else 0.0))) / run[-1]
    return int(ids[i]), margin


def log_softmax64(raw):
    r = raw.astype(np.float64)
    m = r.max()
    return r - (m + np.log(np.exp(r - m).sum()))


def run(logits, rows, adj=(), max_logprobs=0):
    """adj: (row, token, count, in_prompt, bias) tuples."""
    return _C._sample_cpu(np.ascontiguousarray(logits, dtype=np.float32), rows, list(adj),
                          max_logprobs)


def random_row(rng, V):
    row = {"seed": int(rng.integers(0, 2**63)), "step": int(rng.integers(0, 1000))}
    kind = rng.integers(0, 6)
    row["temperature"] = 0.0 if kind == 0 else float(rng.choice([0.3, 0.7, 1.0, 1.5]))
    if rng.random() < 0.5:
        row["top_k"] = int(rng.integers(1, V + 3))
    if rng.random() < 0.5:
        row["top_p"] = float(rng.choice([0.1, 0.5, 0.9, 0.99]))
    if rng.random() < 0.4:
        row["min_p"] = float(rng.choice([0.01, 0.1, 0.5]))
    if rng.random() < 0.5:
        row["repetition_penalty"] = float(rng.choice([0.8, 1.3, 2.0]))
        row["frequency_penalty"] = float(rng.uniform(-2, 2))
        row["presence_penalty"] = float(rng.uniform(-2, 2))
    return row


# ---------------------------------------------------------------- sampler vs the contract

@needs_sampler
@pytest.mark.parametrize("V", [1, 2, 7, 64, 333, 4099])
def test_sampler_matches_contract_random(V):
    rng = np.random.default_rng(V)
    R = 40
    logits = (rng.standard_normal((R, V)) * rng.choice([0.5, 2.0, 6.0])).astype(np.float32)
    rows = [random_row(rng, V) for _ in range(R)]
    adj = []
    for r in range(R):
        for t in rng.choice(V, size=min(V, 5), replace=False):
            adj.append((r, int(t), int(rng.integers(0, 4)), int(rng.integers(0, 2)),
                        float(rng.choice([0.0, 0.0, 1.5, -3.0]))))
    tokens, lps, ranks, _, _ = run(logits, rows, adj)
    checked = 0
    for r in range(R):
        want, margin = ref_sample(logits[r], rows[r], [a[1:] for a in adj if a[0] == r])
        if margin > 1e-5:
            assert tokens[r] == want, (r, rows[r])
            checked += 1
        ls = log_softmax64(logits[r])
        t = tokens[r]
        assert abs(lps[r] - ls[t]) <= 1e-5 * max(1.0, abs(ls[t]))
        assert ranks[r] == 1 + int((logits[r] > logits[r][t]).sum())
    assert checked >= R - 2


@needs_sampler
@pytest.mark.parametrize("scale", [1e-3, 0.05, 1.0, 12.0])
@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.93])
def test_top_p_cut_matches_sorted_definition(scale, top_p):
    """The radix-selected top_p cut-off equals the sorted-cumsum definition, for
    near-flat rows (every p in one float bucket), peaked rows, and quantised rows
    with many exact ties."""
    rng = np.random.default_rng(int(scale * 1000) + int(top_p * 100))
    V, R = 5003, 60
    logits = (rng.standard_normal((R, V)) * scale).astype(np.float32)
    logits[R // 2:] = np.round(logits[R // 2:] * 4) / 4           # ties
    rows = [{"top_p": top_p, "seed": s, "temperature": 1.0} for s in range(R)]
    tokens = run(logits, rows)[0]
    for r in range(R):
        kept = ref_kept(logits[r], rows[r])
        assert kept[tokens[r]] > 0, (r, tokens[r])
        want, margin = ref_sample(logits[r], rows[r], [])
        if margin > 1e-5:
            assert tokens[r] == want


@needs_sampler
def test_greedy_lowest_id_on_ties_and_masking():
    logits = np.array([[1, 3, 3, 2], [5, 5, 5, 5], [0, 1, 2, 3]], dtype=np.float32)
    rows = [{"temperature": 0.0}] * 3
    adj = [(2, 3, 0, 0, float("-inf"))]          # mask token 3 (min_tokens / logit_bias)
    tokens, _, _, _, _ = run(logits, rows, adj)
    assert tokens == [1, 0, 2]


@needs_sampler
def test_top_k_one_is_greedy():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((30, 97)).astype(np.float32)
    greedy = run(logits, [{"temperature": 0.0}] * 30)[0]
    topk1 = run(logits, [{"temperature": 1.3, "top_k": 1, "seed": s} for s in range(30)])[0]
    assert topk1 == greedy == [int(i) for i in logits.argmax(1)]


@needs_sampler
def test_ties_at_cutoffs_are_kept():
    # 3 tokens tied for 2nd place: top_k=2 keeps all 4 candidates
    x = np.array([4.0, 2.0, 2.0, 2.0, -1.0, -5.0], dtype=np.float32)
    seen = set(run(np.tile(x, (400, 1)), [{"top_k": 2, "seed": s} for s in range(400)])[0])
    assert seen == {0, 1, 2, 3}
    # top_p cut lands inside a tie group: the whole group stays
    y = np.log(np.array([0.4, 0.2, 0.2, 0.2, 1e-9], dtype=np.float64)).astype(np.float32)
    seen = set(run(np.tile(y, (400, 1)), [{"top_p": 0.5, "seed": s} for s in range(400)])[0])
    assert seen == {0, 1, 2, 3}
    # min_p threshold exactly at a probability keeps it
    z = np.log(np.array([0.5, 0.25, 0.25 - 1e-3, 1e-3], dtype=np.float64)).astype(np.float32)
    p = np.exp(z - z.max()).astype(np.float32)
    seen = set(run(np.tile(z, (400, 1)), [{"min_p": float(p[1]), "seed": s}
                                          for s in range(400)])[0])
    assert seen == {0, 1}


@needs_sampler
def test_sampling_frequencies_follow_filtered_distribution():
    """Empirical frequencies over many seeds match the renormalised kept
    distribution computed in float64 (independent of the reference's code path)."""
    V, N = 10, 20000
    rng = np.random.default_rng(7)
    x = rng.standard_normal(V).astype(np.float32) * 1.5
    for row in ({"temperature": 0.8}, {"top_k": 4}, {"top_p": 0.7}, {"min_p": 0.2},
                {"top_k": 6, "top_p": 0.9, "temperature": 1.4}):
        rows = [dict(row, seed=s) for s in range(N)]
        toks = np.array(run(np.tile(x, (N, 1)), rows)[0])
        T = row.get("temperature", 1.0)
        p = np.exp((x.astype(np.float64) - x.max()) / T)
        order = np.argsort(-p, kind="stable")
        keep = np.zeros(V, bool)
        keep[order[:row.get("top_k", V)]] = True
        if "top_p" in row:
            q = np.where(keep, p, 0) / p[keep].sum()
            c = np.cumsum(q[order])
            keep &= np.isin(np.arange(V), order[:int(np.searchsorted(c, row["top_p"])) + 1])
        if "min_p" in row:
            keep &= p >= row["min_p"] * p.max()
        want = np.where(keep, p, 0) / p[keep].sum()
        freq = np.bincount(toks, minlength=V) / N
        assert np.all(freq[~keep] == 0), row
        assert np.abs(freq - want).max() < 0.015, (row, freq, want)


@needs_sampler
def test_seeded_row_independent_of_batch():
    rng = np.random.default_rng(3)
    V = 200
    logits = rng.standard_normal((50, V)).astype(np.float32)
    rows = [random_row(rng, V) for _ in range(50)]
    rows[17] = {"temperature": 1.0, "top_p": 0.95, "seed": 1234, "step": 5}
    alone = run(logits[17:18], [rows[17]])[0][0]
    batch = run(logits, rows)[0][17]
    perm = rng.permutation(50)
    shuffled = run(logits[perm], [rows[i] for i in perm])[0][int(np.nonzero(perm == 17)[0][0])]
    assert alone == batch == shuffled
    # a different step gives (generally) a different u, hence varied tokens
    toks = run(np.tile(logits[17], (64, 1)), [dict(rows[17], step=s) for s in range(64)])[0]
    assert len(set(toks)) > 5


@needs_sampler
@pytest.mark.parametrize("V,max_lp", [(5, 8), (300, 20), (1001, 3)])
def test_logprobs_ranks_topk_are_raw(V, max_lp):
    """Logprobs, ranks and top-k come from log_softmax(raw), before penalties,
    bias and temperature; unused top slots are (-1, -inf)."""
    rng = np.random.default_rng(V)
    R = 12
    logits = rng.standard_normal((R, V)).astype(np.float32) * 3
    logits[0, :2] = logits[0].max() + 1                      # a tie at the top
    rows = [dict(random_row(rng, V), num_logprobs=int(rng.integers(0, max_lp + 1)))
            for _ in range(R)]
    rows[1] = {"target_token": V - 1, "num_logprobs": max_lp}
    adj = [(r, 0, 2, 1, 5.0) for r in range(R)]
    tokens, lps, ranks, top_ids, top_lps = run(logits, rows, adj, max_lp)
    assert tokens[1] == V - 1
    for r in range(R):
        ls = log_softmax64(logits[r])
        t = tokens[r]
        np.testing.assert_allclose(lps[r], ls[t], rtol=1e-5, atol=1e-5)
        assert ranks[r] == 1 + int((logits[r] > logits[r][t]).sum())
        k = min(rows[r]["num_logprobs"], V)
        want = np.lexsort((np.arange(V), -logits[r]))[:k]
        assert top_ids[r][:k] == [int(i) for i in want]
        np.testing.assert_allclose(top_lps[r][:k], ls[want], rtol=1e-5, atol=1e-5)
        assert top_ids[r][k:] == [-1] * (max_lp - k)
        assert all(v == -math.inf for v in top_lps[r][k:])


@needs_sampler
@pytest.mark.parametrize("proc", ["repetition", "frequency", "presence", "bias"])
def test_each_penalty_changes_logits_as_defined(proc):
    """Greedy picks reveal the processed logits: token 0 leads token 1 by a margin
    that the processor, applied exactly as defined, does or does not overturn."""
    base = np.array([[2.0, 1.5, -3.0, -4.0], [-1.0, -1.2, -5.0, -6.0]], dtype=np.float32)
    cases = {  # (row settings, adj entry for token 0 (count, in_prompt, bias), expected tokens)
        # positive 2.0 / 1.5 = 1.33 < 1.5 -> token 1; negative -1.0 * 1.5 = -1.5 < -1.2 -> 1
        "repetition": ({"repetition_penalty": 1.5}, (0, 1, 0.0), [1, 1]),
        # 2.0 - 0.2 * 3 = 1.4 < 1.5; -1.0 - 0.6 < -1.2
        "frequency": ({"frequency_penalty": 0.2}, (3, 0, 0.0), [1, 1]),
        # 2.0 - 0.4 = 1.6 > 1.5 keeps 0; -1.0 - 0.4 = -1.4 < -1.2 -> 1
        "presence": ({"presence_penalty": 0.4}, (2, 0, 0.0), [0, 1]),
        "bias": ({}, (0, 0, -0.45), [0, 1]),
    }
    settings, (cnt, inp, bias), want = cases[proc]
    rows = [dict(settings, temperature=0.0) for _ in range(2)]
    adj = [(r, 0, cnt, inp, bias) for r in range(2)]
    assert run(base, rows, adj)[0] == want
    # the same through the NumPy contract
    for r in range(2):
        assert ref_sample(base[r], rows[r], [(0, cnt, inp, bias)])[0] == want[r]
    # no adjustment entry -> no effect (penalties apply only to listed tokens)
    assert run(base, rows, [])[0] == [0, 0]
    # repetition penalty needs the token seen in the prompt or the output
    if proc == "repetition":
        assert run(base, rows, [(r, 0, 0, 0, 0.0) for r in range(2)])[0] == [0, 0]


@needs_sampler
def test_sampler_rejects_bad_input():
    x = np.zeros((1, 8), np.float32)
    with pytest.raises(ValueError, match="target_token"):
        run(x, [{"target_token": 8}])
    with pytest.raises(ValueError, match="num_logprobs"):
        run(x, [{"num_logprobs": 3}], max_logprobs=2)
    with pytest.raises(ValueError, match="token"):
        run(x, [{}], [(0, 9, 0, 0, 0.0)])
    with pytest.raises(ValueError, match="top_p"):
        run(x, [{"top_p": 0.0}])
    with pytest.raises(ValueError, match="masked"):
        run(x, [{"temperature": 0.0}], [(0, t, 0, 0, float("-inf")) for t in range(8)])


# ---------------------------------------------------------------- SamplingParams

def test_sampling_params_defaults_are_vllm():
    p = SamplingParams()
    assert (p.n, p.temperature, p.top_p, p.top_k, p.min_p, p.seed) == (1, 1.0, 1.0, -1, 0.0, None)
    assert (p.presence_penalty, p.frequency_penalty, p.repetition_penalty) == (0.0, 0.0, 1.0)
    assert (p.logit_bias, p.min_tokens, p.max_tokens, p.stop, p.stop_token_ids) == \
        (None, 0, 16, [], [])
    assert (p.include_stop_str_in_output, p.ignore_eos, p.logprobs, p.prompt_logprobs,
            p.skip_special_tokens) == (False, False, None, None, True)
    assert gpt2_engine.SamplingParams is SamplingParams


def test_sampling_params_values_round_trip():
    p = SamplingParams(n=3, temperature=0.7, top_p=0.9, top_k=40, min_p=0.05, seed=2**64 - 1,
                       presence_penalty=-1.5, frequency_penalty=0.3, repetition_penalty=1.1,
                       logit_bias={5: -100.0, 7: float("-inf"), 9: 2.5}, min_tokens=4,
                       max_tokens=50, stop="###", stop_token_ids=(11, 12),
                       include_stop_str_in_output=True, ignore_eos=True, logprobs=5,
                       prompt_logprobs=0, skip_special_tokens=False)
    assert p.temperature == 0.7 and p.top_p == 0.9 and p.min_p == 0.05
    assert p.repetition_penalty == 1.1 and p.frequency_penalty == 0.3
    assert p.seed == 2**64 - 1 and p.top_k == 40 and p.n == 3
    assert p.logit_bias == {5: -100.0, 7: float("-inf"), 9: 2.5}
    assert p.stop == ["###"] and p.stop_token_ids == [11, 12]
    assert (p.min_tokens, p.max_tokens, p.logprobs, p.prompt_logprobs) == (4, 50, 5, 0)
    assert p.include_stop_str_in_output and p.ignore_eos and not p.skip_special_tokens
    p.stop = ["a", "bc"]
    p.temperature = 0
    assert p.stop == ["a", "bc"] and p.temperature == 0.0


def test_sampling_params_repr_pickle_clone_eq():
    p = SamplingParams(temperature=0.7, seed=5, stop=["x"], logit_bias={3: 1.0}, logprobs=2)
    r = repr(p)
    assert r.startswith("SamplingParams(n=1, ") and "temperature=0.7" in r
    assert "seed=5" in r and "stop=['x']" in r and "logprobs=2" in r
    for q in (pickle.loads(pickle.dumps(p)), p.clone(), copy.copy(p), copy.deepcopy(p)):
        assert q == p and q is not p and repr(q) == r
    q = p.clone()
    q.stop = None
    q.max_tokens = 3
    assert q != p and p.stop == ["x"] and p.max_tokens == 16


INVALID = [
    ("n", 0, ValueError), ("n", -3, ValueError), ("n", 1.0, TypeError),
    ("temperature", -0.01, ValueError), ("temperature", float("nan"), ValueError),
    ("temperature", float("inf"), ValueError), ("temperature", "hot", TypeError),
    ("top_p", 0.0, ValueError), ("top_p", 1.01, ValueError), ("top_p", -0.5, ValueError),
    ("top_k", 0, ValueError), ("top_k", -2, ValueError), ("top_k", 2.0, TypeError),
    ("min_p", -0.1, ValueError), ("min_p", 1.5, ValueError),
    ("presence_penalty", 2.5, ValueError), ("presence_penalty", -2.01, ValueError),
    ("frequency_penalty", 3, ValueError), ("frequency_penalty", -2.5, ValueError),
    ("repetition_penalty", 0.0, ValueError), ("repetition_penalty", -1.0, ValueError),
    ("seed", -1, ValueError), ("seed", 2**64, ValueError), ("seed", "1", TypeError),
    ("logit_bias", {"a": 1.0}, TypeError), ("logit_bias", {-1: 1.0}, ValueError),
    ("logit_bias", {1: float("nan")}, ValueError), ("logit_bias", [1, 2], TypeError),
    ("min_tokens", -1, ValueError), ("min_tokens", 17, ValueError),
    ("max_tokens", 0, ValueError), ("max_tokens", -5, ValueError), ("max_tokens", 1.5, TypeError),
    ("stop", "", ValueError), ("stop", ["ok", ""], ValueError), ("stop", 5, TypeError),
    ("stop", ["a", 1], TypeError),
    ("stop_token_ids", [-1], ValueError), ("stop_token_ids", ["a"], TypeError),
    ("stop_token_ids", 3, TypeError),
    ("logprobs", -1, ValueError), ("logprobs", 21, ValueError),
    ("prompt_logprobs", -1, ValueError), ("prompt_logprobs", 21, ValueError),
    ("ignore_eos", "yes", TypeError),
]


@pytest.mark.parametrize("field,value,exc", INVALID,
                         ids=[f"{f}={v!r}" for f, v, _ in INVALID])
def test_sampling_params_invalid_values_raise(field, value, exc):
    with pytest.raises(exc, match=field if field != "stop" else "stop"):
        SamplingParams(**{field: value})
    p = SamplingParams()
    before = repr(p)
    with pytest.raises(exc):
        setattr(p, field, value)
    assert repr(p) == before                      # a failed set leaves the object intact


def test_sampling_params_messages_name_the_range():
    with pytest.raises(ValueError, match=r"temperature must be >= 0"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        SamplingParams(top_p=2)
    with pytest.raises(ValueError, match=r"top_k must be -1 \(disable\) or at least 1, got 0"):
        SamplingParams(top_k=0)
    with pytest.raises(ValueError, match=r"min_tokens must be <= max_tokens"):
        SamplingParams(min_tokens=5, max_tokens=4)
    p = SamplingParams(min_tokens=5, max_tokens=5)
    with pytest.raises(ValueError, match="max_tokens"):
        p.max_tokens = 4
    assert p.max_tokens == 5
    with pytest.raises(TypeError, match="unexpected keyword argument 'best_of_x'"):
        SamplingParams(best_of_x=2)
    with pytest.raises(TypeError, match="keyword"):
        SamplingParams(1)
    with pytest.raises(AttributeError):
        del p.temperature


def test_sampling_params_edges_accepted():
    SamplingParams(temperature=0, top_p=1e-6, top_k=-1, min_p=1.0, presence_penalty=-2,
                   frequency_penalty=2, logprobs=0, prompt_logprobs=20, seed=0,
                   max_tokens=1, min_tokens=1, stop=[], stop_token_ids=[], logit_bias={})
    assert SamplingParams(logit_bias={}).logit_bias is None
    assert SamplingParams(stop=None).stop == []
