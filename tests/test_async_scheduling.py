"""Async scheduling (LLM(async_scheduling=True), engine.h): generate() launches
each step before the previous one's tokens reach the host, the device feeding
them into the next step's inputs. It must change nothing a user can see: the
same tokens, text, logprobs and finish reasons as the synchronous engine for
every kind of request (greedy, seeded sampling, stop tokens and strings that
end a sequence a step before the engine knows, n > 1, logprobs, prompt
logprobs, penalties, preemption, prefix hits), the same errors, and an idle
engine afterwards. On the CPU there is nothing to overlap, but the same code
runs (feeds from the sampler's last output), so CI checks the logic; on a GPU
the same tests run with float32 (bitwise-comparable to the synchronous path)."""
import signal

import numpy as np
import pytest

from conftest import HAVE_CUDA, make_model
from gpt2_engine import LLM, SamplingParams

V = 512          # small_model's vocab

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not HAVE_CUDA, reason="needs a CUDA GPU and a CUDA build"))]


@pytest.fixture(scope="module")
def gpu_model(tmp_path_factory):
    """small_model's shape with head size 64 (what the CUDA attention backends serve)."""
    return make_model(tmp_path_factory.mktemp("async_gpu_model"), n_embd=128, n_head=2)


@pytest.fixture
def model(request, small_model):
    """small_model on the CPU, gpu_model on CUDA (the test's `device`)."""
    if request.getfixturevalue("device") == "cpu":
        return small_model
    return request.getfixturevalue("gpu_model")


def make_llm(model, device, async_scheduling, **kw):
    kw.setdefault("max_num_batched_tokens", 256)
    return LLM(model=model.path, device=device, dtype="float32",
               async_scheduling=async_scheduling, **kw)


def prompts(seed, n, length=7):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, V - 1, size=length + i % 5).tolist() for i in range(n)]


def summary(outs):
    """Everything a user sees of generate()'s outputs, comparable with ==."""
    res = []
    for o in outs:
        seqs = []
        for c in o.outputs:
            lps = None if c.logprobs is None else [
                sorted((t, round(lp.logprob, 4), lp.rank) for t, lp in pos.items())
                for pos in c.logprobs]
            cum = None if c.cumulative_logprob is None else round(c.cumulative_logprob, 4)
            seqs.append((c.index, list(c.token_ids), c.text, c.finish_reason, c.stop_reason,
                         cum, lps))
        plp = None if o.prompt_logprobs is None else [
            None if pos is None else sorted((t, round(lp.logprob, 4)) for t, lp in pos.items())
            for pos in o.prompt_logprobs]
        res.append((o.request_id is not None, list(o.prompt_token_ids), seqs, plp))
    return res


def both(model, device, fn, **kw):
    """fn(llm) with async scheduling off and on; returns the two results and the
    async engine's stats."""
    results, stats = [], None
    for flag in (False, True):
        with make_llm(model, device, flag, **kw) as llm:
            assert llm.async_scheduling is flag
            results.append(fn(llm))
            kv = llm.kv_cache
            assert kv.num_free_blocks == kv.num_blocks and not llm.has_unfinished_requests()
            stats = llm.stats
    return results[0], results[1], stats


def greedy(max_tokens, **kw):
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, **kw)


def stop_params(llm, ps):
    """Per prompt, params that stop early on a token / a string the greedy run
    is known to produce (so the engine learns of the stop one step late)."""
    ref = llm.generate(ps, greedy(12), use_tqdm=False)
    out = []
    for i, o in enumerate(ref):
        ids, text = o.outputs[0].token_ids, o.outputs[0].text
        if i % 3 == 0:
            out.append(greedy(12, stop_token_ids=[ids[3 + i % 4]]))
        elif i % 3 == 1 and len(text) > 6:
            out.append(greedy(12, stop=[text[4:6]]))
        else:
            out.append(greedy(12, stop_token_ids=[ids[1]], min_tokens=5))
    return out


@pytest.mark.parametrize("device", DEVICES)
def test_async_equals_sync_for_every_kind_of_request(model, device):
    ps = prompts(1, 18)

    def run(llm):
        params = [greedy(3 + i % 7) for i in range(4)]
        params += [SamplingParams(temperature=0.8, top_p=0.9, top_k=40, seed=7 + i,
                                  max_tokens=9, ignore_eos=True) for i in range(3)]
        params += [SamplingParams(n=3, temperature=1.0, seed=5, max_tokens=6, ignore_eos=True),
                   greedy(8, logprobs=3), greedy(5, prompt_logprobs=2),
                   greedy(6, logit_bias={1: -float("inf"), 2: 5.0}),
                   SamplingParams(temperature=0.0, max_tokens=7, min_tokens=4)]
        params += stop_params(llm, ps[len(params):])
        return summary(llm.generate(ps, params, use_tqdm=False))

    sync, asyn, stats = both(model, device, run)
    assert asyn == sync
    assert stats["num_steps_ahead"] > 0


@pytest.mark.parametrize("device", DEVICES)
def test_async_launches_ahead_only_when_it_can(model, device):
    """Plain decodes launch ahead; penalties need the previous tokens on the
    host, so those steps wait (and still give the synchronous tokens)."""
    ps = prompts(2, 6)
    for params, ahead in ((greedy(20), True),
                          (greedy(20, frequency_penalty=0.5, presence_penalty=0.3,
                                  repetition_penalty=1.2), False)):
        sync, asyn, stats = both(
            model, device,
            lambda llm: summary(llm.generate(ps, params, use_tqdm=False)))
        assert asyn == sync
        assert (stats["num_steps_ahead"] > 0) is ahead, stats["num_steps_ahead"]


@pytest.mark.parametrize("device", DEVICES)
def test_async_with_preemption_and_prefix_hits(model, device):
    """A cache too small for the batch (preemption by recompute) and prompts
    sharing prefixes (cache hits), with stops the engine learns late."""
    base = prompts(3, 1, 40)[0]
    ps = [base[:17 + i] + p for i, p in enumerate(prompts(4, 10, 3))]

    def run(llm):
        params = [greedy(30 + i) if i % 2 else
                  SamplingParams(temperature=0.7, seed=i, max_tokens=25, ignore_eos=True)
                  for i in range(len(ps))]
        out = summary(llm.generate(ps, params, use_tqdm=False))
        return out, llm.stats["num_preemptions"] > 0, llm.stats["prefix_cache_hits"] > 0

    sync, asyn, _ = both(model, device, run, num_kv_blocks=24, block_size=8)
    assert asyn == sync
    assert sync[1] and sync[2]        # the case is exercised


@pytest.mark.parametrize("device", DEVICES)
def test_async_masked_row_raises_and_engine_recovers(model, device):
    """A request that can mask every token runs synchronously: the error is the
    synchronous one, and the engine serves the next generate."""
    ps = prompts(5, 4)
    bad = SamplingParams(max_tokens=4, logit_bias={t: -float("inf") for t in range(V)})

    def run(llm):
        with pytest.raises(ValueError, match="masked"):
            llm.generate(ps, [greedy(6), greedy(6), bad, greedy(6)], use_tqdm=False)
        return summary(llm.generate(ps, greedy(6), use_tqdm=False))

    sync, asyn, _ = both(model, device, run)
    assert asyn == sync


@pytest.mark.parametrize("device", DEVICES)
def test_async_interrupted_generate_leaves_a_usable_engine(model, device):
    """A KeyboardInterrupt between steps: the step in flight is finished, the
    requests of that generate() aborted, and the engine works on."""
    with make_llm(model, device, True) as llm:
        def interrupt(signum, frame):
            raise KeyboardInterrupt

        old = signal.signal(signal.SIGALRM, interrupt)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.003)
            with pytest.raises(KeyboardInterrupt):
                llm.generate(prompts(6, 8, 5), greedy(100), use_tqdm=False)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        kv = llm.kv_cache
        assert kv.num_free_blocks == kv.num_blocks and not llm.has_unfinished_requests()
        out = llm.generate(prompts(7, 3), greedy(5), use_tqdm=False)
        assert [len(o.outputs[0].token_ids) for o in out] == [5, 5, 5]


@pytest.mark.parametrize("device", DEVICES)
def test_async_then_step_api_and_compute_logits(model, device):
    """After an async generate(): the step-by-step API (synchronous: every call
    reports its own step) and the logits API see a consistent engine."""
    ps = prompts(8, 3)

    def run(llm):
        first = summary(llm.generate(ps, greedy(10), use_tqdm=False))
        llm.add_request("manual", ps[0], greedy(4))
        steps = 0
        while llm.has_unfinished_requests():
            steps += 1
            outs = llm.step()
            assert [o.request_id for o in outs] == ["manual"]
            assert len(outs[0].outputs[0].token_ids) == steps
        logits = llm.compute_logits(ps[1]) if hasattr(llm, "compute_logits") else None
        return first, outs[0].outputs[0].token_ids, \
            None if logits is None else np.round(np.asarray(logits), 4).tolist()

    sync, asyn, _ = both(model, device, run)
    assert asyn == sync


@pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA GPU and a CUDA build")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_async_equals_sync_half_precision_graphs(tmp_path, dtype):
    """fp16/bf16 with CUDA graphs, batch 33 over 64 tokens: with length-only
    finishes both engines run the same batches, so the tokens are bitwise equal."""
    model = make_model(tmp_path / "m", dtype=dtype, n_embd=128, n_head=2, n_positions=256)
    ps = prompts(9, 33, 20)
    params = [greedy(64) if i % 3 else
              SamplingParams(temperature=0.9, top_k=50, seed=i, max_tokens=40 + i % 9,
                             ignore_eos=True) for i in range(len(ps))]
    outs = []
    for flag in (False, True):
        with LLM(model=model.path, device="cuda", dtype=dtype, async_scheduling=flag) as llm:
            outs.append([list(o.outputs[0].token_ids)
                         for o in llm.generate(ps, params, use_tqdm=False)])
            assert (llm.stats["num_steps_ahead"] > 0) is flag
            assert llm.stats["graph_replays"] > 0
    assert outs[0] == outs[1]
