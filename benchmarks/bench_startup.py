"""bench_startup.py — start-up time of LLM(model=<gpt2-shaped dir>, dtype="float16",
device="cuda") in a fresh process, CUDA graphs included (enforce_eager=False) and
with enforce_eager=True; median of 3 fresh processes each.

Columns: `LLM()` is the constructor alone (CUDA context, weight load + upload,
KV cache, graph capture); `+1st gen` adds the first 1-token generate, so graphs
captured lazily still count (the target judges this column); `process` is the
child's whole life (interpreter, imports, teardown). For reference, the same
numbers for the PyTorch peer (safetensors load + upload + graph capture) and the
page-cached read of the checkpoint file (the part no engine can skip).

    python benchmarks/bench_startup.py [--model gpt2] [--quick] [--skip-engine] [--json PATH]
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

ENGINE_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from gpt2_engine import LLM, SamplingParams
t1 = time.perf_counter()
llm = LLM(model=sys.argv[1], dtype="float16", device="cuda", enforce_eager=sys.argv[2] == "1")
t2 = time.perf_counter()
sp = SamplingParams(max_tokens=1, ignore_eos=True, temperature=0.0)
try:
    llm.generate([{"prompt_token_ids": [1, 2, 3, 4]}], sp, use_tqdm=False)
except TypeError:
    llm.generate(prompt_token_ids=[[1, 2, 3, 4]], sampling_params=sp)
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "init": t2 - t1, "first": t3 - t1}))
"""

PEER_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
sys.path.insert(0, sys.argv[2])
from torch_peer import TorchGPT2
t1 = time.perf_counter()
peer = TorchGPT2.from_pretrained(sys.argv[1], max_batch=1, max_seq_len=512)
t2 = time.perf_counter()
peer.generate(torch.tensor([[1, 2, 3, 4]]), 1)
torch.cuda.synchronize()
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "init": t2 - t1, "first": t3 - t1}))
"""


def fresh(code, args, n, timeout=30):
    """Median over n fresh processes of each timing key, plus the process wall time."""
    runs = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = _run_code(code, args, timeout)
        r["process"] = time.perf_counter() - t0
        if "error" in r:
            return r
        runs.append(r)
    return {k: common.median([r[k] for r in runs]) for k in runs[0]}


def _run_code(code, args, timeout):
    import subprocess
    env = dict(os.environ)
    env["PYTHONPATH"] = common.REPO + os.pathsep + env.get("PYTHONPATH", "")
    try:
        p = subprocess.run([sys.executable, "-c", code] + list(args), capture_output=True, text=True,
                           timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"error: timed out after {timeout} s"}
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode == 0 and lines:
        return json.loads(lines[-1])
    sys.stderr.write(p.stderr[-3000:])
    tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"error": f"error: rc={p.returncode}: {tail[:80]}"}


def file_read_s(ckpt):
    """Seconds to read the checkpoint's bytes from the page cache (second read)."""
    path = os.path.join(ckpt, "model.safetensors")
    for _ in range(2):
        t0 = time.perf_counter()
        with open(path, "rb") as f:
            while f.read(64 << 20):
                pass
        t = time.perf_counter() - t0
    return t


def main():
    ap = argparse.ArgumentParser(description="start-up time of LLM() in a fresh process")
    ap.add_argument("--model", default="gpt2")
    ap.add_argument("--quick", action="store_true", help="median of 2 instead of 3")
    ap.add_argument("--skip-engine", action="store_true")
    ap.add_argument("--json", default=None, help="results path (default $OUT/bench_startup.json)")
    a = ap.parse_args()
    common.require_cuda("bench_startup.py")
    n = 2 if a.quick else 3
    ckpt = common.make_checkpoint(a.model, "float16")
    rows, res = [], {"model": a.model, "runs": n}
    systems = [] if a.skip_engine else [("engine (graphs)", ENGINE_CHILD, [ckpt, "0"]),
                                        ("engine (enforce_eager)", ENGINE_CHILD, [ckpt, "1"])]
    systems.append(("torch peer (graphs)", PEER_CHILD, [ckpt, common.HERE]))
    for name, code, args in systems:
        r = fresh(code, args, n)
        if "error" in r:
            rows.append([name, r["error"], "", "", ""])
        else:
            rows.append([name, r["init"], r["first"], r["import"], r["process"]])
        res[name] = r
    rd = common.guarded(file_read_s, ckpt)
    rows.append(["read checkpoint (page cache)", rd, "", "", ""])
    res["file_read_s"] = rd
    common.print_table(["system", "LLM() s", "+1st gen s", "import s", "process s"], rows,
                       title=f"start-up, {a.model} fp16, fresh process, median of {n}, {common.gpu_name()}")
    common.save_json("bench_startup", res, a.json)


if __name__ == "__main__":
    main()
