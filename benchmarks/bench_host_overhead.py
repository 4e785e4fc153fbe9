"""bench_host_overhead.py — where the engine's host time per step goes.

Runs LLM.generate (the bench_throughput.py workload: N prompts x 128 random
tokens, 128 greedy output tokens, ignore_eos, no progress bar) at batch 1, 64
and 256 on a small random model with the real 50257-token vocabulary, and prints
the engine's per-phase wall time per step (the time_*_s counters of llm.stats,
engine.h). The model is tiny so that the forward pass is cheap, but on the CPU
`forward` and `sample` are the model's and the sampler's compute, which a GPU
does instead: what matters here is every other column, the host work between
two device steps (on a GPU, `forward` is the launch and `sample` includes the
wait for the device).

    python benchmarks/bench_host_overhead.py [--batches 1,64,256] [--out-len 128]
        [--device cpu] [--model DIR] [--json PATH]
"""
import argparse
import json
import os
import random
import sys
import tempfile
import time

# one BLAS thread: idle BLAS threads spinning on this machine's cores would
# inflate the host phases being measured (the forward's speed does not matter)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PHASES = [("schedule", "time_schedule_s"), ("prepare", "time_prepare_s"),
          ("forward", "time_forward_s"), ("samp.setup", "time_sample_setup_s"),
          ("sample", "time_sample_s"), ("update", "time_update_s"),
          ("outputs", "time_outputs_s"), ("binding", "time_binding_s"),
          ("python", "time_python_s")]
DEVICE_PHASES = {"forward", "sample"}     # the device's work (and wait) on a GPU


def make_model(path):
    from tools.make_random_model import make_random_model
    make_random_model(path, n_embd=16, n_layer=1, n_head=1, n_positions=512,
                      vocab_size=50257, std=0.3)


def measure(llm, batch, prompt_len, out_len, seed=0):
    from gpt2_engine import SamplingParams
    rng = random.Random(seed + batch)
    prompts = [{"prompt_token_ids": [rng.randrange(50257) for _ in range(prompt_len)]}
               for _ in range(batch)]
    sp = SamplingParams(max_tokens=out_len, ignore_eos=True, temperature=0.0)
    llm.generate(prompts[:1], SamplingParams(max_tokens=2, ignore_eos=True), use_tqdm=False)
    before = llm.stats
    t0 = time.perf_counter()
    outs = llm.generate(prompts, sp, use_tqdm=False)
    wall = time.perf_counter() - t0
    after = llm.stats
    got = sum(len(o.outputs[0].token_ids) for o in outs)
    if got != batch * out_len:
        raise RuntimeError(f"got {got} output tokens, expected {batch * out_len}")
    steps = after["num_steps"] - before["num_steps"]
    per = {name: (after[key] - before[key]) / steps * 1e6 for name, key in PHASES}
    host = sum(v for k, v in per.items() if k not in DEVICE_PHASES)
    return dict(batch=batch, steps=steps, wall_us=wall / steps * 1e6, host_us=host, **per)


def main():
    ap = argparse.ArgumentParser(description="engine host time per step, by phase")
    ap.add_argument("--batches", default="1,64,256")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--out-len", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default=None, help="checkpoint dir (default: a tiny random one)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    from gpt2_engine import LLM
    tmp = None
    model = a.model
    if model is None:
        tmp = tempfile.TemporaryDirectory()
        model = os.path.join(tmp.name, "tiny")
        make_model(model)
    batches = [int(b) for b in a.batches.split(",")]
    rows = []
    with LLM(model=model, device=a.device, max_num_seqs=max(batches),
             max_num_batched_tokens=8192, max_model_len=a.prompt_len + a.out_len) as llm:
        for b in batches:
            rows.append(measure(llm, b, a.prompt_len, a.out_len))
    cols = ["batch", "steps"] + [n for n, _ in PHASES] + ["host", "wall"]
    print(f"engine time per step (us), {a.device}, {a.prompt_len} in / {a.out_len} out, greedy; "
          f"host = all but {'/'.join(sorted(DEVICE_PHASES))}")
    print("".join(f"{c:>11}" for c in cols))
    for r in rows:
        vals = [r["batch"], r["steps"]] + [r[n] for n, _ in PHASES] + [r["host_us"], r["wall_us"]]
        print("".join(f"{v:>11d}" if isinstance(v, int) else f"{v:>11.1f}" for v in vals))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
