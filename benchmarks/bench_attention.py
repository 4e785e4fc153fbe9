"""bench_attention.py — decode attention bandwidth of the PAGED backend.

For each (H, D) in {(12, 64), (16, 128)}, batch B in {1, 8, 64, 256} and context
ctx in {512, 2048, 8192}, prints the achieved bandwidth (bytes of K and V read /
kernel time) of
  - PAGED: gpt2_engine.ops.attention_bench (a CUDA graph of `iters` back-to-back
    launches captured in C, its replays timed by cudaEvents, as the engine replays its
    decode steps; no Python overhead), block tables scattered at random;
  - SDPA:  torch.nn.functional.scaled_dot_product_attention on the same amount of K/V laid
    out densely (B, H, ctx, D), q_len 1, timed as a CUDA graph of `iters` calls;
against the device-to-device copy bandwidth measured in the same run (a 2 GiB torch
copy, counting read + write). When one input set is smaller than 4x the L2 cache,
several disjoint sets are rotated so the timings measure DRAM, not L2.

    python benchmarks/bench_attention.py [--dtype float16] [--quick] [--iters 100]
"""
import argparse
import math
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--quick", action="store_true", help="a few shapes only")
    p.add_argument("--max-gb", type=float, default=20.0, help="skip shapes whose K/V exceed this")
    p.add_argument("--no-paged", action="store_true", help="torch peers only")
    return p.parse_args()


def copy_bandwidth(torch):
    n = 2 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(10):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    del src, dst
    torch.cuda.empty_cache()
    return 2 * n / (statistics.median(times) * 1e-3) / 1e9


def sdpa_ms(torch, B, H, D, ctx, tdtype, rotate, iters):
    F = torch.nn.functional
    q = torch.randn(B, H, 1, D, device="cuda", dtype=tdtype)
    ks = [torch.randn(B, H, ctx, D, device="cuda", dtype=tdtype) for _ in range(rotate)]
    vs = [torch.randn(B, H, ctx, D, device="cuda", dtype=tdtype) for _ in range(rotate)]
    for i in range(3):
        F.scaled_dot_product_attention(q, ks[i % rotate], vs[i % rotate])
    torch.cuda.synchronize()
    try:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for i in range(iters):
                F.scaled_dot_product_attention(q, ks[i % rotate], vs[i % rotate])
        run = g.replay
    except Exception:                      # no graph capture: eager loop (adds launch gaps)
        def run():
            for i in range(iters):
                F.scaled_dot_product_attention(q, ks[i % rotate], vs[i % rotate])
    run()
    times = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / iters)
    del ks, vs, q
    torch.cuda.empty_cache()
    return statistics.median(times)


def paged_ms(ops, B, H, D, ctx, bs, dtype, rotate, iters, rng):
    blocks_per_seq = math.ceil(ctx / bs)
    num_blocks = rotate * B * blocks_per_seq
    perm = rng.permutation(num_blocks).astype(np.int32)
    tables = perm.reshape(rotate, B, blocks_per_seq)
    q = rng.standard_normal((B, H, D)).astype(np.float32)
    return ops.attention_bench(q, (num_blocks, H, bs, D), tables,
                               np.full(B, ctx, np.int32), iters=iters, dtype=dtype)


def main():
    args = parse()
    import torch
    if not torch.cuda.is_available():
        print("bench_attention: no CUDA device visible; nothing to measure")
        return 0
    ops = None
    if not args.no_paged:
        try:
            import gpt2_engine
            from gpt2_engine import ops as _ops
            if gpt2_engine._C.built_with_cuda:
                ops = _ops
            else:
                print("gpt2_engine is a CPU-only build: PAGED column skipped")
        except Exception as e:  # the extension did not build/import
            print(f"gpt2_engine not importable ({e}): PAGED column skipped")
    tdtype = {"float16": torch.float16, "bfloat16": torch.bfloat16,
              "float32": torch.float32}[args.dtype]
    esz = 4 if args.dtype == "float32" else 2
    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    copy = copy_bandwidth(torch)
    print(f"device: {props.name}, L2 {l2 >> 20} MiB; D2D copy bandwidth (read+write): "
          f"{copy:.0f} GB/s; dtype {args.dtype}, block_size {args.block_size}")
    rng = np.random.default_rng(0)
    shapes = [(12, 64), (16, 128)]
    batches, ctxs = ([8, 64], [2048]) if args.quick else ([1, 8, 64, 256], [512, 2048, 8192])
    rows = []
    for H, D in shapes:
        for B in batches:
            for ctx in ctxs:
                kv_bytes = 2 * B * H * ctx * D * esz
                if kv_bytes > args.max_gb * 1e9:
                    rows.append((H, D, B, ctx, None, None, f"skipped ({kv_bytes / 1e9:.0f} GB)"))
                    continue
                rotate = max(1, math.ceil(4 * l2 / kv_bytes))
                p_ms = paged_ms(ops, B, H, D, ctx, args.block_size, args.dtype, rotate,
                                args.iters, rng) if ops else None
                s_ms = sdpa_ms(torch, B, H, D, ctx, tdtype, rotate, args.iters)
                rows.append((H, D, B, ctx, p_ms, s_ms, ""))
    print(f"\n{'H':>3} {'D':>4} {'B':>4} {'ctx':>5} | {'PAGED us':>9} {'GB/s':>6} {'%copy':>6} | "
          f"{'SDPA us':>8} {'GB/s':>6} {'%copy':>6} | PAGED/SDPA")
    for H, D, B, ctx, p_ms, s_ms, note in rows:
        if note:
            print(f"{H:>3} {D:>4} {B:>4} {ctx:>5} | {note}")
            continue
        kv = 2 * B * H * ctx * D * esz
        s_gbs = kv / (s_ms * 1e-3) / 1e9
        if p_ms is not None:
            p_gbs = kv / (p_ms * 1e-3) / 1e9
            pc = f"{p_ms * 1e3:>9.1f} {p_gbs:>6.0f} {100 * p_gbs / copy:>5.0f}%"
            ratio = f"{s_ms / p_ms:.2f}x"
        else:
            pc, ratio = f"{'-':>9} {'-':>6} {'-':>6}", "-"
        print(f"{H:>3} {D:>4} {B:>4} {ctx:>5} | {pc} | {s_ms * 1e3:>8.1f} {s_gbs:>6.0f} "
              f"{100 * s_gbs / copy:>5.0f}% | {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
