"""profile_decode_attn.py — one FLASH and one PAGED decode launch of a bench_flash
decode shape, for Nsight Compute (tools/gpu_session.sh step `ncudec` runs it under
ncu; on its own it runs both once and prints their largest difference).

    ncu -k regex:"flash_decode_kernel|paged_attention_decode_kernel" \\
        python3 benchmarks/profile_decode_attn.py [--batch 64] [--len 1024] [--head-size 64]

The kernels come from bench_flash.py's ctypes libraries (built with nvcc here),
on a scattered paged cache (block size 16) with H = 2048 / head size.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_flash as bf  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--len", type=int, default=1024)
    ap.add_argument("--head-size", type=int, default=64)
    ap.add_argument("--heads", type=int, default=0, help="default 2048 / head size")
    ap.add_argument("--arch", default="90")
    args = ap.parse_args()
    import torch
    B, L, D = args.batch, args.len, args.head_size
    H = args.heads or 2048 // D
    bs, dtype = 16, torch.float16
    flash = bf.FlashLib(bf.build_lib("/tmp/libflash_profile.so", args.arch))
    paged = bf.PagedLib(bf.build_lib("/tmp/libpaged_profile.so", args.arch,
                                     "paged_attention.cu"))
    gen = torch.Generator().manual_seed(1)
    kc, vc, bt = bf.make_paged(torch, [L] * B, H, D, bs, dtype, gen)
    q = torch.randn(B, 3 * H * D, device="cuda", dtype=dtype)
    qsl = torch.arange(B + 1, dtype=torch.int32, device="cuda")
    sl = torch.full((B,), L, dtype=torch.int32, device="cuda")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    splits = flash.lib.flash_attention_num_splits(B, H, D, L, sms, 64)
    po = torch.empty(B, H, splits, D, device="cuda", dtype=torch.float32)
    plse = torch.empty(B, H, splits, device="cuda", dtype=torch.float32)
    tickets = torch.zeros(B * H, device="cuda", dtype=torch.int32)
    out = torch.empty(B, H * D, device="cuda", dtype=dtype)
    flash.decode(out, q, 3 * H * D, kc, vc, qsl, sl, bt, 0, B, H, D, bs, D ** -0.5, splits,
                 po, plse, tickets)
    pout = torch.empty_like(out)
    a = bf.PagedLib.args(pout, q, 3 * H * D, kc, vc, qsl, sl, bt, H, D, bs, D ** -0.5)
    nf = paged.lib.paged_attention_workspace_floats(B, H, D, L)
    ws = torch.empty(max(nf, 1), device="cuda", dtype=torch.float32)
    e = paged.lib.paged_attention_decode(bf.ctypes.byref(a), B, L, 0, ws.data_ptr(), nf,
                                         tickets.data_ptr(), bf.FlashLib._stream(), 0)
    assert e == 0, f"paged_attention_decode: cudaError {e}"
    torch.cuda.synchronize()
    diff = (out.float() - pout.float()).abs().max().item()
    print(f"decode B={B} L={L} H={H} D={D} splits={splits}: FLASH vs PAGED max |diff| {diff:.2e}")


if __name__ == "__main__":
    main()
