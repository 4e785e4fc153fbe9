#!/usr/bin/env python3
"""demo.py — `make demo`: generate text with the default model.

Until a trained default model is bundled, the demo writes a small random GPT-2
checkpoint (full 50257-token vocabulary) under build/demo_model and prints the
greedy continuation of a prompt — gibberish by construction, but produced by the
whole engine path: tokenizer, scheduler, paged KV cache, sampler, detokenizer."""
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gpt2_engine import LLM, SamplingParams  # noqa: E402


def default_model_dir():
    bundled = os.path.join(ROOT, "gpt2_engine", "data", "default_model")
    if os.path.exists(os.path.join(bundled, "config.json")):
        return bundled
    path = os.path.join(ROOT, "build", "demo_model")
    if not os.path.exists(os.path.join(path, "config.json")):
        from tools.make_random_model import make_random_model
        print(f"no bundled model yet: writing a random GPT-2 checkpoint to {path}")
        make_random_model(path, n_embd=256, n_layer=4, n_head=4, n_positions=256,
                          vocab_size=50257, seed=0, std=0.3)
    return path


def main():
    model = default_model_dir()
    t0 = time.perf_counter()
    llm = LLM(model=model)
    print(f"loaded {model} on {llm.device} ({llm.attention_backend} attention) "
          f"in {time.perf_counter() - t0:.2f}s")
    prompts = ["Today is a", "The meaning of life is"]
    greedy = SamplingParams(temperature=0.0, max_tokens=24)
    sampled = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=24, seed=1)
    for params in (greedy, sampled):
        print(f"\n{params}")
        for out in llm.generate(prompts, params, use_tqdm=False):
            print(f"  {out.prompt!r} -> {out.outputs[0].text!r}")
    llm.close()


if __name__ == "__main__":
    main()
