"""run_all.py — runs every benchmark of this folder (bench_decode, bench_throughput,
bench_startup, and bench_attention / bench_flash / bench_prefill_e2e / bench_gemv when
present), each in its own process with a time limit, sharing one checkpoint cache, then
prints one short summary table last: each issue-5 target, the measured figure, met or not — and
the same as a Markdown table for the README (date and GPU included).

    python benchmarks/run_all.py [--quick] [--skip-engine] [--out DIR]

Results: DIR (default $OUT, else benchmarks/results)/bench_*.json.
The engine columns import gpt2_engine from the repository root: build the
extension first (e.g. `python3 setup.py build_ext --inplace` or `pip install -e .`);
without it they read "error: ImportError ..." and the peer/HF columns still run.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

# name, time limit (s) with --quick, without
# --quick limits sum to 9 min (bench_flash and bench_gemv build their own libraries first): on an H100 (2026-11-22) the peer/HF parts took
# decode 47 s, throughput 29 s, start-up 27 s; the engine columns have their own
# shorter child limits inside each script, so a slow engine costs its cell only.
BENCHES = [("bench_decode", 150, 300), ("bench_throughput", 75, 180), ("bench_startup", 50, 120),
           ("bench_attention", 45, 120), ("bench_flash", 150, 240), ("bench_prefill_e2e", 60, 200),
           ("bench_gemv", 60, 120)]
OURS = ("bench_decode", "bench_throughput", "bench_startup")


def run(script, args, limit):
    """Run one benchmark in its own process group; kill the group past `limit`."""
    t0 = time.perf_counter()
    print(f"\n=== {os.path.basename(script)} {' '.join(args)} (limit {limit} s)", flush=True)
    p = subprocess.Popen([sys.executable, script] + args, start_new_session=True)
    try:
        rc = p.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        rc = "timeout"
    dt = time.perf_counter() - t0
    print(f"=== {os.path.basename(script)}: rc={rc}, {dt:.0f} s", flush=True)
    return rc, dt


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except Exception as e:
        return {"_error": common.err_str(e)}


def status(value, ok):
    if not common.is_num(value):
        return "not measured"
    return "met" if ok else "NOT met"


def summary(out, rcs):
    d, t, s = (load(os.path.join(out, f"{n}.json")) for n in OURS)
    m = d.get("models", {})
    g2, xl = m.get("gpt2", {}), m.get("gpt2-xl", {})
    g2e, xle = g2.get("engine_ms"), xl.get("engine_ms")
    xl_ratio = common.ratio(xle, xl.get("floor_ms"))
    te, tp = t.get("engine_tok_s"), t.get("peer_tok_s")
    t_ratio = common.ratio(te, tp)
    st = s.get("engine (graphs)", {}) if isinstance(s.get("engine (graphs)"), dict) else {}
    st_first = st.get("first", st.get("error"))
    bw = d.get("copy_bandwidth_Bps")

    def ms(x):
        return f"{x:.3f} ms" if common.is_num(x) else str(x if x is not None else "-")

    rows = [
        ["gpt2 batch-1 decode", "<= 0.15 ms/token", ms(g2e),
         f"peer {ms(g2.get('peer_ms'))}, HF {ms(g2.get('hf_ms'))}, floor {ms(g2.get('floor_ms'))}",
         status(g2e, common.is_num(g2e) and g2e <= 0.15)],
        ["gpt2-xl batch-1 decode", "<= 1.2x floor",
         f"{ms(xle)} = {common.fmt(xl_ratio, 2)}x" if common.is_num(xl_ratio) else ms(xle),
         f"peer {ms(xl.get('peer_ms'))}, HF {ms(xl.get('hf_ms'))}, floor {ms(xl.get('floor_ms'))}",
         status(xl_ratio, common.is_num(xl_ratio) and xl_ratio <= 1.2)],
        ["throughput 256x(128+128) gpt2", ">= 1.4x peer",
         f"{common.fmt(te)} tok/s = {common.fmt(t_ratio, 2)}x" if common.is_num(t_ratio) else common.fmt(te),
         f"peer {common.fmt(tp)} tok/s, HF {common.fmt(t.get('hf_tok_s'))} tok/s",
         status(t_ratio, common.is_num(t_ratio) and t_ratio >= 1.4)],
        ["start-up LLM() gpt2 (graphs, +1st gen)", "<= 1 s",
         f"{st_first:.3f} s" if common.is_num(st_first) else str(st_first or "-"),
         f"LLM() alone {common.fmt(st.get('init'))} s; eager "
         f"{common.fmt((s.get('engine (enforce_eager)') or {}).get('first'))} s",
         status(st_first, common.is_num(st_first) and st_first <= 1.0)],
    ]
    date, gpu = time.strftime("%Y-%m-%d"), common.gpu_name()
    extra = ", ".join(f"{k} rc={v}" for k, v in rcs.items())
    common.print_table(["benchmark", "target", "engine", "reference (same run)", "status"], rows,
                       title=f"SUMMARY {date}, {gpu}, copy bandwidth "
                             f"{bw / 1e12:.2f} TB/s" if common.is_num(bw) else f"SUMMARY {date}, {gpu}")
    print(f"runs: {extra}")
    print("\nMarkdown for README:\n")
    print(f"| benchmark ({date}, {gpu}) | target | engine | reference | status |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    return rows


def main():
    ap = argparse.ArgumentParser(description="run every benchmark, print the target summary last")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (whole run < 6 min on an H100)")
    ap.add_argument("--skip-engine", action="store_true", help="peer / HF / floor columns only")
    ap.add_argument("--only", default=None, help="comma-separated benchmark names to run (default all)")
    ap.add_argument("--out", default=None, help="results folder (default $OUT, else benchmarks/results)")
    a = ap.parse_args()
    common.require_cuda("run_all.py")
    out = a.out or os.environ.get("OUT") or os.path.join(common.HERE, "results")
    os.makedirs(out, exist_ok=True)
    cache = tempfile.mkdtemp(prefix="gpt2_bench_")
    os.environ["GPT2_BENCH_CACHE"] = cache                 # one checkpoint set for the whole run
    rcs = {}
    t0 = time.perf_counter()
    try:
        for name, lq, lf in BENCHES:
            script = os.path.join(common.HERE, name + ".py")
            if not os.path.exists(script) or (a.only and name not in a.only.split(",")):
                continue
            src = open(script).read()
            args = []
            if a.quick and "--quick" in src:
                args.append("--quick")
            if a.skip_engine and "--skip-engine" in src:
                args.append("--skip-engine")
            if name in OURS:
                args += ["--json", os.path.join(out, name + ".json")]
            rcs[name], _ = run(script, args, lq if a.quick else lf)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(f"\nall benchmarks: {time.perf_counter() - t0:.0f} s")
    summary(out, rcs)


if __name__ == "__main__":
    main()
