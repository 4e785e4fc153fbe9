"""bench_generate_host.py — the host time of one LLM.generate() call outside the
engine's step work, by phase: the serial Python/binding time a GPU idles for.

The bench_throughput.py workload (N prompts of 128 random token ids as
{"prompt_token_ids": [...]} dicts, 128 greedy output tokens, ignore_eos, no
progress bar) on a tiny random model with the real 50257-token vocabulary. The
engine's own step work (the time_*_s phase timers of llm.stats: on the CPU the
forward and sampling, on a GPU mostly the device's time) is subtracted from the
wall time; what is left is split by a proxy around the engine object that
timestamps its step() calls:

  add      generate() entry to the first step: prompt/params checks, queuing
  binding  the binding turning step outputs into tuples (time_binding_s)
  in-step  inside step() calls but outside the engine's phases and the binding
           (call overhead, GIL hand-offs; on the CPU also cold caches after
           the forward)
  between  Python between step() calls, RequestOutput construction included
  after    the last step() return to generate()'s return

    python benchmarks/bench_generate_host.py [--prompts 256] [--out-len 128]
        [--reps 5] [--vocab 50257]
"""
import argparse
import os
import random
import statistics
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")    # see bench_host_overhead.py
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ENGINE_PHASES = ["time_schedule_s", "time_prepare_s", "time_forward_s", "time_sample_setup_s",
                 "time_sample_s", "time_update_s", "time_outputs_s"]
ROWS = ["wall", "engine", "host", "add", "binding", "in-step", "between", "after"]


class StepClock:
    """Stands in for the C engine: delegates everything, timestamps step()."""

    def __init__(self, engine):
        self._engine = engine
        self.first = self.last = None
        self.calls = 0
        self.inside = 0.0

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def step(self, **kw):
        t0 = time.perf_counter()
        if self.first is None:
            self.first = t0
        out = self._engine.step(**kw)
        self.last = time.perf_counter()
        self.inside += self.last - t0
        self.calls += 1
        return out


def one_run(llm, prompts, sp):
    real = llm._engine
    clock = StepClock(real)
    before = real.stats
    llm._engine = clock
    try:
        t0 = time.perf_counter()
        outs = llm.generate(prompts, sp, use_tqdm=False)
        t1 = time.perf_counter()
    finally:
        llm._engine = real
    after = real.stats
    d = {k: after[k] - before[k] for k in ENGINE_PHASES + ["time_binding_s", "num_steps"]}
    engine = sum(d[k] for k in ENGINE_PHASES)
    r = dict(wall=t1 - t0, engine=engine, host=t1 - t0 - engine, add=clock.first - t0,
             binding=d["time_binding_s"],
             between=(clock.last - clock.first) - clock.inside, after=t1 - clock.last)
    r["in-step"] = clock.inside - engine - d["time_binding_s"]
    return r, outs, d["num_steps"], clock.calls


def main():
    ap = argparse.ArgumentParser(description="host time of LLM.generate by phase")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--out-len", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--vocab", type=int, default=50257)
    a = ap.parse_args()
    from gpt2_engine import LLM, SamplingParams
    from tools.make_random_model import make_random_model
    rng = random.Random(0)
    prompts = [{"prompt_token_ids": [rng.randrange(a.vocab) for _ in range(a.prompt_len)]}
               for _ in range(a.prompts)]
    sp = SamplingParams(max_tokens=a.out_len, ignore_eos=True, temperature=0.0)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "tiny")
        make_random_model(model, n_embd=16, n_layer=1, n_head=1, n_positions=512,
                          vocab_size=a.vocab, std=0.3)
        with LLM(model=model, device="cpu", max_num_seqs=a.prompts, max_num_batched_tokens=8192,
                 max_model_len=a.prompt_len + a.out_len) as llm:
            llm.generate(prompts[:2], SamplingParams(max_tokens=2, ignore_eos=True),
                         use_tqdm=False)
            for _ in range(a.reps):
                r, outs, steps, calls = one_run(llm, prompts, sp)
                got = sum(len(o.outputs[0].token_ids) for o in outs)
                if got != a.prompts * a.out_len:
                    raise RuntimeError(f"got {got} output tokens, expected "
                                       f"{a.prompts * a.out_len}")
                del outs
                runs.append(r)
    print(f"LLM.generate host time, ms: {a.prompts} prompts x {a.prompt_len} tokens, "
          f"{a.out_len} out, vocab {a.vocab}, CPU; {steps} engine steps in {calls} step() "
          f"calls; {a.reps} runs")
    print(f"{'phase':>10}{'median':>10}{'min':>10}")
    for k in ROWS:
        v = [r[k] * 1e3 for r in runs]
        print(f"{k:>10}{statistics.median(v):>10.2f}{min(v):>10.2f}")


if __name__ == "__main__":
    main()
