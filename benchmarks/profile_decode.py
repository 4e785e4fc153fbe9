"""profile_decode.py — where does a batch-1 decode step's time go? Kernel times
from CUPTI (torch.profiler sees every CUDA kernel in the process, ours too)
against the wall time per step, for the gpt2 shape in fp16.

    python benchmarks/profile_decode.py [--shape gpt2] [--steps 64] [--batch 1]
        [--prompt-len 16]

--prompt-len 128 --steps 128 --batch 256 profiles bench_throughput's workload (its
prefill included; the wall time is then per generated token of one sequence).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="gpt2")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--eager", action="store_true")
    args = ap.parse_args()
    common.require_cuda()
    import torch
    from torch.profiler import ProfilerActivity, profile

    from gpt2_engine import LLM, SamplingParams
    ckpt = common.make_checkpoint(args.shape, "float16")
    llm = LLM(model=ckpt, dtype="float16", device="cuda", enforce_eager=args.eager)
    prompts = [{"prompt_token_ids": [(1 + i + j) % 50000 for j in range(args.prompt_len)]}
               for i in range(args.batch)]
    sp = SamplingParams(temperature=0.0, max_tokens=args.steps, ignore_eos=True)
    llm.generate(prompts, sp, use_tqdm=False)               # warm-up
    t0 = time.perf_counter()
    llm.generate(prompts, sp, use_tqdm=False)
    wall = (time.perf_counter() - t0) / args.steps
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        llm.generate(prompts, sp, use_tqdm=False)
        torch.cuda.synchronize()
    dt = lambda e: getattr(e, "device_time_total", 0) or getattr(e, "cuda_time_total", 0)
    events = [e for e in prof.key_averages() if dt(e) > 0]
    events.sort(key=lambda e: -dt(e))
    total_gpu = sum(dt(e) for e in events)
    print(f"{args.shape} batch {args.batch} prompt {args.prompt_len}: wall {wall * 1e3:.3f} ms/step; GPU busy "
          f"{total_gpu / args.steps / 1e3:.3f} ms/step ({llm.attention_backend}, "
          f"graphs {llm.stats['num_cuda_graphs']}, replays {llm.stats['graph_replays']})")
    print(f"{'kernel':70s} {'calls':>6s} {'us/step':>9s}")
    for e in events[:25]:
        print(f"{e.key[:70]:70s} {e.count:6d} {dt(e) / args.steps:9.1f}")
    llm.close()


if __name__ == "__main__":
    main()
