"""Tests for the Python API (issue 4) on the CPU with random checkpoints:
LLM.generate against the NumPy float64 reference (tests/reference_gpt2.py) and
transformers' generate(do_sample=False); chunked prefill; seeded requests alone,
in a mixed batch of 50 and under forced preemption; prefix caching; block
accounting after finish/abort; each SamplingParams field's effect checked by
replaying the definition on teacher-forced logits; logprobs vs log_softmax;
the step API, KeyboardInterrupt, argument validation and lifetime."""
import gc
import math
import zlib

import numpy as np
import pytest

from conftest import make_model
from reference_gpt2 import reference_logits

import gpt2_engine
from gpt2_engine import LLM, CompletionOutput, RequestOutput, SamplingParams

V = 512          # small_model's vocab
EOS = 511        # its eos_token_id (min(50256, V - 1))


def make_llm(model, **kw):
    kw.setdefault("device", "cpu")
    kw.setdefault("dtype", "float32")
    return LLM(model=model.path, **kw)


@pytest.fixture(scope="module")
def llm(small_model):
    with make_llm(small_model, block_size=16, max_num_batched_tokens=256) as engine:
        yield engine


def prompt(rng, n):
    return rng.integers(0, V - 1, size=n).tolist()      # never the EOS id


def greedy(max_tokens, **kw):
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, **kw)


def log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))


def teacher_forced_logits(llm, ids, out_ids):
    """Logits (len(out_ids), V) that produced each generated token (fp32, engine)."""
    full = list(ids) + list(out_ids)
    return llm.compute_logits([full])[0][len(ids) - 1:len(full) - 1]


def assert_all_blocks_free(llm):
    kv = llm.kv_cache
    assert kv.num_free_blocks == kv.num_blocks
    assert not llm.has_unfinished_requests()


# ---------------------------------------------------------------- greedy vs references

@pytest.mark.parametrize("lengths", [(1,), (5, 17, 40), (3, 64, 9, 31)])
def test_greedy_equals_numpy_argmax_rollout(llm, small_model, lengths):
    rng = np.random.default_rng(sum(lengths))
    prompts = [prompt(rng, n) for n in lengths]
    outs = llm.generate(prompts, greedy(12), use_tqdm=False)
    assert [o.prompt_token_ids for o in outs] == prompts
    for ids, o in zip(prompts, outs):
        seq = list(ids)
        for step, tok in enumerate(o.outputs[0].token_ids):
            ref = reference_logits(small_model.weights, small_model.config, seq)[-1]
            best = int(np.argmax(ref))
            gap = np.sort(ref)[-1] - np.sort(ref)[-2]
            assert tok == best or (gap < 1e-4 and ref[tok] >= ref[best] - 1e-4), (step, tok, best)
            seq.append(tok)
        assert o.finished and o.outputs[0].finish_reason == "length"
        assert len(o.outputs[0].token_ids) == 12


def test_greedy_equals_transformers_generate(llm, small_model):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.GPT2LMHeadModel.from_pretrained(small_model.path,
                                                         torch_dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = EOS
    rng = np.random.default_rng(11)
    prompts = [prompt(rng, n) for n in (4, 23, 50)]
    outs = llm.generate(prompts, greedy(16), use_tqdm=False)
    for ids, o in zip(prompts, outs):
        with torch.no_grad():
            hf = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=16,
                                min_new_tokens=16)
        assert o.outputs[0].token_ids == hf[0, len(ids):].tolist()


def test_chunked_prefill_same_logits_and_tokens(small_model, llm):
    rng = np.random.default_rng(5)
    prompts = [prompt(rng, n) for n in (70, 33, 120)]
    with make_llm(small_model, max_num_batched_tokens=16, block_size=8) as small:
        a = small.compute_logits(prompts)
        ga = small.generate(prompts, greedy(8), use_tqdm=False)
    b = llm.compute_logits(prompts)
    gb = llm.generate(prompts, greedy(8), use_tqdm=False)
    for x, y, ids in zip(a, b, prompts):
        ref = reference_logits(small_model.weights, small_model.config, ids)
        scale = np.abs(ref).max()
        assert np.abs(x - y).max() <= 1e-5 * scale
        assert np.abs(x - ref).max() <= 1e-5 * scale
    assert [o.outputs[0].token_ids for o in ga] == [o.outputs[0].token_ids for o in gb]


# ---------------------------------------------------------------- seeds, batching, preemption

def mixed_requests(rng, n):
    prompts, params = [], []
    for i in range(n):
        prompts.append(prompt(rng, int(rng.integers(1, 40))))
        kind = i % 4
        if kind == 0:
            params.append(greedy(int(rng.integers(1, 20))))
        elif kind == 1:
            params.append(SamplingParams(temperature=0.8, top_p=0.9, seed=int(rng.integers(1e9)),
                                         max_tokens=int(rng.integers(1, 25)), ignore_eos=True))
        elif kind == 2:
            params.append(SamplingParams(temperature=1.2, top_k=20, presence_penalty=0.5,
                                         max_tokens=int(rng.integers(1, 25)), n=2))
        else:
            params.append(SamplingParams(temperature=0.7, min_p=0.1, logprobs=2,
                                         repetition_penalty=1.2, seed=i, max_tokens=10))
    return prompts, params


def test_seeded_request_alone_in_batch_and_under_preemption(small_model, llm):
    rng = np.random.default_rng(21)
    target = prompt(rng, 20)
    sp = SamplingParams(temperature=1.0, top_p=0.95, top_k=50, seed=4242, max_tokens=30,
                        ignore_eos=True, logprobs=1)
    alone = llm.generate([target], sp, use_tqdm=False)[0].outputs[0]
    prompts, params = mixed_requests(rng, 49)
    prompts.insert(17, target)
    params.insert(17, sp)
    batch = llm.generate(prompts, params, use_tqdm=False)
    assert batch[17].outputs[0].token_ids == alone.token_ids
    assert batch[17].outputs[0].text == alone.text
    assert_all_blocks_free(llm)

    # 10 blocks of 8 tokens: the 50 requests cannot all fit -> recompute preemption
    with make_llm(small_model, block_size=8, num_kv_blocks=10, max_num_batched_tokens=64) as tiny:
        pre = tiny.generate(prompts, params, use_tqdm=False)
        assert tiny.stats["num_preemptions"] > 0
        assert_all_blocks_free(tiny)
    assert pre[17].outputs[0].token_ids == alone.token_ids
    for a, b, p in zip(pre, batch, params):        # every seeded / greedy request agrees
        if p.temperature == 0 or p.seed is not None:
            assert [c.token_ids for c in a.outputs] == [c.token_ids for c in b.outputs]


def test_unseeded_requests_differ_and_n_completions(llm):
    outs = llm.generate([[1, 2, 3]] * 4, SamplingParams(temperature=1.0, max_tokens=12,
                                                         ignore_eos=True, n=3), use_tqdm=False)
    seqs = [tuple(c.token_ids) for o in outs for c in o.outputs]
    assert len(set(seqs)) > 1
    for o in outs:
        assert [c.index for c in o.outputs] == [0, 1, 2]
        assert all(len(c.token_ids) == 12 for c in o.outputs)


# ---------------------------------------------------------------- prefix caching

def test_prefix_cache_hits_identical_outputs(small_model):
    rng = np.random.default_rng(8)
    shared = prompt(rng, 48)
    prompts = [shared + prompt(rng, k) for k in (5, 9, 1)]
    with make_llm(small_model, enable_prefix_caching=False) as plain:
        want = [o.outputs[0].token_ids for o in plain.generate(prompts, greedy(10),
                                                                 use_tqdm=False)]
    with make_llm(small_model, enable_prefix_caching=True, block_size=16) as cached:
        first = cached.generate(prompts[:1], greedy(10), use_tqdm=False)
        before = cached.stats
        rest = cached.generate(prompts[1:], greedy(10), use_tqdm=False)
        after = cached.stats
        assert [o.outputs[0].token_ids for o in first + rest] == want
        hits = after["prefix_cache_hits"] - before["prefix_cache_hits"]
        assert hits >= 2 * 48                       # 3 full blocks per later request
        assert after["prefix_cache_queries"] > before["prefix_cache_queries"]
        # the skipped work: each later request had its 48 shared tokens served from cache
        assert all(o.metrics.num_cached_tokens >= 48 for o in rest)
        assert sum(o.metrics.num_cached_tokens for o in rest) == hits
        assert first[0].metrics.num_cached_tokens == 0
        assert_all_blocks_free(cached)


# ---------------------------------------------------------------- blocks, abort, step API

def test_blocks_free_after_finish_and_abort(llm):
    rng = np.random.default_rng(2)
    llm.generate([prompt(rng, 30) for _ in range(6)], greedy(5), use_tqdm=False)
    assert_all_blocks_free(llm)
    for i in range(5):
        llm.add_request(f"abort-{i}", prompt(rng, 25), greedy(40))
    llm.step()
    llm.step()
    assert llm.kv_cache.num_free_blocks < llm.kv_cache.num_blocks
    llm.abort_request([f"abort-{i}" for i in range(3)])
    llm.abort_request("abort-3")
    llm.abort_request("abort-4")
    while llm.has_unfinished_requests():
        llm.step()
    assert_all_blocks_free(llm)


def test_step_api_streams_cumulative_outputs(llm):
    rng = np.random.default_rng(6)
    ids = prompt(rng, 10)
    llm.add_request("s0", ids, greedy(6))
    llm.add_request("s1", {"prompt_token_ids": ids}, greedy(3))
    with pytest.raises(ValueError, match="s0"):
        llm.add_request("s0", ids, greedy(2))
    seen = {"s0": [], "s1": []}
    finished = set()
    while llm.has_unfinished_requests():
        for out in llm.step():
            assert isinstance(out, RequestOutput)
            if out.request_id not in seen:      # late abort notices of earlier tests
                assert out.finished and out.outputs[0].finish_reason == "abort"
                continue
            toks = out.outputs[0].token_ids
            assert toks[:len(seen[out.request_id])] == seen[out.request_id]   # cumulative
            seen[out.request_id] = toks
            if out.finished:
                finished.add(out.request_id)
    assert finished == {"s0", "s1"}
    assert seen["s0"][:3] == seen["s1"] and len(seen["s0"]) == 6
    assert seen["s0"] == llm.generate([ids], greedy(6), use_tqdm=False)[0].outputs[0].token_ids


def test_keyboard_interrupt_aborts_and_engine_stays_usable(llm):
    rng = np.random.default_rng(9)
    prompts = [prompt(rng, 12) for _ in range(4)]
    real = llm._engine

    class Interrupting:
        def __init__(self):
            self.calls = 0

        def step(self, **kw):
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt
            return real.step(**kw)

        def __getattr__(self, name):
            return getattr(real, name)

    llm._engine = Interrupting()
    try:
        with pytest.raises(KeyboardInterrupt):      # one step() call per finish: the third
            llm.generate(prompts, [greedy(n) for n in (5, 10, 20, 30)], use_tqdm=False)
    finally:
        llm._engine = real
    while llm.has_unfinished_requests():       # finished-abort notices drain here
        llm.step()
    assert_all_blocks_free(llm)
    again = llm.generate(prompts, greedy(3), use_tqdm=False)
    assert all(len(o.outputs[0].token_ids) == 3 for o in again)


# ---------------------------------------------------------------- each field's effect

def replay_choice(logits, params, prompt_ids, generated):
    """The processed logits at the next step, by the definitions in sampling.h."""
    x = np.asarray(logits, np.float64).copy()
    counts = {}
    for t in generated:
        counts[t] = counts.get(t, 0) + 1
    rp = params.repetition_penalty
    for t in set(prompt_ids) | set(counts):
        c = counts.get(t, 0)
        if rp != 1:
            x[t] = x[t] / rp if x[t] > 0 else x[t] * rp
        x[t] -= params.frequency_penalty * c + params.presence_penalty * (c > 0)
    for t, b in (params.logit_bias or {}).items():
        x[t] += b
    if len(generated) < params.min_tokens and not params.ignore_eos:
        x[EOS] = -np.inf
    for t in params.stop_token_ids:
        if len(generated) < params.min_tokens:
            x[t] = -np.inf
    return x


@pytest.mark.parametrize("kw", [
    dict(repetition_penalty=1.8), dict(repetition_penalty=0.6),
    dict(frequency_penalty=1.5), dict(frequency_penalty=-1.0),
    dict(presence_penalty=2.0), dict(presence_penalty=-0.7),
    dict(logit_bias={3: 4.0, 10: -100.0, 42: 2.5}),
    dict(repetition_penalty=1.3, frequency_penalty=0.4, presence_penalty=0.3,
         logit_bias={7: 1.0}),
], ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items() if k != "logit_bias") or "bias")
def test_processor_effects_match_definition(llm, kw):
    """Greedy with a processor: each chosen token is the argmax of the definition
    applied to the engine's own teacher-forced logits; and it changes the output
    (of at least one of three prompts: a mild processor may leave one greedy
    continuation as it was)."""
    rng = np.random.default_rng(zlib.crc32(str(kw).encode()))
    params = greedy(24, **kw)
    changed = 0
    for _ in range(3):
        ids = prompt(rng, 8) * 2                # repeated prompt tokens
        got = llm.generate([ids], params, use_tqdm=False)[0].outputs[0].token_ids
        plain = llm.generate([ids], greedy(24), use_tqdm=False)[0].outputs[0].token_ids
        tf = teacher_forced_logits(llm, ids, got)
        for i, tok in enumerate(got):
            x = replay_choice(tf[i], params, ids, got[:i])
            assert x[tok] >= x.max() - 1e-4, (i, tok, int(np.argmax(x)))
        changed += got != plain
    assert changed > 0


def test_min_tokens_and_stop_token_ids(llm):
    rng = np.random.default_rng(13)
    ids = prompt(rng, 6)
    plain = llm.generate([ids], greedy(20), use_tqdm=False)[0].outputs[0].token_ids
    stop_tok = plain[4]
    first = plain.index(stop_tok)
    out = llm.generate([ids], SamplingParams(temperature=0, max_tokens=20,
                                             stop_token_ids=[stop_tok]), use_tqdm=False)[0]
    c = out.outputs[0]
    assert c.finish_reason == "stop" and c.stop_reason == stop_tok
    assert c.token_ids[:first] == plain[:first] and c.token_ids[-1] == stop_tok
    # min_tokens masks the stop token before it
    params = SamplingParams(temperature=0, max_tokens=20, min_tokens=first + 3,
                            stop_token_ids=[stop_tok])
    c = llm.generate([ids], params, use_tqdm=False)[0].outputs[0]
    assert len(c.token_ids) >= first + 3
    assert stop_tok not in c.token_ids[:first + 3]
    tf = teacher_forced_logits(llm, ids, c.token_ids)
    for i, tok in enumerate(c.token_ids):
        x = replay_choice(tf[i], params, ids, c.token_ids[:i])
        if i < params.min_tokens:
            x[stop_tok] = -np.inf
        assert x[tok] >= x.max() - 1e-4


def test_eos_stops_unless_ignored(tmp_path):
    """EOS (the tokenizer's <|endoftext|>, = config eos 511 here) ends a sequence with
    finish_reason "stop" and no stop_reason; ignore_eos runs on; min_tokens masks it."""
    m = small_vocab_model(tmp_path)
    ids = [5, 6, 7]
    with make_llm(m) as llm:
        c = llm.generate([ids], SamplingParams(temperature=0, max_tokens=10,
                                               logit_bias={EOS: 100.0}), use_tqdm=False)[0].outputs[0]
        assert c.token_ids == [EOS] and c.finish_reason == "stop" and c.stop_reason is None
        assert c.text == ""                                   # skip_special_tokens
        c = llm.generate([ids], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True,
                                               logit_bias={EOS: 100.0}), use_tqdm=False)[0].outputs[0]
        assert c.token_ids == [EOS] * 4 and c.finish_reason == "length"
        c = llm.generate([ids], SamplingParams(temperature=0, max_tokens=10, min_tokens=3,
                                               logit_bias={EOS: 100.0}), use_tqdm=False)[0].outputs[0]
        assert EOS not in c.token_ids[:3] and c.token_ids[3:] == [EOS]
        assert c.finish_reason == "stop"


def test_top_k_one_equals_greedy(llm):
    rng = np.random.default_rng(4)
    prompts = [prompt(rng, n) for n in (3, 19, 33)]
    want = [o.outputs[0].token_ids for o in llm.generate(prompts, greedy(15), use_tqdm=False)]
    for seed in (0, 1, 99):
        got = llm.generate(prompts, SamplingParams(temperature=1.5, top_k=1, seed=seed,
                                                   max_tokens=15, ignore_eos=True),
                           use_tqdm=False)
        assert [o.outputs[0].token_ids for o in got] == want


@pytest.mark.parametrize("top_p", [0.3, 0.8])
def test_top_p_samples_only_from_the_nucleus(llm, top_p):
    rng = np.random.default_rng(int(top_p * 10))
    ids = prompt(rng, 15)
    logits = llm.compute_logits([ids])[0][-1].astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    c = np.cumsum(p[order])
    k = int(np.searchsorted(c, top_p)) + 1
    nucleus = set(order[:k].tolist())
    border = {int(t) for t in order if abs(p[t] - p[order[k - 1]]) < 1e-6}   # float slack
    params = [SamplingParams(temperature=1.0, top_p=top_p, seed=s, max_tokens=1)
              for s in range(300)]
    toks = [o.outputs[0].token_ids[0] for o in llm.generate([ids] * 300, params, use_tqdm=False)]
    assert set(toks) <= nucleus | border
    if k > 1:
        assert len(set(toks)) > 1               # it does sample, not argmax


def test_logprobs_equal_log_softmax_of_logits(llm):
    rng = np.random.default_rng(17)
    ids = prompt(rng, 12)
    params = SamplingParams(temperature=0.9, seed=3, max_tokens=8, logprobs=5,
                            prompt_logprobs=3, presence_penalty=1.0, ignore_eos=True)
    out = llm.generate([ids], params, use_tqdm=False)[0]
    c = out.outputs[0]
    full = llm.compute_logits([ids + c.token_ids])[0]
    ls = log_softmax(full)
    assert len(c.logprobs) == len(c.token_ids) == 8
    cum = 0.0
    for i, (tok, d) in enumerate(zip(c.token_ids, c.logprobs)):
        row = ls[len(ids) - 1 + i]
        assert tok in d and 5 <= len(d) <= 6
        np.testing.assert_allclose(d[tok].logprob, row[tok], rtol=1e-5, atol=1e-5)
        assert abs(d[tok].rank - (1 + int((row > row[tok]).sum()))) <= 1
        top = np.argsort(-row, kind="stable")[:5]
        assert set(top.tolist()) <= set(d)
        for t in top:
            np.testing.assert_allclose(d[int(t)].logprob, row[t], rtol=1e-5, atol=1e-5)
        assert d[tok].decoded_token == llm.get_tokenizer().decode([tok])
        cum += d[tok].logprob
    assert math.isclose(c.cumulative_logprob, cum, rel_tol=1e-4, abs_tol=1e-4)
    # prompt logprobs: [None, {...}, ...] equal to log_softmax of the previous position
    plp = out.prompt_logprobs
    assert plp[0] is None and len(plp) == len(ids)
    for j in range(1, len(ids)):
        row = ls[j - 1]
        np.testing.assert_allclose(plp[j][ids[j]].logprob, row[ids[j]], rtol=1e-5, atol=1e-5)
        top = np.argsort(-row, kind="stable")[:3]
        assert set(top.tolist()) <= set(plp[j])


# ---------------------------------------------------------------- prompts, errors, lifetime

def small_vocab_model(tmp_path):
    """A random model whose directory holds a 512-token GPT-2 vocabulary (the 256
    bytes, the first 255 merges, <|endoftext|> = 511), so text prompts fit."""
    import json
    import os
    data = os.path.join(os.path.dirname(gpt2_engine.__file__), "data")
    vocab = json.load(open(os.path.join(data, "vocab.json"), encoding="utf-8"))
    merges = open(os.path.join(data, "merges.txt"), encoding="utf-8").read().split("\n")
    small = {t: i for t, i in vocab.items() if i < V - 1}
    small["<|endoftext|>"] = EOS
    m = make_model(tmp_path)
    with open(os.path.join(m.path, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(small, f, ensure_ascii=False)
    with open(os.path.join(m.path, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(merges[:1 + V - 1 - 256]) + "\n")
    return m


def test_prompt_formats_and_input_order(tmp_path):
    m = small_vocab_model(tmp_path)
    with make_llm(m) as llm:
        tok = llm.get_tokenizer()
        assert tok.vocab_size == V and tok.path.rstrip("/") == m.path.rstrip("/")
        text = "the cat sat on the mat"
        ids = tok.encode(text)
        assert max(ids) < V
        outs = llm.generate([text, {"prompt": text}, {"prompt_token_ids": ids}, ids],
                            greedy(4), use_tqdm=False)
        assert len({tuple(o.outputs[0].token_ids) for o in outs}) == 1
        assert [o.prompt for o in outs] == [text, text, None, None]
        assert all(o.prompt_token_ids == ids for o in outs)
        c = outs[0].outputs[0]
        assert c.text == tok.decode(c.token_ids, skip_special_tokens=True)
        single = llm.generate(text, greedy(2), use_tqdm=False)
        assert len(single) == 1 and single[0].prompt == text
        lg = llm.compute_logits(text)[0]
        assert lg.shape == (len(ids), V)


def test_outputs_in_input_order_and_dataclasses(llm):
    rng = np.random.default_rng(12)
    prompts = [prompt(rng, n) for n in (50, 2, 30, 7)]
    lens = [9, 1, 4, 6]
    outs = llm.generate(prompts, [greedy(n) for n in lens], use_tqdm=False)
    assert [o.prompt_token_ids for o in outs] == prompts
    assert [len(o.outputs[0].token_ids) for o in outs] == lens
    o = outs[0]
    assert isinstance(o.outputs[0], CompletionOutput) and o.finished
    assert o.metrics.arrival_time <= o.metrics.first_token_time <= o.metrics.finished_time
    assert "RequestOutput(request_id=" in repr(o) and "CompletionOutput(index=0" in repr(o)
    single = llm.generate(prompts[1], greedy(1), use_tqdm=False)       # one token-id prompt
    assert len(single) == 1 and single[0].prompt_token_ids == prompts[1]
    assert llm.generate([], use_tqdm=False) == []


@pytest.mark.parametrize("have_tqdm", [True, False])
def test_progress_bar(llm, capsys, monkeypatch, have_tqdm):
    if have_tqdm:
        pytest.importorskip("tqdm")
    else:                                   # the one-line fallback bar
        monkeypatch.setitem(__import__("sys").modules, "tqdm", None)
        monkeypatch.setitem(__import__("sys").modules, "tqdm.auto", None)
    outs = llm.generate([[1, 2, 3], [4, 5]], greedy(3), use_tqdm=True)
    assert len(outs) == 2
    err = capsys.readouterr().err
    assert "toks/s" in err and "input:" in err and "output:" in err
    if not have_tqdm:
        assert "Processed prompts 2/2" in err
    llm.generate([[1, 2]], greedy(2), use_tqdm=False)
    assert capsys.readouterr().err == ""


def test_invalid_requests_raise(llm):
    with pytest.raises(ValueError):
        llm.generate([[1, V]], greedy(2), use_tqdm=False)          # token out of range
    with pytest.raises(ValueError):
        llm.generate([[]], greedy(2), use_tqdm=False)              # empty prompt
    with pytest.raises(ValueError):
        llm.generate([[1] * 100], greedy(100), use_tqdm=False)     # > max_model_len (128)
    with pytest.raises(ValueError):
        llm.generate([[1, 2]], greedy(2, logit_bias={V + 5: 1.0}), use_tqdm=False)
    with pytest.raises(ValueError, match="one per prompt"):
        llm.generate([[1], [2]], [greedy(1)], use_tqdm=False)
    with pytest.raises(TypeError):
        llm.generate([[1]], sampling_params={"temperature": 0}, use_tqdm=False)
    with pytest.raises(TypeError):
        llm.generate(3.5, use_tqdm=False)
    with pytest.raises(ValueError):         # a bad request in the middle: nothing is left queued
        llm.generate([[1, 2], [1, V + 1], [3]], greedy(2), use_tqdm=False)
    assert_all_blocks_free(llm)
    assert llm.generate([[1, 2]], greedy(2), use_tqdm=False)[0].finished


@pytest.mark.parametrize("kw,exc,match", [
    (dict(block_size=12), ValueError, "block_size"),
    (dict(block_size="16"), TypeError, "block_size"),
    (dict(max_num_seqs=0), ValueError, "max_num_seqs"),
    (dict(max_num_batched_tokens=0), ValueError, "max_num_batched_tokens"),
    (dict(max_model_len=0), ValueError, "max_model_len"),
    (dict(gpu_memory_utilization=0.0), ValueError, "gpu_memory_utilization"),
    (dict(gpu_memory_utilization=1.5), ValueError, "gpu_memory_utilization"),
    (dict(num_kv_blocks=0), ValueError, "num_kv_blocks"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(tensor_parallel_size=2), ValueError, "tensor_parallel_size"),
    (dict(tensor_parallel_size=0), ValueError, "tensor_parallel_size"),
    (dict(dtype="int8"), ValueError, "dtype"),
    (dict(device="tpu"), ValueError, "device"),
    (dict(attention_backend=3), TypeError, "attention_backend"),
])
def test_llm_invalid_arguments(small_model, kw, exc, match):
    args = dict(device="cpu", dtype="float32")
    args.update(kw)
    with pytest.raises(exc, match=match):
        LLM(model=small_model.path, **args)


def test_missing_model_and_default_model(tmp_path):
    with pytest.raises(FileNotFoundError):
        LLM(model=str(tmp_path / "nope"), device="cpu")
    import os
    default = os.path.join(os.path.dirname(gpt2_engine.__file__), "data", "default_model")
    if not os.path.isdir(default):
        with pytest.raises(FileNotFoundError, match="default model"):
            LLM(device="cpu")


def test_close_and_context_manager(small_model):
    llm = make_llm(small_model)
    assert llm.device == "cpu" and llm.dtype == "float32"
    assert isinstance(llm.attention_backend, str) and llm.max_model_len == 128
    llm.close()
    llm.close()                               # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        llm.generate([[1]], use_tqdm=False)
    with make_llm(small_model) as other:
        assert other.generate([[1, 2]], greedy(2), use_tqdm=False)[0].finished
    with pytest.raises(RuntimeError):
        other.step()
    tmp = make_llm(small_model)
    del tmp
    gc.collect()


def test_auto_device_and_dtype_on_cpu(small_model):
    if gpt2_engine.cuda_available():
        pytest.skip("auto picks CUDA here")
    with LLM(model=small_model.path) as llm:
        assert llm.device == "cpu" and llm.dtype == "float32"


def test_bf16_checkpoint_runs_in_fp32_on_cpu(tmp_path):
    m = make_model(tmp_path, dtype="bfloat16")
    with LLM(model=m.path, device="cpu") as llm:
        assert llm.dtype == "float32"
        out = llm.generate([[5, 6, 7]], greedy(5), use_tqdm=False)[0]
    seq = [5, 6, 7]
    for tok in out.outputs[0].token_ids:
        ref = reference_logits(m.weights, m.config, seq)[-1]
        assert ref[tok] >= ref.max() - 1e-4
        seq.append(tok)
