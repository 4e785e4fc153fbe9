"""profile_flash_prefill.py — one FLASH prefill launch of bench_flash's shape, for
Nsight Compute (tools/gpu_session.sh step `ncuflash` runs it under ncu; on its own it
runs that launch once and checks that every output is finite).

    ncu -k regex:flash_attention_sm90a_kernel -c 1 python3 benchmarks/profile_flash_prefill.py \\
        [--batch 16] [--seq 1024] [--head-size 64] [--block-size 16]

Random q/K/V (H = 2048 / head size, scattered block tables), copied in
through gpt2_engine.ops, as in bench_flash.py's prefill rows.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gpt2_engine import ops  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--head-size", type=int, default=64)
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--block-size", type=int, default=16)
    args = ap.parse_args()
    B, S, D, bs = args.batch, args.seq, args.head_size, args.block_size
    H = 2048 // D
    rng = np.random.default_rng(0)
    nb = B * S // bs
    q = rng.standard_normal((B * S, H, D), dtype=np.float32)
    kc = rng.standard_normal((nb, H, bs, D), dtype=np.float32)
    vc = rng.standard_normal((nb, H, bs, D), dtype=np.float32)
    bt = rng.permutation(nb).reshape(B, S // bs).astype(np.int32)
    sl = np.full(B, S, np.int32)
    qsl = (np.arange(B + 1) * S).astype(np.int32)
    out = ops.paged_attention(q, kc, vc, bt, sl, qsl, backend="FLASH", dtype=args.dtype,
                              num_decodes=0)
    assert np.all(np.isfinite(out)), "FLASH prefill left non-finite outputs"
    print(f"FLASH prefill B={B} S={S} H={H} D={D} block_size={bs} {args.dtype}: done")


if __name__ == "__main__":
    main()
