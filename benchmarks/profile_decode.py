"""profile_decode.py — where does a batch-1 decode step's time go? Kernel times
from CUPTI (torch.profiler sees every CUDA kernel in the process, ours too)
against the wall time per step, for the gpt2 shape in fp16.

    python benchmarks/profile_decode.py [--shape gpt2] [--steps 64] [--batch 1]
        [--prompt-len 16]

--prompt-len 128 --steps 128 --batch 256 profiles bench_throughput's workload (its
prefill included; the wall time is then per generated token of one sequence).

--timeline also prints one decode step as the GPU ran it: every kernel and copy of the
step in order, with its start, its end and the gap after the one before (negative
where launches overlap under PDL), the median over the profiled steps. A step runs from
the operation after one sampler kernel to the next sampler kernel, its copies included.
"""
import json
import statistics
import tempfile
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
    ap.add_argument("--timeline", action="store_true")
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
    if args.timeline:
        print_timeline(prof)
    llm.close()


def short(name):
    """a kernel's name without its template arguments and parameters"""
    name = name.replace("(anonymous namespace)::", "").replace("void ", "")
    return name.split("(")[0].split("<")[0][:40]


def print_timeline(prof):
    with tempfile.TemporaryDirectory() as d:   # the export writes a new file at the path
        path = os.path.join(d, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            trace = json.load(f)
    ops = sorted((e for e in trace["traceEvents"]
                  if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")),
                 key=lambda e: e["ts"])
    ends = [i for i, e in enumerate(ops) if "sample_kernel" in e["name"]]
    steps = [ops[a + 1:b + 1] for a, b in zip(ends, ends[1:])]
    if len(steps) < 3:
        print("timeline: fewer than 3 steps found")
        return
    n = statistics.mode(len(s) for s in steps)
    steps = [s for s in steps[1:-1] if len(s) == n and
             [short(e["name"]) for e in s] == [short(e["name"]) for e in steps[1]]]
    if not steps:
        print("timeline: no two steps ran the same operations")
        return
    med = statistics.median
    period = med([b[0]["ts"] - a[0]["ts"] for a, b in zip(steps, steps[1:])] or [0.0])
    print(f"\ntimeline: {len(steps)} steps of {n} operations, period {period:.1f} us "
          f"(median; us from the step's first operation)")
    print(f"{'#':>3s} {'operation':40s} {'start':>8s} {'end':>8s} {'dur':>7s} {'gap':>7s}")
    for i in range(n):
        st = med([s[i]["ts"] - s[0]["ts"] for s in steps])
        en = med([s[i]["ts"] + s[i]["dur"] - s[0]["ts"] for s in steps])
        gap = med([s[i]["ts"] - (s[i - 1]["ts"] + s[i - 1]["dur"]) for s in steps]) if i else 0.0
        print(f"{i:3d} {short(steps[0][i]['name']):40s} {st:8.1f} {en:8.1f} {en - st:7.1f} {gap:7.1f}")
    print(f"    {'(the next step)':40s} {period:8.1f} {'':8s} {'':7s} "
          f"{period - med([s[-1]['ts'] + s[-1]['dur'] - s[0]['ts'] for s in steps]):7.1f}")


if __name__ == "__main__":
    main()
