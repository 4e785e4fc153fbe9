"""bench_flash.py — FLASH attention backend benchmark (GPU only).

Times the FLASH kernels (kernels/flash_attention.cu) reading K/V through a
paged cache (block_size 16, scattered block tables) against, in the same run:
  * prefill: torch.nn.functional.scaled_dot_product_attention(is_causal=True)
    on the same data laid out densely (B, H, S, D);
    TFLOP/s counts half the square: flops = 4*B*H*S*S*D/2; the three FLASH prefill
    kernels, chosen by GPT2_ENGINE_FLASH_WGMMA (read by the launcher at each call):
    "ws" (=1, flash_attention_sm90a.cu's warp-specialized TMA kernel), "legacy"
    (=legacy, its cp.async kernel) — both compute capability 9.0 only — and "mma"
    (=0, mma.sync);
  * decode: GB/s of K+V bytes read, vs a device-to-device copy (bytes read +
    written) and vs the PAGED backend when its launcher is in the library;
    then engine-shaped decode rows (gpt2: H=12, D=64; a large batch of short
    contexts; splits sized from max_len = the max_model_len a captured graph
    sees, not from the actual lengths), FLASH vs PAGED, both given that max_len.

The kernels are called through a small shared library built from
kernels/flash_attention.cu and kernels/flash_attention_sm90a.cu with nvcc (ctypes),
on torch's current stream, so the timing sees the kernel and nothing of the
engine's Python layer.

    python benchmarks/bench_flash.py [--lib path/to/libflash.so] [--arch 90]
        [--decode-only | --prefill-only] [--variant "FLASH_DECODE_HPB=1;FLASH_DECODE_MIN_BLOCKS128=4" ...]
        [--block-sizes 16,64,128]

--block-sizes replaces the prefill rows with the TMA kernel's at each cache block size
(one TMA box per page and 64-column panel: 16-row pages take 8 boxes per 128-key tile).

--ab (with --variant): one prefill table where the TMA kernel of every build is timed
in the same rounds with SDPA, e.g. --ab --variant "KERNELS=baseline/kernels" against a
baseline tree's kernels (`git archive <commit> kernels csrc/core | tar -x -C baseline`).

--variant builds the kernels again with those macros (tuning knobs of
flash_attention.cu and flash_attention_sm90a.cu, e.g. "FLASH_SM90_P64=2, 128" for the
cp.async kernel, "FLASH_SM90_WS64=2, 128, 4, 0" for the TMA kernel: consumer
warpgroups, keys per tile, K/V stages, ping-pong; and of paged_attention.cu, e.g.
"PAGED_DECODE_WAVES=2": the PAGED peer is rebuilt too; a variant of PAGED_* knobs
alone reuses the default FLASH build) and repeats the prefill and decode rows with
each build.

Measured 2026-11-22 on an H100 80GB HBM3 (torch 2.11.0+cu130, fp16, H = 2048/D):
  prefill TF/s  FLASH / SDPA:  B=8 S=2048: d64 198.5/355.7 (0.56), d128 191.8/421.3 (0.46);
                               B=16 S=1024: d64 171.4/288.3 (0.59), d128 171.2/360.9 (0.47);
                               PAGED prefill ~17 TF/s.
  decode GB/s   FLASH / PAGED (decode kernel of 2026-11-23, copy 2920; graph replays):
                B=1 L=4096 d64 2572/2568, d128 2505/1953; B=8 L=2048 2611/2585, 2610/2612;
                B=64 L=1024 2920/2976, 2935/2973; B=256 L=512 2963/3029, 2980/3015;
                engine-shaped (H=12 d64, max_len 1024): B=256 L=64 2384/2303, L=128
                2628/2617, L=256 2793/2848; B=32 L=128 2163/1500; B=8 L=200 632/618.
"""
import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTYPE_CODE = {"float16": 1, "bfloat16": 2}
ROUNDS = 5   # prefill: rounds of timing every kernel and SDPA in turn
SCHEDS = (0, 2, 3, 7, 15)   # GPT2_ENGINE_FLASH_SCHED modes in the tile-order table


_objects = {}   # (unit, flags, kernels dir, relevant macros) -> (nvcc process, object path)
_objects_lock = threading.Lock()


def _relevant_macros(include, kdir, unit):
    """The #define lines of `include` whose names occur in the unit or in a header of
    kdir: only those can change the unit's object (a decode knob leaves the sm_90a
    prefill unit as it was, so variants share its object)."""
    if not include:
        return ()
    text = open(os.path.join(kdir, unit)).read()
    for name in os.listdir(kdir):
        if name.endswith((".cuh", ".h")):
            text += open(os.path.join(kdir, name)).read()
    lines = [ln.strip() for ln in open(include) if ln.startswith("#define")]
    return tuple(sorted(ln for ln in lines if ln.split()[1] in text))


def _compile(nvcc, kdir, unit, gencode, include, obj):
    key = (unit, gencode, kdir, _relevant_macros(include, kdir, unit))
    with _objects_lock:
        entry = _objects.get(key)
        if entry is None:
            proc = subprocess.Popen([nvcc, "-c", "-Xcompiler", "-fPIC", "-std=c++17", "-O3",
                                     "-lineinfo", "--expt-relaxed-constexpr", gencode,
                                     "-I" + kdir, "-I" + os.path.join(kdir, "..", "csrc", "core"),
                                     *(["-include", include] if include else []),
                                     os.path.join(kdir, unit), "-o", obj])
            entry = _objects[key] = (proc, obj)
    proc, path = entry
    if proc.wait() != 0:
        raise subprocess.CalledProcessError(proc.returncode, nvcc)
    return path


def build_lib(out_path, arch="90", src="flash_attention.cu", include=None, kernels=None):
    """nvcc kernels/<src> -> a shared library with its extern "C" launchers
    (include: a header force-included first, e.g. tile-shape overrides; kernels: another
    tree's kernels/ folder, e.g. a baseline commit's, instead of this one's).
    flash_attention.cu is linked with flash_attention_sm90a.cu (built for sm_90a
    alone, as setup.py does), whose launcher it dispatches to. An object that the
    include cannot change is compiled once and shared between builds."""
    nvcc = os.environ.get("NVCC", "/usr/local/cuda/bin/nvcc")
    units = [(src, f"-gencode=arch=compute_{arch},code=sm_{arch}")]
    if src == "flash_attention.cu":
        units.append(("flash_attention_sm90a.cu", "-gencode=arch=compute_90a,code=sm_90a"))
    kdir = os.path.abspath(kernels or os.path.join(ROOT, "kernels"))
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=len(units)) as pool:   # the units compile side by side
        objs = list(pool.map(lambda u: _compile(nvcc, kdir, u[0], u[1], include,
                                                f"{out_path}.{u[0]}.o"), units))
    subprocess.check_call([nvcc, "-shared", *objs, "-o", out_path])
    return out_path


class FlashLib:
    """ctypes view of the FLASH launchers declared in kernels/kernels.h."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        P, I, F = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
        self.lib.flash_attention_prefill.argtypes = [P, P, I, P, P, P, P, P, I, I, I, I, I, I, I,
                                                     F, I, P, P]
        self.lib.flash_attention_prefill.restype = I
        self.lib.flash_attention_decode.argtypes = [P, P, I, P, P, P, P, P, I, I, I, I, I, I, F,
                                                    I, I, P, P, P, P, I]
        self.lib.flash_attention_decode.restype = I
        self.lib.flash_attention_num_splits.argtypes = [I, I, I, I, I, I]
        self.lib.flash_attention_num_splits.restype = I

    @staticmethod
    def _stream():
        import torch
        return ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)

    def prefill(self, out, q, q_stride, kc, vc, qsl, sl, bt, seq_begin, num_seqs, max_q, H, D,
                bs, scale):
        e = self.lib.flash_attention_prefill(
            out.data_ptr(), q.data_ptr(), q_stride, kc.data_ptr(), vc.data_ptr(), qsl.data_ptr(),
            sl.data_ptr(), bt.data_ptr(), bt.shape[1], seq_begin, num_seqs, max_q, H, D, bs,
            scale, DTYPE_CODE[str(out.dtype).split(".")[1]], self._tile_counter(),
            self._stream())
        if e != 0:
            raise RuntimeError(f"flash_attention_prefill: cudaError {e}")

    def _tile_counter(self):
        """The prefill's tile counter (two ints, left zero by every launch), as the
        engine's FLASH workspace holds one."""
        if not hasattr(self, "_counter"):
            import torch
            self._counter = torch.zeros(2, dtype=torch.int32, device="cuda")
        return self._counter.data_ptr()

    def decode(self, out, q, q_stride, kc, vc, qsl, sl, bt, seq_begin, num_seqs, H, D, bs, scale,
               splits, po=None, plse=None, tickets=None):
        e = self.lib.flash_attention_decode(
            out.data_ptr(), q.data_ptr(), q_stride, kc.data_ptr(), vc.data_ptr(), qsl.data_ptr(),
            sl.data_ptr(), bt.data_ptr(), bt.shape[1], seq_begin, num_seqs, H, D, bs, scale,
            DTYPE_CODE[str(out.dtype).split(".")[1]], splits,
            po.data_ptr() if po is not None else None,
            plse.data_ptr() if plse is not None else None,
            tickets.data_ptr() if tickets is not None else None, self._stream(), 0)
        if e != 0:
            raise RuntimeError(f"flash_attention_decode: cudaError {e}")


class PagedAttnArgs(ctypes.Structure):
    """kernels.h PagedAttnArgs (the PAGED backend's launcher argument block)."""
    _fields_ = [("out", ctypes.c_void_p), ("q", ctypes.c_void_p), ("q_stride", ctypes.c_int),
                ("k_cache", ctypes.c_void_p), ("v_cache", ctypes.c_void_p),
                ("block_tables", ctypes.c_void_p), ("block_table_stride", ctypes.c_int),
                ("seq_lens", ctypes.c_void_p), ("query_start_loc", ctypes.c_void_p),
                ("num_heads", ctypes.c_int), ("head_size", ctypes.c_int),
                ("block_size", ctypes.c_int), ("scale", ctypes.c_float), ("dtype", ctypes.c_int)]


class PagedLib:
    """ctypes view of the PAGED launchers (kernels/paged_attention.cu), the in-tree peer."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        P, I = ctypes.c_void_p, ctypes.c_int
        self.lib.paged_attention_decode.argtypes = [P, I, I, I, P, ctypes.c_size_t, P, P, I]
        self.lib.paged_attention_decode.restype = I
        self.lib.paged_attention_prefill.argtypes = [P, I, I, I, P]
        self.lib.paged_attention_prefill.restype = I
        self.lib.paged_attention_workspace_floats.argtypes = [I, I, I, I]
        self.lib.paged_attention_workspace_floats.restype = ctypes.c_size_t

    @staticmethod
    def args(out, q, q_stride, kc, vc, qsl, sl, bt, H, D, bs, scale):
        return PagedAttnArgs(out.data_ptr(), q.data_ptr(), q_stride, kc.data_ptr(),
                             vc.data_ptr(), bt.data_ptr(), bt.shape[1], sl.data_ptr(),
                             qsl.data_ptr(), H, D, bs, scale,
                             DTYPE_CODE[str(out.dtype).split(".")[1]])


def make_paged(torch, seq_lens, H, D, bs, dtype, gen, extra_blocks=7):
    """Random K/V in a paged cache (num_blocks, H, bs, D) with scattered block tables,
    plus the dense (B, H, L, D) view of each sequence's keys for references."""
    nb_per = [(L + bs - 1) // bs for L in seq_lens]
    total = sum(nb_per) + extra_blocks
    perm = torch.randperm(total, generator=gen).to(torch.int32)
    width = max(nb_per)
    bt = torch.full((len(seq_lens), width), -1, dtype=torch.int32)
    k = 0
    for i, n in enumerate(nb_per):
        bt[i, :n] = perm[k:k + n]
        k += n
    cgen = torch.Generator(device="cuda").manual_seed(int(perm[0]))   # drawn on the GPU: fast
    kc = torch.randn(total, H, bs, D, generator=cgen, device="cuda", dtype=dtype)
    vc = torch.randn(total, H, bs, D, generator=cgen, device="cuda", dtype=dtype)
    return kc, vc, bt.cuda()


def time_ms(torch, fn, reps=20, warmup=3):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def time_graph_ms(torch, fn, n=20, reps=20):
    """Median ms per call of fn replayed from a CUDA graph of n back-to-back calls
    (no host launch overhead, as the engine runs decode steps)."""
    fn()
    torch.cuda.synchronize()
    try:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, capture_error_mode="relaxed"):
            for _ in range(n):
                fn()
    except RuntimeError as e:
        print(f"  (graph capture failed: {e}; timing plain launches)")
        return time_ms(torch, fn, reps=50)
    return time_ms(torch, g.replay, reps=reps) / n


def prefill_case(torch, B, S, D, dtype, bs=16):
    """The prefill benchmark's data: B sequences of S tokens, H = 2048 / D heads, K/V in a
    paged cache with scattered block tables, and the same data dense for SDPA. Returns
    (flash(lib), sdpa(), out, flops, the paged inputs (q, kc, vc, qsl, sl, bt, H, scale))."""
    import torch.nn.functional as Fn
    H = 2048 // D
    gen = torch.Generator().manual_seed(B * S + D)
    kc, vc, bt = make_paged(torch, [S] * B, H, D, bs, dtype, gen)
    qkv = torch.randn(B * S, 3 * H * D, device="cuda", dtype=dtype)
    q = qkv[:, :H * D]
    qsl = torch.arange(0, (B + 1) * S, S, dtype=torch.int32, device="cuda")
    sl = torch.full((B,), S, dtype=torch.int32, device="cuda")
    out = torch.empty(B * S, H * D, device="cuda", dtype=dtype)
    scale = D ** -0.5
    # dense copies of the same data for SDPA
    pos = torch.arange(S, device="cuda")
    blk = bt.long()[:, pos // bs]                                # (B, S)
    kd = kc[blk, :, pos % bs, :].permute(0, 2, 1, 3).contiguous()  # (B, H, S, D)
    vd = vc[blk, :, pos % bs, :].permute(0, 2, 1, 3).contiguous()
    qd = q.reshape(B, S, H, D).permute(0, 2, 1, 3).contiguous()

    def flash(lib):
        lib.prefill(out, q, 3 * H * D, kc, vc, qsl, sl, bt, 0, B, S, H, D, bs, scale)

    def sdpa():
        return Fn.scaled_dot_product_attention(qd, kd, vd, is_causal=True)

    return flash, sdpa, out, 4 * B * H * S * S * D / 2, (q, kc, vc, qsl, sl, bt, H, scale)


def rel_err(out, ref, B, S, H, D):
    return ((out.reshape(B, S, H, D).permute(0, 2, 1, 3).float() - ref.float()).abs().max()
            / ref.float().abs().max()).item()


def bench_prefill_ab(torch, libs, B, S, D, dtype):
    """The TMA kernel (default schedule) of every build in libs, each timed in every one of
    ROUNDS rounds in turn with SDPA: TF/s, median ratio to SDPA, max error, per build."""
    flash, sdpa, out, flops, _ = prefill_case(torch, B, S, D, dtype)
    H = 2048 // D
    ref = sdpa()
    os.environ["GPT2_ENGINE_FLASH_WGMMA"] = "1"
    errs = []
    for lib in libs:
        out.fill_(float("nan"))
        flash(lib)
        torch.cuda.synchronize()
        errs.append(rel_err(out, ref, B, S, H, D))
    times = [[] for _ in libs]
    ts = []
    for _ in range(ROUNDS):
        ts.append(time_ms(torch, sdpa, reps=8, warmup=1))
        for k, lib in enumerate(libs):
            times[k].append(time_ms(torch, lambda: flash(lib), reps=8, warmup=1))
    return [(flops / statistics.median(t) / 1e9,
             statistics.median(a / b for a, b in zip(ts, t)), e) for t, e in zip(times, errs)], \
        flops / statistics.median(ts) / 1e9


def bench_prefill(torch, lib, B, S, D, dtype, bs=16, paged=None, ws_only=False):
    """ws_only: only the TMA kernel at its default schedule against SDPA (the block-size
    table)."""
    H = 2048 // D
    flash_of, sdpa, out, flops, (q, kc, vc, qsl, sl, bt, H, scale) = prefill_case(
        torch, B, S, D, dtype, bs)

    def flash():
        flash_of(lib)

    ref = sdpa()
    res = {}
    saved = {k: os.environ.get(k) for k in ("GPT2_ENGINE_FLASH_WGMMA", "GPT2_ENGINE_FLASH_SCHED")}
    runs = [("ws", "1", "")]
    if not ws_only:
        runs += [("legacy", "legacy", ""), ("mma", "0", "")]
        runs += [(f"ws_s{m}", "1", str(m)) for m in SCHEDS]   # the TMA kernel's tile orders
    def use(flag, sched):   # both variables are read per call
        os.environ["GPT2_ENGINE_FLASH_WGMMA"] = flag
        os.environ["GPT2_ENGINE_FLASH_SCHED"] = sched

    # the clocks drift during a run: every kernel is timed in each of ROUNDS rounds, in
    # turn with SDPA, and a ratio to SDPA is the median of the rounds' ratios
    times = {path: [] for path, _, _ in runs}
    times["sdpa"] = []
    try:
        for path, flag, sched in runs:
            use(flag, sched)
            out.fill_(float("nan"))
            flash()
            torch.cuda.synchronize()
            res[path + "_err"] = rel_err(out, ref, B, S, H, D)
        for _ in range(ROUNDS):
            times["sdpa"].append(time_ms(torch, sdpa, reps=8, warmup=1))
            for path, flag, sched in runs:
                use(flag, sched)
                times[path].append(time_ms(torch, flash, reps=8, warmup=1))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    for path, _, _ in runs:
        res[path + "_tflops"] = flops / statistics.median(times[path]) / 1e9
        res[path + "_vs_sdpa"] = statistics.median(
            ts / tf for ts, tf in zip(times["sdpa"], times[path]))
    ts = statistics.median(times["sdpa"])
    tp = float("nan")
    if paged is not None and not ws_only:
        pout = torch.empty_like(out)
        a = PagedLib.args(pout, q, 3 * H * D, kc, vc, qsl, sl, bt, H, D, bs, scale)
        st = FlashLib._stream()
        tp = time_ms(torch, lambda: paged.lib.paged_attention_prefill(ctypes.byref(a), 0, B, S,
                                                                      st), reps=5)
    return {"B": B, "S": S, "D": D, "H": H, "sdpa_ms": ts, "sdpa_tflops": flops / ts / 1e9,
            "paged_tflops": flops / tp / 1e9, **res}


def bench_decode(torch, lib, B, L, D, dtype, bs=16, num_sms=132, paged=None, H=None,
                 max_len=None):
    """max_len: the length the launch is sized for (splits, PAGED partitions); the
    kernels read the actual L from seq_lens, as in a replayed CUDA graph. When one
    cache is smaller than 4x the L2, disjoint caches are rotated from call to call,
    so the figures are DRAM bandwidth, not L2 hits."""
    H = H or 2048 // D
    max_len = max_len or L
    nbytes = 2 * B * H * L * D * torch.empty((), dtype=dtype).element_size()
    l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 << 20)
    rot = max(1, min(-(-4 * l2 // nbytes), 16))
    gen = torch.Generator().manual_seed(B * L + D + 1)
    caches = [make_paged(torch, [L] * B, H, D, bs, dtype, gen) for _ in range(rot)]
    q = torch.randn(B, 3 * H * D, device="cuda", dtype=dtype)
    qsl = torch.arange(B + 1, dtype=torch.int32, device="cuda")
    sl = torch.full((B,), L, dtype=torch.int32, device="cuda")
    out = torch.empty(B, H * D, device="cuda", dtype=dtype)
    splits = lib.lib.flash_attention_num_splits(B, H, D, max_len, num_sms, 64)
    po = torch.empty(B, H, splits, D, device="cuda", dtype=torch.float32)
    plse = torch.empty(B, H, splits, device="cuda", dtype=torch.float32)
    tickets = torch.zeros(B * H, device="cuda", dtype=torch.int32)
    calls = max(20, rot)
    state = {"i": 0}

    def flash():
        kc, vc, bt = caches[state["i"] % rot]
        state["i"] += 1
        lib.decode(out, q, 3 * H * D, kc, vc, qsl, sl, bt, 0, B, H, D, bs, D ** -0.5, splits,
                   po, plse, tickets)

    t = time_graph_ms(torch, flash, n=calls)
    tp = float("nan")
    if paged is not None:
        pout = torch.empty_like(out)
        args = [PagedLib.args(pout, q, 3 * H * D, kc, vc, qsl, sl, bt, H, D, bs, D ** -0.5)
                for kc, vc, bt in caches]
        nf = paged.lib.paged_attention_workspace_floats(B, H, D, max_len)
        ws = torch.empty(max(nf, 1), device="cuda", dtype=torch.float32)

        def paged_call():
            a = args[state["i"] % rot]
            state["i"] += 1
            paged.lib.paged_attention_decode(ctypes.byref(a), B, max_len, 0, ws.data_ptr(), nf,
                                             tickets.data_ptr(), FlashLib._stream(), 0)
        tp = time_graph_ms(torch, paged_call, n=calls)
        torch.cuda.synchronize()
        state["i"] = 0
        paged_call()
        state["i"] = 0
        flash()
        torch.cuda.synchronize()
        rel = ((pout.float() - out.float()).abs().max() / out.float().abs().max()).item()
        if rel > 1e-2:
            print(f"  warning: PAGED and FLASH decode differ by {rel:.1e} (B={B} L={L} D={D})")
    del caches
    return {"B": B, "L": L, "D": D, "splits": splits, "ms": t, "GBps": nbytes / t / 1e6,
            "paged_ms": tp, "paged_GBps": nbytes / tp / 1e6, "rot": rot}


def copy_bandwidth(torch):
    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    t = time_ms(torch, lambda: y.copy_(x), reps=10)
    return 2 * x.numel() / t / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", help="prebuilt libflash.so (default: build one in /tmp)")
    ap.add_argument("--paged-lib", help="prebuilt library of kernels/paged_attention.cu")
    ap.add_argument("--arch", default="90")
    ap.add_argument("--dtype", default="float16", choices=list(DTYPE_CODE))
    ap.add_argument("--decode-only", action="store_true", help="skip the prefill rows")
    ap.add_argument("--prefill-only", action="store_true", help="skip the decode rows")
    ap.add_argument("--block-sizes", default="",
                    help="e.g. 16,64,128: instead of the prefill rows, the TMA kernel at its "
                         "default schedule against SDPA at these cache block sizes (it loads "
                         "one TMA box per page and 64-column panel)")
    ap.add_argument("--variant", action="append", default=[],
                    help='"MACRO=VALUE;MACRO=VALUE": rebuild with these and repeat the rows; '
                         '"KERNELS=dir" builds that kernels/ folder instead (a baseline tree)')
    ap.add_argument("--ab", action="store_true",
                    help="with --variant: one prefill table, the TMA kernel of every build "
                         "timed in the same rounds with SDPA (no decode rows)")
    args = ap.parse_args()
    import torch
    if not torch.cuda.is_available():
        print("no GPU visible: nothing to benchmark")
        return 0
    lib = FlashLib(args.lib or build_lib("/tmp/libflash_bench.so", args.arch))
    paged = None
    if os.path.exists(os.path.join(ROOT, "kernels", "paged_attention.cu")):
        try:
            paged = PagedLib(args.paged_lib or build_lib("/tmp/libpaged_bench.so", args.arch,
                                                         "paged_attention.cu"))
        except (OSError, subprocess.CalledProcessError, AttributeError) as e:
            print(f"PAGED peer unavailable: {e}")
    dtype = getattr(torch, args.dtype)
    num_sms = torch.cuda.get_device_properties(0).multi_processor_count
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, {args.dtype}")

    def prefill_rows(blib, name):
        print(f"prefill, build {name} (causal, paged K/V block_size 16 for FLASH, dense for "
              "SDPA)")
        print("  GPT2_ENGINE_FLASH_WGMMA=1: ws (TMA, warp-specialized), =legacy: legacy (cp.async "
              "wgmma), =0: mma (mma.sync); ws and legacy need compute capability 9.0 (elsewhere "
              "all three columns are mma.sync)")
        print(f"{'B':>3} {'S':>5} {'D':>4} {'ws TF/s':>8} {'legacy':>7} {'mma':>6} "
              f"{'SDPA TF/s':>10} {'ws/SDPA':>8} {'leg/SDPA':>8} {'mma/SDPA':>8} "
              f"{'PAGED TF/s':>11} {'err ws':>8} {'err leg':>8} {'err mma':>8}")
        rows = []
        for B, S in ((8, 2048), (16, 1024)):
            for D in (64, 128):
                r = bench_prefill(torch, blib, B, S, D, dtype, paged=paged)
                sd = r['sdpa_tflops']
                print(f"{B:>3} {S:>5} {D:>4} {r['ws_tflops']:>8.1f} {r['legacy_tflops']:>7.1f} "
                      f"{r['mma_tflops']:>6.1f} {sd:>10.1f} {r['ws_vs_sdpa']:>8.2f} "
                      f"{r['legacy_vs_sdpa']:>8.2f} {r['mma_vs_sdpa']:>8.2f} "
                      f"{r['paged_tflops']:>11.1f} {r['ws_err']:>8.1e} {r['legacy_err']:>8.1e} "
                      f"{r['mma_err']:>8.1e}")
                rows.append(r)
        print("  ws tile orders, GPT2_ENGINE_FLASH_SCHED bits: 1 longest-first by L2 sections, "
              "2 q tiles aligned to the end, 4 persistent (one CTA per SM), 8 persistent drawing "
              "tiles from a counter; TF/s, then each one's median ratio to SDPA")
        print(f"{'B':>3} {'S':>5} {'D':>4} " + " ".join(f"{'s' + str(m):>6}" for m in SCHEDS) +
              " | " + " ".join(f"{'s' + str(m):>5}" for m in SCHEDS) + f" {'max err':>8}")
        for r in rows:
            tf = " ".join(f"{r[f'ws_s{m}_tflops']:>6.1f}" for m in SCHEDS)
            rat = " ".join(f"{r[f'ws_s{m}_vs_sdpa']:>5.2f}" for m in SCHEDS)
            err = max(r[f"ws_s{m}_err"] for m in SCHEDS)
            print(f"{r['B']:>3} {r['S']:>5} {r['D']:>4} {tf} | {rat} {err:>8.1e}")

    def block_size_rows(sizes):
        print("prefill, TMA kernel (default schedule) by cache block size: TF/s, median ratio "
              "to SDPA of the same call")
        print(f"{'B':>3} {'S':>5} {'D':>4} " + " ".join(f"{'bs' + str(b):>13}" for b in sizes))
        for B, S in ((8, 2048), (16, 1024)):
            for D in (64, 128):
                cells = []
                for bsz in sizes:
                    r = bench_prefill(torch, lib, B, S, D, dtype, bs=bsz, ws_only=True)
                    cells.append(f"{r['ws_tflops']:>7.1f} {r['ws_vs_sdpa']:>5.2f}")
                print(f"{B:>3} {S:>5} {D:>4} " + " ".join(cells))

    def ab_rows(builds):
        print("prefill A/B, TMA kernel (default schedule), every build timed in each round "
              "with SDPA: TF/s, median ratio to SDPA, max relative error")
        for k, (name, _, _) in enumerate(builds):
            print(f"  b{k}: {name}")
        print(f"{'B':>3} {'S':>5} {'D':>4} {'SDPA':>6} " +
              " ".join(f"{'b' + str(k):>22}" for k in range(len(builds))))
        for B, S in ((8, 2048), (16, 1024)):
            for D in (64, 128):
                cells, sd = bench_prefill_ab(torch, [b[1] for b in builds], B, S, D, dtype)
                print(f"{B:>3} {S:>5} {D:>4} {sd:>6.1f} " +
                      " ".join(f"{tf:>6.1f} {r:>5.3f} {e:>8.1e}" for tf, r, e in cells))

    if args.block_sizes and not args.decode_only:
        block_size_rows([int(x) for x in args.block_sizes.split(",") if x])
    elif not args.decode_only and not args.ab:
        prefill_rows(lib, "default")
    cb = copy_bandwidth(torch) if not args.ab else 0.0
    if not args.ab:
        print(f"decode (K+V bytes read, timed as CUDA-graph replays of 20 calls); "
              f"device-to-device copy {cb:.0f} GB/s (read+write)")
    builds = [("default", lib, paged)]
    from concurrent.futures import ThreadPoolExecutor
    pool = ThreadPoolExecutor(max_workers=8)   # variant libraries build side by side
    for k, v in enumerate(args.variant):
        hdr = f"/tmp/flash_variant{k}.h"
        defs = [tuple(x.strip() for x in d.partition("=")[::2]) for d in filter(None, v.split(";"))]
        kernels = dict(defs).get("KERNELS")
        defs = [(n, val) for n, val in defs if n != "KERNELS"]
        with open(hdr, "w") as f:
            for name, val in defs:
                f.write(f"#define {name} {val}\n")
        names = [n for n, _ in defs] or ["KERNELS"]
        vpaged, vlib = paged, lib            # rebuilt only where the variant's knobs live
        if paged is not None and not args.paged_lib and any(n.startswith("PAGED_") for n in names):
            vpaged = pool.submit(build_lib, f"/tmp/libpaged_variant{k}.so", args.arch,
                                 "paged_attention.cu", include=hdr, kernels=kernels)
        if not all(n.startswith("PAGED_") for n in names):
            vlib = pool.submit(build_lib, f"/tmp/libflash_variant{k}.so", args.arch, include=hdr,
                               kernels=kernels)
        builds.append((v, vlib, vpaged))
    # (futures resolve to library paths; the libraries load in build order)
    builds = [(n, FlashLib(fl.result()) if hasattr(fl, "result") else fl,
               PagedLib(pl.result()) if hasattr(pl, "result") else pl) for n, fl, pl in builds]
    pool.shutdown()
    if args.ab:
        ab_rows(builds)
        return 0
    for name, blib, bpaged in builds:
        if name != "default" and not args.decode_only:
            prefill_rows(blib, name)
        if args.prefill_only:
            continue
        print(f"build: {name}")
        print(f"{'B':>3} {'L':>5} {'D':>4} {'H':>3} {'max_len':>7} {'splits':>6} {'rot':>3} {'ms':>8} "
              f"{'GB/s':>7} {'of copy':>8} {'PAGED ms':>9} {'PAGED GB/s':>11} {'FLASH/PAGED':>11}")
        rows = [(B, L, D, None, None) for B, L in ((1, 4096), (8, 2048), (64, 1024), (256, 512))
                for D in (64, 128)]
        rows += [(256, L, 64, 12, 1024) for L in (64, 128, 256)]    # engine-shaped
        rows += [(32, 128, 64, 12, 1024), (8, 200, 64, 12, 1024)]
        rows += [(8, 2048, 64, 12, 2048), (8, 2048, 128, 16, 2048)]   # bench_attention's B=8
        for B, L, D, H, max_len in rows:
            r = bench_decode(torch, blib, B, L, D, dtype, num_sms=num_sms, paged=bpaged, H=H,
                             max_len=max_len)
            print(f"{B:>3} {L:>5} {D:>4} {H or 2048 // D:>3} {max_len or L:>7} {r['splits']:>6} "
                  f"{r['rot']:>3} "
                  f"{r['ms']:>8.4f} {r['GBps']:>7.0f} {r['GBps'] / cb:>8.2f} "
                  f"{r['paged_ms']:>9.4f} {r['paged_GBps']:>11.0f} "
                  f"{r['GBps'] / r['paged_GBps']:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
