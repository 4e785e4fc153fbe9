#!/usr/bin/env python3
"""bench_load.py — time loading a gpt2-small-shaped (124M parameters) random F32
checkpoint: gpt2_engine.LLM(model=..., device="cpu") when it is built, and the C
loader itself (checkpoint_open + checkpoint_load_weights, through ctypes on a
library built from csrc/core) for each target dtype, zero copy and copying.
Peers in the same run: a NumPy copy of the same bytes (memory bandwidth bound)
and safetensors.numpy.load_file when installed. The file is in the page cache
(just written), so this measures the loader, not the disk.

    python benchmarks/bench_load.py [--n-layer 12 --n-embd 768 --repeat 3]
"""
import argparse
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tools.make_random_model import make_random_model  # noqa: E402


class Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("msg", ctypes.c_char * 1024)]


def build_lib(tmp):
    core = os.path.join(ROOT, "csrc", "core")
    srcs = [os.path.join(core, f) for f in
            ("json.c", "safetensors.c", "config.c", "checkpoint.c", "common.c")]
    so = os.path.join(tmp, "libloader.so")
    subprocess.check_call(["gcc", "-shared", "-fPIC", "-O3", "-march=x86-64-v2", "-std=c11",
                           "-D_GNU_SOURCE", "-I" + core, *srcs, "-o", so, "-lpthread", "-lm"])
    lib = ctypes.CDLL(so)
    lib.checkpoint_open.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p,
                                    ctypes.POINTER(Error)]
    lib.checkpoint_load_weights.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                            ctypes.c_void_p, ctypes.POINTER(Error)]
    lib.checkpoint_close.argtypes = [ctypes.c_void_p]
    lib.gpt2_weights_free.argtypes = [ctypes.c_void_p]
    return lib


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-layer", type=int, default=12)
    ap.add_argument("--n-embd", type=int, default=768)
    ap.add_argument("--n-head", type=int, default=12)
    ap.add_argument("--vocab-size", type=int, default=50257)
    ap.add_argument("--n-positions", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_load_")
    try:
        d = os.path.join(tmp, "model")
        t0 = time.perf_counter()
        make_random_model(d, n_embd=a.n_embd, n_layer=a.n_layer, n_head=a.n_head,
                          n_positions=a.n_positions, vocab_size=a.vocab_size, dtype="float32")
        size = os.path.getsize(os.path.join(d, "model.safetensors"))
        print(f"checkpoint: {size / 1e6:.1f} MB F32 ({size // 4 / 1e6:.1f}M params), "
              f"written in {time.perf_counter() - t0:.1f} s; {os.cpu_count()} CPUs; best of {a.repeat}")
        rows = []
        lib = build_lib(tmp)

        def c_load(dtype, zero_copy):
            def run():
                ck, err = ctypes.c_void_p(), Error()
                if lib.checkpoint_open(ctypes.byref(ck), d.encode(), ctypes.byref(err)):
                    raise RuntimeError(err.msg.decode())
                w = ctypes.create_string_buffer(256)
                st = lib.checkpoint_load_weights(ck, dtype, zero_copy, w, ctypes.byref(err))
                if st:
                    raise RuntimeError(err.msg.decode())
                lib.gpt2_weights_free(w)
                lib.checkpoint_close(ck)
            return run

        rows.append(("C open + load F32 zero copy", best_of(c_load(0, 1), a.repeat)))
        rows.append(("C open + load F32 copy", best_of(c_load(0, 0), a.repeat)))
        rows.append(("C open + load -> F16", best_of(c_load(1, 0), a.repeat)))
        rows.append(("C open + load -> BF16", best_of(c_load(2, 0), a.repeat)))
        try:
            import gpt2_engine
            if hasattr(gpt2_engine, "LLM"):
                def llm():
                    m = gpt2_engine.LLM(model=d, device="cpu")
                    if hasattr(m, "close"):
                        m.close()
                rows.append(("gpt2_engine.LLM(model=..., device='cpu')", best_of(llm, a.repeat)))
        except ImportError:
            pass
        src = np.fromfile(os.path.join(d, "model.safetensors"), dtype=np.uint8)
        rows.append(("peer: numpy copy of the same bytes", best_of(lambda: src.copy(), a.repeat)))
        try:
            from safetensors.numpy import load_file
            rows.append(("peer: safetensors.numpy.load_file",
                         best_of(lambda: load_file(os.path.join(d, "model.safetensors")), a.repeat)))
        except ImportError:
            pass
        print(f"{'what':<44}{'seconds':>10}{'GB/s':>8}")
        for name, t in rows:
            print(f"{name:<44}{t:>10.4f}{size / t / 1e9:>8.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
