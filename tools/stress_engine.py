"""stress_engine.py — scripted run of many random requests with mixed sampling
parameters through a deliberately small KV cache (issue 4's done-when).

    python tools/stress_engine.py [--requests 1000] [--num-kv-blocks 48] [--seed 0]

Requests arrive a few per step (so prefills share steps with decodes), some
share prompt prefixes (prefix caching), some are aborted mid-flight, a few are
impossible and must be rejected at add_request. At the end it asserts that
every request finished with a valid finish reason, no sequence exceeded its
max_tokens, excluded stop strings never appear in the text, and every KV block
is free again; then prints steps, preemptions and prefix-cache figures.
"""
import argparse
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gpt2_engine import LLM, SamplingParams  # noqa: E402
from tools.make_random_model import make_random_model  # noqa: E402


def random_params(rng, vocab):
    kw = dict(max_tokens=rng.randint(1, 48), n=rng.choice([1, 1, 1, 2, 3]))
    kind = rng.random()
    if kind < 0.25:
        kw["temperature"] = 0.0
    else:
        kw["temperature"] = rng.choice([0.5, 0.8, 1.0, 1.3])
        if rng.random() < 0.4:
            kw["top_k"] = rng.choice([1, 5, 50])
        if rng.random() < 0.4:
            kw["top_p"] = rng.choice([0.5, 0.9])
        if rng.random() < 0.2:
            kw["min_p"] = 0.05
    if rng.random() < 0.5:
        kw["seed"] = rng.randint(0, 2**31)
    if rng.random() < 0.2:
        kw["presence_penalty"] = rng.uniform(-1, 1)
        kw["frequency_penalty"] = rng.uniform(-1, 1)
    if rng.random() < 0.2:
        kw["repetition_penalty"] = rng.choice([0.8, 1.2])
    if rng.random() < 0.15:
        kw["logit_bias"] = {rng.randrange(vocab): rng.uniform(-5, 5) for _ in range(3)}
    if rng.random() < 0.2:
        kw["min_tokens"] = rng.randint(0, kw["max_tokens"])
    if rng.random() < 0.2:
        kw["stop_token_ids"] = [rng.randrange(vocab) for _ in range(2)]
    if rng.random() < 0.2:
        kw["stop"] = [rng.choice(["e", "th", " a", "\n", "ing"])]
        kw["include_stop_str_in_output"] = rng.random() < 0.3
    if rng.random() < 0.2:
        kw["logprobs"] = rng.choice([0, 1, 5])
    if rng.random() < 0.1:
        kw["prompt_logprobs"] = rng.choice([0, 2])
    if rng.random() < 0.1:
        kw["ignore_eos"] = True
    return kw


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--num-kv-blocks", type=int, default=48)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--max-num-seqs", type=int, default=16)
    ap.add_argument("--max-num-batched-tokens", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None, help="model dir (default: a random tiny GPT-2)")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)

    tmp = None
    model = args.model
    if model is None:
        tmp = tempfile.TemporaryDirectory()
        model = tmp.name
        make_random_model(model, n_embd=64, n_layer=2, n_head=4, n_positions=512,
                          vocab_size=2000, seed=args.seed)
    llm = LLM(model=model, device="cpu", num_kv_blocks=args.num_kv_blocks,
              block_size=args.block_size, max_num_seqs=args.max_num_seqs,
              max_num_batched_tokens=args.max_num_batched_tokens, seed=args.seed)
    vocab = llm.model_config["vocab_size"] if isinstance(llm.model_config, dict) else 2000
    total_blocks = llm.kv_cache.num_free_blocks
    max_len = llm.max_model_len
    bs = args.block_size

    prefixes = [[rng.randrange(vocab) for _ in range(rng.randint(8, 64))] for _ in range(8)]
    pending, params_of, rejected = [], {}, 0
    for i in range(args.requests):
        if rng.random() < 0.4:
            prompt = rng.choice(prefixes) + [rng.randrange(vocab) for _ in range(rng.randint(0, 16))]
        else:
            prompt = [rng.randrange(vocab) for _ in range(rng.randint(1, 120))]
        kw = random_params(rng, vocab)
        pending.append((f"req-{i}", prompt, kw))
    # impossible requests: rejected at add time, never a hang
    impossible = [
        ("too-long", [1] * (max_len - 4), dict(max_tokens=16)),
        ("too-many-blocks", [1] * (max_len - 112), dict(max_tokens=100, n=8)),
    ]
    for rid, prompt, kw in impossible:
        try:
            llm.add_request(rid, prompt, SamplingParams(**kw))
        except ValueError as exc:
            rejected += 1
            print(f"rejected {rid}: {exc}")
    assert rejected == len(impossible), "an impossible request was accepted"
    assert not llm.has_unfinished_requests()

    finished, aborted, steps, t0 = {}, set(), 0, time.perf_counter()
    live = set()
    while pending or llm.has_unfinished_requests():
        for _ in range(rng.randint(0, 4)):
            if pending:
                rid, prompt, kw = pending.pop(0)
                llm.add_request(rid, prompt, SamplingParams(**kw))
                params_of[rid] = (prompt, kw)
                live.add(rid)
        if live and rng.random() < 0.01:
            victim = rng.choice(sorted(live))
            llm.abort_request(victim)
            aborted.add(victim)
            live.discard(victim)
        if not llm.has_unfinished_requests():
            continue
        for out in llm.step():
            if out.finished:
                finished[out.request_id] = out
                live.discard(out.request_id)
        steps += 1
    elapsed = time.perf_counter() - t0

    # invariants
    done = set(finished) | aborted
    assert done == set(params_of), f"{len(set(params_of) - done)} requests never finished"
    n_by_reason = {}
    for rid, out in finished.items():
        prompt, kw = params_of[rid]
        assert len(out.outputs) == kw["n"], rid
        for c in out.outputs:
            n_by_reason[c.finish_reason] = n_by_reason.get(c.finish_reason, 0) + 1
            assert c.finish_reason in ("stop", "length", "abort"), (rid, c.finish_reason)
            assert 1 <= len(c.token_ids) <= kw["max_tokens"] or c.finish_reason == "abort", rid
            if c.finish_reason == "length":
                assert len(c.token_ids) == kw["max_tokens"], rid
            if kw.get("stop") and not kw.get("include_stop_str_in_output") and \
                    not kw.get("min_tokens"):   # before min_tokens stop strings are not checked
                for s in kw["stop"]:
                    assert s not in c.text, (rid, s, c.text, kw, c.finish_reason)
            if isinstance(c.stop_reason, int):
                assert c.token_ids[-1] == c.stop_reason, rid
            if kw.get("min_tokens") and c.finish_reason == "stop":
                assert len(c.token_ids) >= kw["min_tokens"], rid
            if kw.get("logprobs") is not None:
                assert len(c.logprobs) == len(c.token_ids), rid
        if kw.get("prompt_logprobs") is not None:
            assert len(out.prompt_logprobs) == len(prompt), rid
    free = llm.kv_cache.num_free_blocks
    stats = llm.stats
    print(f"requests: {len(params_of)} ({len(finished)} finished, {len(aborted)} aborted, "
          f"{rejected} rejected at add)")
    print(f"finish reasons (sequences): {n_by_reason}")
    print(f"steps: {stats['num_steps']}  preemptions: {stats['num_preemptions']}  "
          f"prefix cache: {stats['prefix_cache_hits']}/{stats['prefix_cache_queries']} tokens hit  "
          f"prompt tokens: {stats['prompt_tokens']}  generated: {stats['generation_tokens']}")
    print(f"KV blocks free at the end: {free}/{total_blocks}  ({elapsed:.1f} s)")
    assert free == total_blocks, f"leaked {total_blocks - free} KV blocks"
    llm.close() if hasattr(llm, "close") else None
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
