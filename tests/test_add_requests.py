"""The batch paths of generate(): Engine.add_requests (all prompts and params
in one call, all or nothing) against one add_request per prompt, its refusals
(each leaves the engine as it was: nothing queued, no block held, the seeds of
later unseeded requests unchanged), generate()'s fast path against its
reference path, and Engine.step(max_steps=...) running steps in C until one
reports (and stopping at a signal between steps)."""
import signal

import numpy as np
import pytest

from gpt2_engine import LLM, SamplingParams

V = 512          # small_model's vocab


def make_llm(model, **kw):
    return LLM(model=model.path, device="cpu", dtype="float32", max_num_batched_tokens=256,
               **kw)


@pytest.fixture(scope="module")
def llm(small_model):
    with make_llm(small_model) as engine:
        yield engine


def prompts(seed, n, length=9):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, V - 1, size=length + i % 3).tolist() for i in range(n)]


def greedy(max_tokens, **kw):
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, **kw)


def drain(engine):
    """Steps until idle; the final outputs by request id, as (token ids, text, reason)."""
    final = {}
    while engine.has_unfinished_requests():
        for rid, _, _, finished, _, seqs in engine.step():
            if finished:
                final[rid] = [(list(ids), text, reason) for _, text, ids, _, _, reason, _ in seqs]
    return final


def assert_idle(llm):
    kv = llm.kv_cache
    assert kv.num_free_blocks == kv.num_blocks
    assert not llm.has_unfinished_requests()


def test_add_requests_equals_add_request(llm):
    engine = llm._engine
    ps = prompts(1, 6)
    params = [greedy(4), greedy(7), greedy(2, stop=[" the"]),
              SamplingParams(max_tokens=5, n=2, seed=3, temperature=0.8),
              greedy(3, logprobs=2), SamplingParams(max_tokens=6, seed=11)]
    for i, (p, sp) in enumerate(zip(ps, params)):
        engine.add_request(f"one{i}", p, sp)
    one = drain(engine)
    engine.add_requests([f"all{i}" for i in range(6)], [tuple(p) for p in ps], params)
    batch = drain(engine)
    assert [one[f"one{i}"] for i in range(6)] == [batch[f"all{i}"] for i in range(6)]
    engine.add_requests(["shared0", "shared1"], ps[:2], greedy(4))     # one params for all
    shared = drain(engine)
    assert shared["shared0"] == one["one0"]
    engine.add_requests(["default"], ps[:1], None)                     # None: the defaults
    assert 1 <= len(drain(engine)["default"][0][0]) <= SamplingParams().max_tokens
    engine.add_requests([], [], greedy(1))
    assert_idle(llm)


BAD = [                                     # (request ids, prompts, params) -> exception
    (["a", "b", "c"], [[1, 2], [1, V], [3]], ValueError, r"request 'b'.*out of range"),
    (["a", "b"], [[1, 2], []], ValueError, "at least one token"),
    (["a", "b"], [[1, 2], [1] * 127], ValueError, "max_model_len"),
    (["a", "b"], [[1, 2], [1, 2**40]], ValueError, "out of range"),
    (["a", "b"], [[1, 2], [1, True]], TypeError, r"prompts\[1\] must contain ints.*bool"),
    (["a", "b"], [[1, 2], [1, 2.0]], TypeError, "float"),
    (["a", "b"], [[1, 2], [np.int64(1)]], TypeError, "int64"),
    (["a", "b"], [[1, 2], "ab"], TypeError, r"prompts\[1\] must be a list"),
    (["a", "b"], [[1, 2]], ValueError, "entries"),
    (["a", 7], [[1, 2], [3]], TypeError, r"request_ids\[1\]"),
    ("ab", [[1, 2], [3]], TypeError, "request_ids"),
    (["a", "b"], ([1, 2] for _ in range(2)), TypeError, "prompts"),
    (["a", "a"], [[1, 2], [3]], ValueError, "appears twice"),
]


@pytest.mark.parametrize("ids,ps,exc,match", BAD)
def test_add_requests_refuses_and_queues_nothing(llm, ids, ps, exc, match):
    engine = llm._engine
    with pytest.raises(exc, match=match):
        engine.add_requests(ids, ps, greedy(2))
    assert_idle(llm)
    engine.add_requests(["ok0", "ok1"], [[1, 2], [3, 4]], greedy(2))
    assert sorted(drain(engine)) == ["ok0", "ok1"]
    assert_idle(llm)


@pytest.mark.parametrize("params,exc,match", [
    ({"temperature": 0}, TypeError, "SamplingParams"),
    ([greedy(1)], ValueError, "one per request"),
    ([greedy(1), "x"], TypeError, "SamplingParams"),
    ([greedy(1), greedy(2, logit_bias={V + 5: 1.0})], ValueError, "logit_bias"),
    ([greedy(1), greedy(2, n=1000)], ValueError, "max_num_seqs"),
])
def test_add_requests_refuses_bad_params(llm, params, exc, match):
    with pytest.raises(exc, match=match):
        llm._engine.add_requests(["a", "b"], [[1, 2], [3]], params)
    assert_idle(llm)


def test_add_requests_refuses_an_id_in_use(llm):
    engine = llm._engine
    engine.add_request("live", [1, 2, 3], greedy(3))
    with pytest.raises(ValueError, match="'live' is already in use"):
        engine.add_requests(["new", "live"], [[1], [2]], greedy(2))
    assert engine.num_unfinished_requests() == 1
    assert sorted(drain(engine)) == ["live"]
    engine.add_requests(["live", "new"], [[1], [2]], greedy(2))    # finished: free again
    assert sorted(drain(engine)) == ["live", "new"]
    assert_idle(llm)


def test_refused_batch_leaves_seeds_unchanged(small_model):
    """Unseeded sampling derives each request's seed from its arrival order: a
    refused batch must not use up arrival numbers."""
    ps = prompts(2, 3)
    sp = SamplingParams(temperature=1.0, max_tokens=6, ignore_eos=True)
    runs = []
    for refuse_first in (False, True):
        with make_llm(small_model, seed=5) as llm:
            if refuse_first:
                with pytest.raises(ValueError):
                    llm._engine.add_requests(["x", "y", "z"], [ps[0], ps[1], [V]], sp)
            outs = llm.generate(ps, sp, use_tqdm=False)
            runs.append([o.outputs[0].token_ids for o in outs])
    assert runs[0] == runs[1]


def test_generate_fast_and_reference_paths_agree(llm):
    """Plain-int prompts take add_requests; NumPy ints the reference path."""
    ps = prompts(3, 4)
    params = [greedy(3 + i) for i in range(4)]
    fast = llm.generate([{"prompt_token_ids": p, "prompt": f"p{i}"} for i, p in enumerate(ps)],
                        params, use_tqdm=False)
    ref = llm.generate([[np.int32(t) for t in p] for p in ps], params, use_tqdm=False)
    for f, r, p in zip(fast, ref, ps):
        assert f.prompt_token_ids == r.prompt_token_ids == p
        assert [c.token_ids for c in f.outputs] == [c.token_ids for c in r.outputs]
        assert [c.text for c in f.outputs] == [c.text for c in r.outputs]
        assert f.finished and r.finished and f.metrics.last_token_time is not None
    assert [o.prompt for o in fast] == [f"p{i}" for i in range(4)]
    assert [o.prompt for o in ref] == [None] * 4
    ids = [int(o.request_id[4:]) for o in fast + ref]
    assert ids == list(range(ids[0], ids[0] + 8))          # gen-N, consecutive


def test_step_max_steps_returns_at_the_first_finish(llm):
    engine = llm._engine
    engine.add_requests(["short", "long"], [[1, 2, 3], [4, 5, 6]], [greedy(3), greedy(8)])
    before = llm.stats["num_steps"]
    outs = engine.step(finished_only=True, max_steps=1000)
    assert [t[0] for t in outs] == ["short"] and llm.stats["num_steps"] - before == 3
    outs = engine.step(finished_only=True, max_steps=2)         # stops at max_steps
    assert outs == [] and llm.stats["num_steps"] - before == 5
    outs = engine.step(finished_only=True, max_steps=1000)
    assert [t[0] for t in outs] == ["long"] and llm.stats["num_steps"] - before == 8
    assert_idle(llm)
    assert engine.step(max_steps=5) == []                        # idle: returns at once
    with pytest.raises(ValueError, match="max_steps"):
        engine.step(max_steps=0)


def test_step_max_steps_stops_at_a_signal(llm):
    """A KeyboardInterrupt between two of the C loop's steps ends the call; the
    requests stay queued and the engine usable."""
    engine = llm._engine
    engine.add_requests([f"sig{i}" for i in range(8)], prompts(4, 8, 6), greedy(100))

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    before = llm.stats["num_steps"]
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.002)
        with pytest.raises(KeyboardInterrupt):
            engine.step(finished_only=True, max_steps=10**6)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    ran = llm.stats["num_steps"] - before
    assert 1 <= ran < 100 and engine.num_unfinished_requests() == 8
    final = drain(engine)
    assert all(len(final[f"sig{i}"][0][0]) == 100 for i in range(8))
    assert_idle(llm)
