"""Host-side step machinery: the per-phase timers in llm.stats, lazy
detokenization (text brought up to date only when reported or at finish) and
finished-only reporting (generate()'s steps), the O(1) unfinished-request count,
and the fast path for token-id prompts. Each is checked against the plain
behaviour it replaces: streamed text equals the tokenizer's decode of the
streamed ids, generate() equals a step()-by-step run."""
import numpy as np
import pytest

from gpt2_engine import LLM, SamplingParams

V = 512          # small_model's vocab

TIME_KEYS = ["time_schedule_s", "time_prepare_s", "time_forward_s", "time_sample_setup_s",
             "time_sample_s", "time_update_s", "time_outputs_s", "time_binding_s",
             "time_python_s"]


@pytest.fixture(scope="module")
def llm(small_model):
    with LLM(model=small_model.path, device="cpu", dtype="float32", block_size=16,
             max_num_batched_tokens=256) as engine:
        yield engine


def prompts(seed, n, length=10):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, V - 1, size=length).tolist() for _ in range(n)]


def greedy(max_tokens, **kw):
    kw.setdefault("ignore_eos", True)
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, **kw)


def run_by_steps(llm, ps, params):
    """Every request through llm.step(); checks each streamed text against the
    tokenizer's decode of the streamed ids; returns the final outputs by id."""
    tok = llm.get_tokenizer()
    for i, (p, sp) in enumerate(zip(ps, params)):
        llm.add_request(f"st{i}", p, sp)
    final = {}
    while llm.has_unfinished_requests():
        for out in llm.step():
            if not out.request_id.startswith("st"):
                continue
            for c in out.outputs:
                if c.finish_reason is None and not sp_has_stop(params, out.request_id):
                    # ids past the tokenizer's vocabulary decode to nothing; a live
                    # sequence may withhold at most 3 bytes of an unfinished character
                    full = tok.decode(c.token_ids)
                    assert full.startswith(c.text.rstrip("\ufffd")) or \
                        c.text.startswith(full.rstrip("\ufffd")), (c.text, full)
            if out.finished:
                final[out.request_id] = out
    return [final[f"st{i}"] for i in range(len(ps))]


def sp_has_stop(params, rid):
    return bool(params[int(rid[2:])].stop)


def same_outputs(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert len(x.outputs) == len(y.outputs)
        for cx, cy in zip(x.outputs, y.outputs):
            assert cx.token_ids == cy.token_ids
            assert cx.text == cy.text
            assert cx.finish_reason == cy.finish_reason
            assert cx.stop_reason == cy.stop_reason
            assert cx.cumulative_logprob == pytest.approx(cy.cumulative_logprob, abs=1e-5)


def test_stats_time_keys_exist_and_grow(llm):
    before = llm.stats
    for k in TIME_KEYS:
        assert isinstance(before[k], float) and before[k] >= 0.0, k
    llm.generate(prompts(1, 4), greedy(5), use_tqdm=False)
    llm.generate(prompts(2, 2), greedy(3), use_tqdm=False)
    after = llm.stats
    assert after["num_steps"] > before["num_steps"]
    for k in TIME_KEYS:
        assert after[k] >= before[k] >= 0.0, k
    # the phases that run every step take measurable time
    for k in ("time_schedule_s", "time_prepare_s", "time_forward_s", "time_sample_s",
              "time_update_s"):
        assert after[k] > before[k], k
    assert after["time_python_s"] > 0.0 and after["time_binding_s"] > 0.0


def test_generate_equals_step_by_step(llm):
    """generate() (finished-only steps, lazy text) vs step() (every step reported,
    text brought up to date each step): same ids, text, finish and stop reasons,
    with and without stop strings and stop tokens."""
    base = prompts(3, 1, 12)[0]
    probe = llm.generate([base], greedy(40), use_tqdm=False)[0].outputs[0]
    text = probe.text
    stop_str = text[len(text) // 2:len(text) // 2 + 2] if len(text) >= 4 else "zz"
    stop_tok = probe.token_ids[20]
    ps = [base, base, base, base, base] + prompts(4, 3, 7)
    params = [greedy(40), greedy(40, stop=[stop_str]),
              greedy(40, stop=[stop_str], include_stop_str_in_output=True),
              greedy(40, stop_token_ids=[stop_tok]),
              greedy(40, stop_token_ids=[stop_tok], include_stop_str_in_output=True),
              greedy(9), greedy(17, logprobs=2), greedy(25, stop=["\n", "e"])]
    gen = llm.generate(ps, params, use_tqdm=False)
    stepped = run_by_steps(llm, ps, params)
    same_outputs(gen, stepped)
    assert gen[0].outputs[0].text == llm.get_tokenizer().decode(gen[0].outputs[0].token_ids)
    if stop_str in text:
        assert gen[1].outputs[0].finish_reason == "stop"
        assert gen[1].outputs[0].stop_reason == stop_str
        assert gen[2].outputs[0].text.endswith(stop_str)
    assert gen[3].outputs[0].finish_reason == "stop"
    assert gen[3].outputs[0].stop_reason == stop_tok
    assert gen[3].outputs[0].token_ids[-1] == stop_tok


def test_text_catches_up_after_finished_only_steps(llm):
    """Steps that report only finished requests leave the others' text behind;
    a later full step() reports it complete and cumulative."""
    engine = llm._engine
    ps = prompts(5, 2, 8)
    llm.add_request("lazy0", ps[0], greedy(12))
    llm.add_request("lazy1", ps[1], greedy(30))
    for _ in range(5):                      # progress nobody looks at
        assert [t for t in engine.step(finished_only=True) if t[0].startswith("lazy")] == []
    outs = {o.request_id: o for o in llm.step()}
    tok = llm.get_tokenizer()
    for rid in ("lazy0", "lazy1"):
        c = outs[rid].outputs[0]
        assert len(c.token_ids) == 6
        assert c.text == tok.decode(c.token_ids) or \
            tok.decode(c.token_ids).startswith(c.text)
    done = {}
    while llm.has_unfinished_requests():
        for t in engine.step(finished_only=True):
            assert t[3]                     # finished only
            done[t[0]] = t
    assert set(done) >= {"lazy0", "lazy1"}
    ref = llm.generate(ps, [greedy(12), greedy(30)], use_tqdm=False)
    for rid, r in zip(("lazy0", "lazy1"), ref):
        seqs = done[rid][5]
        assert list(seqs[0][2]) == r.outputs[0].token_ids
        assert seqs[0][1] == r.outputs[0].text


def test_abort_reports_text_so_far(llm):
    engine = llm._engine
    p = prompts(6, 1, 8)[0]
    llm.add_request("ab", p, greedy(30))
    for _ in range(6):
        engine.step(finished_only=True)
    llm.abort_request("ab")
    outs = [o for o in llm.step() if o.request_id == "ab"]
    assert len(outs) == 1 and outs[0].finished
    c = outs[0].outputs[0]
    assert c.finish_reason == "abort" and len(c.token_ids) == 6     # a token a step
    full = llm.generate([p], greedy(6), use_tqdm=False)[0].outputs[0]
    assert c.token_ids == full.token_ids
    assert full.text.startswith(c.text)


def test_unfinished_count_tracks_add_abort_finish(llm):
    engine = llm._engine
    while llm.has_unfinished_requests():
        llm.step()
    assert engine.num_unfinished_requests() == 0
    ps = prompts(7, 4, 6)
    for i, p in enumerate(ps):
        llm.add_request(f"cnt{i}", p, greedy(3 + i))
    assert engine.num_unfinished_requests() == 4
    with pytest.raises(ValueError):
        llm.add_request("cnt9", [V + 5], greedy(2))      # rejected: not counted
    assert engine.num_unfinished_requests() == 4
    llm.abort_request("cnt1")
    llm.abort_request("cnt1")                           # twice: counted once
    assert engine.num_unfinished_requests() == 3
    seen_finished = set()
    while llm.has_unfinished_requests():
        for o in llm.step():
            if o.finished:
                seen_finished.add(o.request_id)
        assert engine.num_unfinished_requests() == 3 - len(seen_finished - {"cnt1"})
    assert engine.num_unfinished_requests() == 0
    assert {"cnt0", "cnt1", "cnt2", "cnt3"} <= seen_finished
    logits = llm.compute_logits([ps[0]])[0]                # internal request: back to 0
    assert logits.shape == (len(ps[0]), V)
    assert engine.num_unfinished_requests() == 0 and not llm.has_unfinished_requests()


def test_token_id_prompt_forms(llm):
    ids = prompts(8, 1, 6)[0]
    ref = llm.generate([ids], greedy(4), use_tqdm=False)[0].outputs[0].token_ids
    forms = [ids, tuple(ids), {"prompt_token_ids": ids}, {"prompt_token_ids": tuple(ids)},
             np.array(ids, dtype=np.int64), [np.int64(t) for t in ids],
             {"prompt_token_ids": [np.int32(t) for t in ids]}]
    for f in forms:
        out = llm.generate([f], greedy(4), use_tqdm=False)[0]
        assert out.outputs[0].token_ids == ref
        assert out.prompt_token_ids == ids and all(type(t) is int for t in out.prompt_token_ids)
    assert llm.generate(ids, greedy(4), use_tqdm=False)[0].outputs[0].token_ids == ref
    with pytest.raises(TypeError):
        llm.generate([[1, True, 3]], greedy(2), use_tqdm=False)
    with pytest.raises(TypeError):
        llm.generate([{"prompt_token_ids": [1, 2.0]}], greedy(2), use_tqdm=False)
    with pytest.raises(TypeError):
        llm.generate([[1, "a"]], greedy(2), use_tqdm=False)
