"""layer_trace.py — the phases of the two-kernel layers, from GPT2_ENGINE_LAYER_TRACE files.

A trace (csrc/core/decode_layer_trace_cuda.c writes it when the engine closes) has a row
per launch of a batch-1 step: when its first and its last block reached each mark, in us
from the step's first stamp. This prints, for the attn and the mlp half, the mean time
each phase took: from the last block at the mark before to the last block at this one,
averaged over the layers after the first (layer 0 waits for the embedding and has no
partial sums to read). Several traces print side by side: the A/B of a change, e.g. two
`bench_decode.py --variant` runs, each with its own GPT2_ENGINE_LAYER_TRACE=PATH.

    python tools/layer_trace.py TRACE [TRACE ...] [--skip-first N]

A file the engine appended several traces to is read for its last one.
"""
import argparse
import os
import sys

MARKS = ["entry_lo", "entry", "waited_lo", "waited", "vec", "x", "ln", "copies", "mm1", "b2",
         "scores", "pv", "b3", "exit_lo", "exit"]
# (phase, mark it ends at, halves that have it); each starts where the row before ends
PHASES = [("vectors", "vec", "both"), ("build x", "x", "both"), ("layernorm", "ln", "both"),
          ("tile copies", "copies", "both"), ("1st matmul", "mm1", "both"),
          ("barrier 2", "b2", "both"), ("scores", "scores", "attn"), ("P V", "pv", "attn"),
          ("barrier 3 / 2nd matmul", "b3", "both"), ("to exit", "exit", "both")]


def parse(text):
    """The last trace in text -> {"header": str, "rows": [(name, {mark: us})]}."""
    blocks = text.split("layer decode trace")
    if len(blocks) < 2:
        raise ValueError("no 'layer decode trace' header in the file")
    lines = ("layer decode trace" + blocks[-1]).strip().splitlines()
    rows = []
    for line in lines[2:]:
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(v) for v in parts[-len(MARKS):]]
        except ValueError:
            values = []
        if len(values) != len(MARKS):
            raise ValueError(f"a row without {len(MARKS)} numbers (a trace of another format?): "
                             f"{line!r}")
        rows.append((" ".join(parts[:-len(MARKS)]), dict(zip(MARKS, values))))
    return {"header": lines[0], "rows": rows}


def phases(trace, skip_first=1):
    """{half: {phase: mean us}} over the layers from skip_first on; each half also has
    "hand-over" (its first block past the wait after the launch before's last exit) and
    "launch" (its last exit after the launch before's)."""
    rows = trace["rows"]
    out = {}
    for half in ("attn", "mlp"):
        sums, n = {}, 0
        for i, (name, m) in enumerate(rows):
            kind, _, layer = name.partition(" ")
            if kind != half or not layer.isdigit() or int(layer) < skip_first or i == 0:
                continue
            prev = rows[i - 1][1]
            got = {"hand-over": m["waited_lo"] - prev["exit"], "launch": m["exit"] - prev["exit"]}
            start = m["waited"]
            for phase, mark, halves in PHASES:
                if halves not in ("both", half):
                    continue
                got[phase] = m[mark] - start
                start = m[mark]
            for k, v in got.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
        if n:
            out[half] = {k: v / n for k, v in sums.items()}
    return out


def table(names, results):
    order = ["hand-over"] + [p for p, _, _ in PHASES] + ["launch"]
    cols = [(name, half) for name, r in zip(names, results) for half in ("attn", "mlp") if half in r]
    head = ["phase (us)"] + [f"{half} {name}" for name, half in cols]
    lines = [head]
    for phase in order:
        row = [phase]
        for name, half in cols:
            v = results[names.index(name)][half].get(phase)
            row.append("" if v is None else f"{v:.2f}")
        lines.append(row)
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--skip-first", type=int, default=1, help="layers left out at the start")
    a = ap.parse_args(argv)
    results = []
    for path in a.traces:
        with open(path) as f:
            try:
                t = parse(f.read())
            except ValueError as e:
                sys.exit(f"{path}: {e}")
        print(f"{path}: {t['header']}")
        results.append(phases(t, a.skip_first))
    print(table([os.path.basename(p) for p in a.traces], results))


if __name__ == "__main__":
    sys.exit(main())
