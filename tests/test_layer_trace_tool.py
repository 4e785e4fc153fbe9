"""tools/layer_trace.py on traces written in decode_layer_trace_cuda.c's format: a
synthetic two-layer trace with known phase times, the last of several traces in one
file, side-by-side output, and a clear error on a file of another format. (The traces
themselves come from the GPU: tests/test_fused_decode.py::test_layer_trace.)"""
import pytest

from tools import layer_trace

HEADER = ("layer decode trace (C=64, 2 layers, mean of 32 steps): us from the step's first "
          "stamp, earliest..latest block (one time: the latest)\n"
          "launch            entry        waited     vec       x      ln  copies     mm1      b2  "
          "scores      pv  b3/mm2          exit\n")


def row(name, marks):
    return name.ljust(9) + " " + " ".join(f"{v:7.2f}" for v in marks) + "\n"


def half(t0, attn):
    """A launch starting at t0: entry lo/hi, waited lo/hi, then the 9 single marks and the
    exit lo/hi, with phases of 0.1, 1.0, 0.5, 0.05, 0.8, 0.6, (attn: 1.5, 1.2), 0.4, 1.3"""
    steps = [0.1, 1.0, 0.5, 0.05, 0.8, 0.6] + ([1.5, 1.2] if attn else [0.0, 0.0]) + [0.4]
    waited = t0 + 2.0
    marks, t = [], waited
    for i, d in enumerate(steps):
        if attn or i not in (6, 7):
            t += d
            marks.append(t)
        else:
            marks.append(0.0)
    exit_hi = t + 1.3
    return [t0, t0 + 0.3, waited - 0.2, waited] + marks + [exit_hi - 0.1, exit_hi], exit_hi


def trace_text():
    text, t = HEADER, 0.0
    for layer in range(2):
        for kind in ("attn", "mlp"):
            marks, t = half(t, kind == "attn")
            text += row(f"{kind} {layer}", marks)
            t -= 1.5          # the next launch enters before this one exits (PDL)
    text += row("residual", [t, t, t + 2, t + 2] + [0.0] * 9 + [t + 3, t + 3])
    return text


def test_phases_of_a_synthetic_trace():
    t = layer_trace.parse(trace_text())
    assert [n for n, _ in t["rows"]] == ["attn 0", "mlp 0", "attn 1", "mlp 1", "residual"]
    got = layer_trace.phases(t)                       # layer 1 only
    want = {"vectors": 0.1, "build x": 1.0, "layernorm": 0.5, "tile copies": 0.05,
            "1st matmul": 0.8, "barrier 2": 0.6, "barrier 3 / 2nd matmul": 0.4, "to exit": 1.3}
    for h in ("attn", "mlp"):
        for phase, v in want.items():
            assert got[h][phase] == pytest.approx(v, abs=0.011), (h, phase)
        # waited_lo = t0 + 1.8, and t0 = the launch before's exit - 1.5
        assert got[h]["hand-over"] == pytest.approx(0.3, abs=0.011)
    assert got["attn"]["scores"] == pytest.approx(1.5, abs=0.011)
    assert got["attn"]["P V"] == pytest.approx(1.2, abs=0.011)
    assert "scores" not in got["mlp"]
    assert got["attn"]["launch"] > got["mlp"]["launch"]
    both = layer_trace.phases(t, skip_first=0)        # layers 0 and 1 (attn 0 has no launch before)
    assert both["mlp"]["build x"] == pytest.approx(1.0, abs=0.011)


def test_cli_reads_the_last_trace_and_prints_side_by_side(tmp_path, capsys):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("layer decode trace (stale)\nlaunch\nattn 0 " + "9 " * 15 + "\n" + trace_text())
    b.write_text(trace_text())
    layer_trace.main([str(a), str(b)])
    out = capsys.readouterr().out
    assert "attn a.txt" in out and "mlp b.txt" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("build x"))
    assert line.split()[2:] == ["1.00"] * 4


def test_a_file_of_another_format_is_named(tmp_path):
    old = tmp_path / "old.txt"
    old.write_text(HEADER + "attn 0      0.00   0.29   2.47   4.71    6.81    6.87    7.62\n")
    with pytest.raises(SystemExit, match="old.txt: a row without 15 numbers"):
        layer_trace.main([str(old)])
    with pytest.raises(ValueError, match="no 'layer decode trace' header"):
        layer_trace.parse("nothing here")
