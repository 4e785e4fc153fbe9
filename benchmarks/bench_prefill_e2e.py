"""bench_prefill_e2e.py — end-to-end prefill-heavy throughput through LLM:
256 prompts of 512 random tokens, 16 greedy output tokens each (ignore_eos),
gpt2 shape with random fp16 weights, FLASH vs PAGED attention in the same run
(each in its own child process). Reports total tokens/s (prompt + output) and
the wall time.

    python benchmarks/bench_prefill_e2e.py [--quick] [--json PATH]
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

N, PROMPT_LEN, OUT_LEN = 256, 512, 16


def worker(ckpt, backend, reps):
    import numpy as np
    from gpt2_engine import LLM
    llm = LLM(model=ckpt, dtype="float16", device="cuda", attention_backend=backend,
              enable_prefix_caching=False)
    V = llm.model_config["vocab_size"]
    ids = np.random.default_rng(3).integers(0, V, size=(N, PROMPT_LEN)).tolist()
    common.engine_generate(llm, ids[:8], OUT_LEN)                       # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        outs = common.engine_generate(llm, ids, OUT_LEN)
        times.append(time.perf_counter() - t0)
    assert common.count_output_tokens(outs) == N * OUT_LEN
    t = common.median(times)
    print(json.dumps({"seconds": t, "tokens_per_s": N * (PROMPT_LEN + OUT_LEN) / t}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--worker", nargs=2, metavar=("CKPT", "BACKEND"))
    args = ap.parse_args()
    reps = 1 if args.quick else 3
    if args.worker:
        return worker(args.worker[0], args.worker[1], reps)
    common.require_cuda()
    ckpt = common.make_checkpoint("gpt2", "float16")
    res = {b: common.run_isolated(__file__, ["--worker", ckpt, b] + (["--quick"] if args.quick else []),
                                  timeout=120) for b in ("FLASH", "PAGED")}
    rows = []
    for b, r in res.items():
        rows.append([b, common.fmt(r.get("tokens_per_s"), 0) if "error" not in r else r["error"],
                     common.fmt(r.get("seconds"), 3) if "error" not in r else "-"])
    common.print_table(["attention", "tokens/s (prompt+output)", "seconds"], rows,
                       title=f"prefill-heavy e2e: {N} x ({PROMPT_LEN} in, {OUT_LEN} out), gpt2 fp16, "
                             f"{common.gpu_name()}")
    common.save_json("bench_prefill_e2e", res, args.json)


if __name__ == "__main__":
    main()
