"""bench_throughput.py — offline throughput, gpt2 shape, random fp16 weights:
256 prompts of 128 random tokens, 128 greedy output tokens each (ignore_eos),
output tokens/s of the engine vs HF transformers generate (one batch of 256, left
padding, fp16) vs the PyTorch peer (torch_peer.py, one batch of 256, CUDA graphs).
Every system gets the same prompts; each is warmed up first by one whole generation of
the same batch, then the whole generation (prefill included) is timed by wall clock
(median of 3 runs; 1 with --quick). The engine's warm-up run is reported too. The engine runs in a child
process (a crash there prints "error: ..." in its column), once with async
scheduling (the default on CUDA) and once without, in the same run.

    python benchmarks/bench_throughput.py [--model gpt2] [--quick] [--skip-engine] [--json PATH]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

N_PROMPTS, PROMPT_LEN, OUT_LEN = 256, 128, 128


def prompts(vocab, n=N_PROMPTS, seed=2):
    import torch
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, PROMPT_LEN), generator=g)


def peer_tput(ckpt, n, out_len, reps):
    from torch_peer import TorchGPT2
    peer = TorchGPT2.from_pretrained(ckpt, max_batch=n, max_seq_len=PROMPT_LEN + out_len)
    ids = prompts(peer.V, n)
    peer.generate(ids, out_len)                                         # warm-up
    t = common.median([common.wall(peer.generate, ids, out_len)[0] for _ in range(reps)])
    del peer
    common.free_cuda()
    return n * out_len / t


def hf_tput(ckpt, n, out_len, reps):
    import torch
    from transformers import GPT2LMHeadModel
    model = GPT2LMHeadModel.from_pretrained(ckpt, dtype=torch.float16).cuda().eval()
    model.generation_config.pad_token_id = model.config.eos_token_id
    ids = prompts(model.config.vocab_size, n).cuda()
    mask = torch.ones_like(ids)   # equal lengths: left padding adds nothing here

    def gen(k):
        with torch.no_grad():
            out = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=k,
                                 min_new_tokens=k, pad_token_id=model.config.eos_token_id)
        assert out.shape == (n, PROMPT_LEN + k), out.shape
    gen(4)                                                              # warm-up
    t = common.median([common.wall(gen, out_len)[0] for _ in range(reps)])
    del model
    common.free_cuda()
    return n * out_len / t


def engine_worker(ckpt, n, out_len, reps, async_scheduling):
    from gpt2_engine import LLM
    ids = prompts(common.load_config(ckpt)["vocab_size"], n).tolist()
    llm = LLM(model=ckpt, dtype="float16", device="cuda", async_scheduling=async_scheduling)

    def run():
        outs = common.engine_generate(llm, ids, out_len)
        got = common.count_output_tokens(outs)
        if got != n * out_len:
            raise RuntimeError(f"engine returned {got} tokens, expected {n * out_len} (ignore_eos)")
    # warm-up as the peer's: one whole generation. That first one is timed too ("cold"):
    # it builds the cuBLASLt plans of the batch shapes it meets for the first time
    cold = common.wall(run)[0]
    before = llm.stats
    t = common.median([common.wall(run)[0] for _ in range(reps)])
    after = llm.stats
    steps = max(after["num_steps"] - before["num_steps"], 1)
    phases = {k[len("time_"):-len("_s")]: round((after[k] - before[k]) / steps * 1e6, 1)
              for k in after if k.startswith("time_")}
    print(json.dumps({"tok_s": n * out_len / t, "cold_tok_s": n * out_len / cold,
                      "step_phases_us": phases,
                      "steps": steps, "steps_ahead": after["num_steps_ahead"] -
                      before["num_steps_ahead"]}))


def main():
    ap = argparse.ArgumentParser(description="offline throughput, 256 x (128 in, 128 out)")
    ap.add_argument("--model", default="gpt2")
    ap.add_argument("--num-prompts", type=int, default=N_PROMPTS)
    ap.add_argument("--quick", action="store_true", help="one timed run each")
    ap.add_argument("--skip-engine", action="store_true")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--json", default=None, help="results path (default $OUT/bench_throughput.json)")
    ap.add_argument("--engine-worker", nargs=4, metavar=("CKPT", "N", "REPS", "ASYNC"),
                    help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.engine_worker:
        try:
            c, n, r, asy = a.engine_worker
            engine_worker(c, int(n), OUT_LEN, int(r), asy == "1")
        except Exception as e:
            import traceback
            traceback.print_exc()
            print(json.dumps({"error": common.err_str(e)}))
        return
    common.require_cuda("bench_throughput.py")
    reps = 1 if a.quick else 3
    n = a.num_prompts
    ckpt = common.make_checkpoint(a.model, "float16")
    eng = eng_sync = None
    runs = {}
    if not a.skip_engine:
        for asy in ("1", "0"):
            runs[asy] = common.run_isolated(os.path.abspath(__file__),
                                            ["--engine-worker", ckpt, str(n), str(reps), asy],
                                            timeout=40 if a.quick else 150)
        eng, eng_sync = (runs[k].get("tok_s", runs[k].get("error", "error: no result"))
                         for k in ("1", "0"))
    peer = common.guarded(peer_tput, ckpt, n, OUT_LEN, reps)
    hf = None if a.skip_hf else common.guarded(hf_tput, ckpt, n, OUT_LEN, 1)   # ~10 s a run
    rows = [["engine", eng, common.ratio(eng, peer)],
            ["engine, async scheduling off", eng_sync, common.ratio(eng_sync, peer)],
            ["torch peer", peer, 1.0 if common.is_num(peer) else None],
            ["HF generate", hf, common.ratio(hf, peer)]]
    common.print_table(["system", "output tok/s", "x peer"], rows,
                       title=f"offline throughput, {a.model}, {n} x ({PROMPT_LEN} in, {OUT_LEN} out), "
                             f"greedy fp16, {common.gpu_name()}")
    for k, label in (("1", "async"), ("0", "sync")):   # wall time per step by phase (engine.h)
        r = runs.get(k, {})
        if r.get("cold_tok_s"):
            print(f"engine ({label}): the warm-up run (the first whole generation, timed alone) "
                  f"{r['cold_tok_s']:,.0f} tok/s")
        if r.get("step_phases_us"):
            print(f"engine ({label}) {r['steps']} steps, {r['steps_ahead']} launched ahead; "
                  "phases (us/step): " +
                  ", ".join(f"{p} {v:.1f}" for p, v in r["step_phases_us"].items()))
    common.save_json("bench_throughput", dict(model=a.model, num_prompts=n, prompt_len=PROMPT_LEN,
                                              output_len=OUT_LEN, engine_tok_s=eng,
                                              engine_sync_tok_s=eng_sync, peer_tok_s=peer,
                                              hf_tok_s=hf, reps=reps,
                                              engine_runs={"async": runs.get("1"),
                                                           "sync": runs.get("0")}),
                     a.json)


if __name__ == "__main__":
    main()
