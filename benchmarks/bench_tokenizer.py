"""bench_tokenizer.py — encode throughput of gpt2_engine.Tokenizer beside tiktoken
and HF tokenizers, all built from the same vocab.json/merges.txt (no download),
on tinyshakespeare.txt, single thread. Not a test.

    python benchmarks/bench_tokenizer.py [--repeat 5] [--file PATH]

Rows: the whole text as one document, and the text as one document per line
(40k short documents, one call each). Ours twice: encode() with its word cache
kept across calls, and a cold cache (a fresh cache every call). Every row checks that the ids are
identical to ours. Throughput = input UTF-8 bytes / best wall time of --repeat.
"""
import argparse
import datetime
import os
import platform
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")          # HF tokenizers: one thread
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gpt2_engine  # noqa: E402
from gpt2_engine import Tokenizer  # noqa: E402
from tools.reference_tokenizers import hf_tokenizer, tiktoken_encoding  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(gpt2_engine.__file__)), "data")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_tiktoken():
    import tiktoken
    return f"tiktoken {tiktoken.__version__}", tiktoken_encoding(DATA).encode_ordinary


def make_hf():
    import tokenizers
    t = hf_tokenizer(DATA)
    return f"HF tokenizers {tokenizers.__version__}", lambda s: t.encode(s).ids


def best_time(fn, docs, repeat):
    best, out = float("inf"), None
    for _ in range(repeat):
        out = None   # free the previous result outside the timed region
        t0 = time.perf_counter()
        out = [fn(d) for d in docs]
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", default=os.path.join(DATA, "tinyshakespeare.txt"))
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with open(args.file, encoding="utf-8") as f:
        text = f.read()
    nbytes = len(text.encode("utf-8"))
    ours = Tokenizer()
    # encode() keeps a word cache across calls (warm after the first repeat);
    # encode_batch([s], num_threads=1) starts each call with an empty cache.
    impls = [("gpt2_engine (C) encode", lambda s: ours.encode(s, allow_special=False)),
             ("gpt2_engine (C) cold cache",
              lambda s: ours.encode_batch([s], allow_special=False, num_threads=1)[0])]
    for make in (make_tiktoken, make_hf):
        try:
            impls.append(make())
        except ImportError as e:
            print(f"skipping a reference: {e}")
    scenarios = [("whole text, 1 doc", [text]),
                 (f"per line, {len(text.splitlines(True))} docs", text.splitlines(True))]
    print(f"# Tokenizer encode throughput — {datetime.date.today().isoformat()}")
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, {platform.system()} "
          f"{platform.release()}, Python {platform.python_version()}")
    print(f"input: {os.path.basename(args.file)}, {nbytes:,} bytes; single thread; "
          f"best of {args.repeat}\n")
    print("| scenario | tokenizer | MB/s | vs tiktoken | tokens | ids identical |")
    print("|---|---|---:|---:|---:|---|")
    for sname, docs in scenarios:
        rows, ref_ids = [], None
        for name, fn in impls:
            dt, ids = best_time(fn, docs, args.repeat)
            if ref_ids is None:
                ref_ids = ids
            rows.append((name, nbytes / dt / 1e6, sum(map(len, ids)), ids == ref_ids))
        tk = next((r[1] for r in rows if r[0].startswith("tiktoken")), None)
        for name, mbs, ntok, same in rows:
            ratio = f"{mbs / tk:.2f}x" if tk else "-"
            print(f"| {sname} | {name} | {mbs:.1f} | {ratio} | {ntok:,} | "
                  f"{'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
