"""common.py — shared helpers for the benchmarks in this folder (not a test).

- random GPT-2 checkpoints of the gpt2 / gpt2-xl shapes (transformers' GPT2Config
  + GPT2LMHeadModel random init, save_pretrained as safetensors), cached in a
  temp dir so that every script of one run_all reuses them;
- the device copy bandwidth (the physical limit that the decode floors use);
- a plain-text table printer, "error: ..." cells for failed columns, and JSON
  output of results to $OUT (or a given path);
- an isolated runner: engine columns run in a child process, so that a crash,
  hang or leaked GPU memory of the engine cannot take the other columns down.

Needs torch + transformers + safetensors; never imports gpt2_engine.
"""
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# name -> (n_embd, n_layer, n_head); vocab 50257, 1024 positions as the real models
SHAPES = {
    "gpt2": (768, 12, 12),
    "gpt2-medium": (1024, 24, 16),
    "gpt2-large": (1280, 36, 20),
    "gpt2-xl": (1600, 48, 25),
}


def require_cuda(what="this benchmark"):
    """Exit with a clear message when no CUDA device is usable."""
    try:
        import torch
    except ImportError:
        sys.exit(f"{what} needs PyTorch (import torch failed)")
    if not torch.cuda.is_available():
        sys.exit(f"{what} needs a CUDA GPU: torch.cuda.is_available() is False "
                 f"(torch {torch.__version__}). Run it on the GPU machine.")
    return torch


def cache_root():
    """Checkpoint cache: $GPT2_BENCH_CACHE (run_all sets one per run) or a fixed temp dir."""
    root = os.environ.get("GPT2_BENCH_CACHE") or os.path.join(tempfile.gettempdir(), "gpt2_engine_bench")
    os.makedirs(root, exist_ok=True)
    return root


def make_checkpoint(shape="gpt2", dtype="float16", seed=0, root=None, **overrides):
    """Random checkpoint of a GPT-2 shape in HF layout (config.json + model.safetensors).
    shape: a key of SHAPES, or "tiny" (64 wide, 2 layers, vocab 512) for checks.
    Returns the directory; reused when a complete one exists (marker file)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    if shape == "tiny":
        kw = dict(n_embd=64, n_layer=2, n_head=4, vocab_size=512, n_positions=128,
                  bos_token_id=511, eos_token_id=511)
    elif shape in SHAPES:
        c, l, h = SHAPES[shape]
        kw = dict(n_embd=c, n_layer=l, n_head=h, vocab_size=50257, n_positions=1024)
    else:
        raise ValueError(f"shape must be one of {sorted(SHAPES) + ['tiny']}, got {shape!r}")
    kw.update(overrides)
    tag = "-".join([shape, dtype, f"s{seed}"] + [f"{k}{v}" for k, v in sorted(overrides.items())])
    out = os.path.join(root or cache_root(), tag)
    marker = os.path.join(out, ".complete")
    if os.path.exists(marker):
        return out
    cfg = GPT2Config(**kw)
    torch.manual_seed(seed)
    dev = "cuda" if torch.cuda.is_available() else "cpu"   # init of 1.5B params is slow on CPU
    with torch.device(dev):
        model = GPT2LMHeadModel(cfg)
    model = model.to(getattr(torch, dtype)).eval()
    model.save_pretrained(out, safe_serialization=True)
    del model
    free_cuda()
    with open(marker, "w") as f:
        f.write(tag + "\n")
    return out


def load_config(ckpt_dir):
    with open(os.path.join(ckpt_dir, "config.json")) as f:
        return json.load(f)


def param_count(ckpt_dir):
    """Unique parameters of a GPT-2 checkpoint (lm_head tied to wte, counted once)."""
    c = load_config(ckpt_dir)
    C, L, V, P = c["n_embd"], c["n_layer"], c["vocab_size"], c.get("n_positions", 1024)
    inner = c.get("n_inner") or 4 * C
    per_layer = (2 * C + C * 3 * C + 3 * C + C * C + C + 2 * C + C * inner + inner + inner * C + C)
    return V * C + P * C + L * per_layer + 2 * C


def weight_bytes(ckpt_dir, bytes_per_elem=2):
    """Bytes of the weights read once per decode step (fp16: 2 bytes each)."""
    return param_count(ckpt_dir) * bytes_per_elem


def copy_bandwidth(nbytes=1 << 30, iters=20):
    """Device-to-device copy bandwidth in bytes/s, counting bytes read + written
    (2 * nbytes per copy), median over `iters` copies timed with CUDA events.
    1 GiB buffers are far larger than any L2 (50-60 MB)."""
    import torch
    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    del src, dst
    free_cuda()
    return 2 * nbytes / statistics.median(times)


def free_cuda():
    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    except Exception:
        pass


def gpu_name():
    try:
        import torch
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:
        return "unknown"


def sync():
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def wall(fn, *a, **kw):
    """Seconds of fn(*a, **kw) by host clock, device synchronized before and after."""
    sync()
    t0 = time.perf_counter()
    r = fn(*a, **kw)
    sync()
    return time.perf_counter() - t0, r


def err_str(e, limit=90):
    s = f"{type(e).__name__}: {e}".replace("\n", " ")
    return "error: " + (s if len(s) <= limit else s[:limit - 3] + "...")


def guarded(fn, *a, **kw):
    """Run fn; on any exception return the string 'error: ...' (the table prints it)."""
    try:
        return fn(*a, **kw)
    except Exception as e:  # a failing column must never end the run
        import traceback
        traceback.print_exc(file=sys.stderr)
        return err_str(e)


def is_num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def fmt(x, nd=3):
    if x is None:
        return "-"
    if is_num(x):
        if x != x:
            return "nan"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        if abs(x) >= 100:
            return f"{x:.1f}"
        return f"{x:.{nd}f}"
    return str(x)


def ratio(a, b):
    return a / b if is_num(a) and is_num(b) and b else None


def print_table(headers, rows, title=None):
    cells = [[fmt(c) for c in r] for r in rows]
    w = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    if title:
        print(f"\n{title}")
    print(" | ".join(h.ljust(w[i]) for i, h in enumerate(headers)))
    print("-+-".join("-" * x for x in w))
    for r in cells:
        print(" | ".join(c.ljust(w[i]) for i, c in enumerate(r)))
    sys.stdout.flush()


def save_json(name, data, path=None):
    """Write results to `path`, else $OUT/<name>.json, else benchmarks/results/<name>.json."""
    if path is None:
        d = os.environ.get("OUT") or os.path.join(HERE, "results")
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, f"{name}.json")
    data = dict(data, date=time.strftime("%Y-%m-%d"), gpu=gpu_name())
    with open(path, "w") as f:
        json.dump(data, f, indent=2, default=str)
    print(f"results -> {path}")
    return path


def run_isolated(script, args, timeout, extra_env=None):
    """Run `python3 script args...` in a child process (extra_env added to its
    environment) whose last stdout line is a JSON object; return that object, or
    {'error': 'error: ...'} on crash/timeout."""
    cmd = [sys.executable, script] + list(args)
    env = dict(os.environ)
    env.update(extra_env or {})
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"error: timed out after {timeout} s"}
    lines = [l for l in p.stdout.strip().splitlines() if l.startswith("{")]
    if lines:
        try:
            return json.loads(lines[-1])
        except ValueError:
            pass
    tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
    sys.stderr.write(p.stderr[-3000:])
    return {"error": f"error: rc={p.returncode}: {tail[:80]}"}


def engine_generate(llm, prompts_ids, max_tokens):
    """Greedy generation of max_tokens (ignore_eos) from token-id prompts; no
    progress bar (it costs host time)."""
    from gpt2_engine import SamplingParams
    sp = SamplingParams(max_tokens=max_tokens, ignore_eos=True, temperature=0.0)
    prompts = [{"prompt_token_ids": list(p)} for p in prompts_ids]
    return llm.generate(prompts, sp, use_tqdm=False)


def count_output_tokens(outs):
    n = 0
    for o in outs:
        n += len(o.outputs[0].token_ids)
    return n


def median(xs):
    return statistics.median(xs)
