"""bench_gemv.py — the decode GEMVs of kernels/gemv.cu (M = 1..4 rows) on their own:
weight bytes read per microsecond for each matrix of a gpt2 / gpt2-xl layer and the
lm_head, beside cuBLAS (torch.addmm, the matmul alone) on the same data and the device
copy bandwidth measured in the same run; the layer's matrices also stored (N, K), as
gemv_nk reads them (the engine stores them (K, N), GPT-2's Conv1D layout: these rows
ask whether the layout limits the speed). Then the layer chain of a decode step without
its attention (ln_1 + qkv, attn proj += x, ln_2 + fc + GELU, mlp proj += x, each reading
the one before's output) over every layer's weights, against the floor of its weight
bytes at copy bandwidth, with both layouts and, for the default build, without
programmatic dependent launch. Each build's result is checked against torch first
(relative error <= 1e-2, else the run stops).

    python benchmarks/bench_gemv.py [--models gpt2,gpt2-xl] [--m 1] [--dtype float16]
        [--variant "GEMV_PF1=12;GEMV_BLOCKS_PER_SM=2" ...]

Timing: a CUDA graph of back-to-back launches (programmatic dependent launch on, as the
engine runs them) that rotate through copies of the weights until they span 4x the L2
cache, so every call streams its weights from DRAM; the median of 20 replays, per call.
kernels/gemv.cu is compiled here with nvcc into a ctypes library, once per build: the
default, and each --variant (';'-separated macro definitions of gemv.cu's tuning knobs).
"""
import argparse
import ctypes
import os
import sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from bench_flash import DTYPE_CODE, build_lib, time_ms  # noqa: E402

SHAPES = {"gpt2": (768, 12), "gpt2-xl": (1600, 48)}     # n_embd, n_layer
VOCAB = 50264                                           # 50257 rounded up to 8, as the engine
ACT_NONE, ACT_GELU_TANH = -1, 0


class GemvArgs(ctypes.Structure):
    P, I = ctypes.c_void_p, ctypes.c_int
    _fields_ = [("out", P), ("inp", P), ("w", P), ("bias", P), ("ln_w", P), ("ln_b", P),
                ("eps", ctypes.c_float), ("M", I), ("K", I), ("N", I), ("accumulate", I),
                ("act", I), ("k_cache", P), ("v_cache", P), ("slot_mapping", P),
                ("kv_heads", I), ("head_size", I), ("block_size", I), ("num_sms", I),
                ("clusters", I), ("pdl", I)]


class GemvLib:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.gemv_cuda.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                       ctypes.c_void_p]
        self.lib.gemv_supported.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]


class Matrix:
    """One matmul of the step: K, N, which layernorm / activation / accumulate it has,
    and whether w is (N, K) (the lm_head reads wte)."""

    def __init__(self, name, K, N, ln=False, act=ACT_NONE, acc=False, nk=False):
        self.name, self.K, self.N, self.ln, self.act, self.acc, self.nk = \
            name, K, N, ln, act, acc, nk

    def bytes(self, esz):
        return self.K * self.N * esz


def layer_matrices(C, nk=False):
    """The four matmuls of a layer, w (K, N) as GPT-2's Conv1D stores it, or (N, K)."""
    t = " (N,K)" if nk else ""
    return [Matrix("ln_1+qkv" + t, C, 3 * C, ln=True, nk=nk),
            Matrix("attn proj" + t, C, C, acc=True, nk=nk),
            Matrix("ln_2+fc+gelu" + t, C, 4 * C, ln=True, act=ACT_GELU_TANH, nk=nk),
            Matrix("mlp proj" + t, 4 * C, C, acc=True, nk=nk)]


class Call:
    """The ctypes arguments of one launch (kept alive with the tensors they point at)."""

    def __init__(self, torch, lib, mat, M, dtype, w, bias, inp, out, ln, num_sms, pdl):
        self.lib, self.nk, self.dtype = lib, int(mat.nk), DTYPE_CODE[dtype]
        self.keep = (w, bias, inp, out, ln)
        self.args = GemvArgs(out.data_ptr(), inp.data_ptr(), w.data_ptr(), bias.data_ptr(),
                             ln[0].data_ptr() if mat.ln else None,
                             ln[1].data_ptr() if mat.ln else None, 1e-5, M, mat.K, mat.N,
                             int(mat.acc), mat.act, None, None, None, 0, 0, 0, num_sms, 1,
                             pdl)
        self.stream = torch.cuda.current_stream

    def supported(self):
        return bool(self.lib.lib.gemv_supported(ctypes.byref(self.args), self.nk, self.dtype))

    def __call__(self):
        err = self.lib.lib.gemv_cuda(ctypes.byref(self.args), self.nk, self.dtype,
                                     ctypes.c_void_p(self.stream().cuda_stream))
        if err:
            raise RuntimeError(f"gemv_cuda failed: cudaError {err}")


def graph_ms(torch, calls, reps=20):
    """Median ms of one replay of a CUDA graph that runs `calls` in order."""
    for c in calls[:2]:
        c()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, capture_error_mode="relaxed"):
        for c in calls:
            c()
    return time_ms(torch, g.replay, reps=reps)


def rotation(bytes_, l2, lo=2):
    return max(lo, -(-4 * l2 // bytes_))


def make_weights(torch, mat, n, tdtype, gen):
    shape = (mat.N, mat.K) if mat.nk else (mat.K, mat.N)
    return [(0.02 * torch.randn(shape, device="cuda", generator=gen)).to(tdtype)
            for _ in range(n)]


def reference(torch, mat, inp, w, bias):
    """fp32 torch of what one call computes into a zeroed out: act(ln(in) @ w + bias)."""
    x = inp.float()
    if mat.ln:
        x = torch.nn.functional.layer_norm(x, (mat.K,), eps=1e-5).to(inp.dtype).float()
    y = x @ (w.float().t() if mat.nk else w.float()) + bias.float()
    return torch.nn.functional.gelu(y, approximate="tanh") if mat.act == ACT_GELU_TANH else y


def single_rows(torch, libs, mats, M, dtype, tdtype, l2, num_sms, gen):
    """(name, MB, [us per build], cuBLAS us) per matrix, each timed alone."""
    rows = []
    esz = torch.finfo(tdtype).bits // 8
    for mat in mats:
        n = rotation(mat.bytes(esz), l2)
        ws = make_weights(torch, mat, n, tdtype, gen)
        bias = 0.02 * torch.randn(mat.N, device="cuda", generator=gen).to(tdtype)
        inp = torch.randn(M, mat.K, device="cuda", generator=gen).to(tdtype)
        out = torch.zeros(M, mat.N, device="cuda", dtype=tdtype)
        ln = (torch.ones(mat.K, device="cuda", dtype=tdtype),
              torch.zeros(mat.K, device="cuda", dtype=tdtype))
        ref = reference(torch, mat, inp, ws[0], bias)
        times = []
        for k, lib in enumerate(libs):
            calls = [Call(torch, lib, mat, M, dtype, w, bias, inp, out, ln, num_sms, 1)
                     for w in ws]
            if not calls[0].supported():
                times.append(None)
                continue
            out.zero_()
            calls[0]()
            err = ((out.float() - ref).abs().max() / ref.abs().max()).item()
            if not err <= 1e-2:
                sys.exit(f"build {k} ({mat.name}): relative error {err:.3g} > 1e-2")
            times.append(graph_ms(torch, calls) / n * 1e3)
        if mat.nk:
            peer = [lambda w=w: torch.addmm(bias, inp, w.t()) for w in ws]
        else:
            peer = [lambda w=w: torch.addmm(bias, inp, w) for w in ws]
        rows.append((mat.name, mat.K, mat.N, mat.bytes(esz), times,
                     graph_ms(torch, peer) / n * 1e3))
        del ws
    return rows


def chain_us(torch, lib, C, n_layer, M, dtype, tdtype, num_sms, gen, pdl, nk=False):
    """us per layer of the 4-matmul chain over n_layer layers' weights."""
    mats = layer_matrices(C, nk)
    x = torch.randn(M, C, device="cuda", generator=gen).to(tdtype)
    attn = torch.randn(M, C, device="cuda", generator=gen).to(tdtype)
    qkv = torch.empty(M, 3 * C, device="cuda", dtype=tdtype)
    h = torch.empty(M, 4 * C, device="cuda", dtype=tdtype)
    ins, outs = [x, attn, x, h], [qkv, x, h, x]
    ln = (torch.ones(C, device="cuda", dtype=tdtype), torch.zeros(C, device="cuda", dtype=tdtype))
    calls = []
    for _ in range(n_layer):
        for mat, i, o in zip(mats, ins, outs):
            w = make_weights(torch, mat, 1, tdtype, gen)[0]
            b = 0.02 * torch.randn(mat.N, device="cuda", generator=gen).to(tdtype)
            calls.append(Call(torch, lib, mat, M, dtype, w, b, i, o, ln, num_sms, pdl))
    if not all(c.supported() for c in calls[:4]):
        return None
    return graph_ms(torch, calls) / n_layer * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="gpt2,gpt2-xl")
    ap.add_argument("--m", type=int, default=1, help="rows (decode batch), 1..4")
    ap.add_argument("--dtype", default="float16", choices=sorted(DTYPE_CODE))
    ap.add_argument("--arch", default="90")
    ap.add_argument("--variant", action="append", default=[],
                    help="';'-separated NAME=VALUE macros of kernels/gemv.cu")
    args = ap.parse_args()
    common.require_cuda()
    import torch
    props = torch.cuda.get_device_properties(0)
    l2, num_sms = props.L2_cache_size, props.multi_processor_count
    tdtype = getattr(torch, args.dtype)
    names = ["default"] + args.variant
    with ThreadPoolExecutor(max_workers=8) as pool:
        futs = []
        for k, v in enumerate(names):
            hdr = None
            if k:
                hdr = f"/tmp/gemv_variant{k}.h"
                with open(hdr, "w") as f:
                    for d in filter(None, (x.strip() for x in v.split(";"))):
                        name, _, val = d.partition("=")
                        f.write(f"#define {name.strip()} {val.strip()}\n")
            futs.append(pool.submit(build_lib, f"/tmp/libgemv{k}.so", args.arch, "gemv.cu",
                                    include=hdr))
        libs = [GemvLib(f.result()) for f in futs]
    copy = common.copy_bandwidth() / 1e9
    gen = torch.Generator(device="cuda").manual_seed(0)
    print(f"device: {props.name}, {num_sms} SMs, L2 {l2 >> 20} MiB; copy {copy:.0f} GB/s "
          f"(read+write); {args.dtype}, M={args.m}; graph replays, weights rotated past 4x L2")
    for k, v in enumerate(names):
        print(f"  build {k}: {v}")
    head = " ".join(f"{'b' + str(k) + ' us':>8} {'GB/s':>5}" for k in range(len(libs)))
    for model in args.models.split(","):
        C, n_layer = SHAPES[model]
        mats = (layer_matrices(C) + layer_matrices(C, nk=True)
                + [Matrix("ln_f+lm_head", C, VOCAB, ln=True, nk=True)])
        rows = single_rows(torch, libs, mats, args.m, args.dtype, tdtype, l2, num_sms, gen)
        print(f"\n{model}: one matmul at a time")
        print(f"{'matrix':<20} {'K':>5} {'N':>6} {'MB':>6} | {head} | {'cuBLAS us':>9} "
              f"{'GB/s':>5} | {'floor us':>8}")
        for name, K, N, nbytes, times, peer in rows:
            cells = " ".join(f"{t:>8.2f} {nbytes / t / 1e3:>5.0f}" if t else f"{'-':>8} {'-':>5}"
                             for t in times)
            print(f"{name:<20} {K:>5} {N:>6} {nbytes / 1e6:>6.2f} | {cells} | {peer:>9.2f} "
                  f"{nbytes / peer / 1e3:>5.0f} | {nbytes / copy / 1e3:>8.2f}")
        esz = torch.finfo(tdtype).bits // 8
        layer_bytes = sum(m.bytes(esz) for m in layer_matrices(C))
        floor = layer_bytes / copy / 1e3
        print(f"{model}: the layer chain (4 matmuls, {layer_bytes / 1e6:.1f} MB, floor "
              f"{floor:.2f} us), us per layer:")
        for nk, pdl in ((False, 1), (True, 1), (False, 0)):
            cells = []
            for k, lib in enumerate(libs):
                if pdl == 0 and k:
                    break
                t = chain_us(torch, lib, C, n_layer, args.m, args.dtype, tdtype, num_sms, gen,
                             pdl, nk)
                cells.append(f"b{k} {t:.2f} ({floor / t:.2f} of floor)" if t else f"b{k} -")
                torch.cuda.empty_cache()
            print(f"  w {'(N,K)' if nk else '(K,N)'} pdl={pdl}: " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
