"""torch_peer.py — the strong PyTorch peer for the benchmarks: GPT-2 in plain torch,
what a competent PyTorch user builds for fast greedy generation (gpt-fast style).
Not part of the engine and not a test; benchmarks import it, `--check` checks it.

- loads an HF-layout checkpoint dir (config.json + model.safetensors or shards)
  or a GPT2LMHeadModel state dict; weights in one dtype (fp16 for the benchmarks);
- static KV cache per layer, K and V each [B, H, Tmax, D], preallocated once;
- prefill: one forward over the [B, T] prompt (SDPA, is_causal) that fills cache[:, :, :T];
- decode step: token embedding + position, per layer LN -> c_attn -> cache write at
  `pos` (index_copy_) -> SDPA over cache[:, :, :Tb] with the mask `t <= pos` ->
  c_proj -> LN -> c_fc -> gelu(tanh) -> c_proj, LN_f, lm_head, argmax; the next
  token is written into the static input buffer and the output buffer, and `pos`
  is incremented, all on the GPU. The step is captured in a torch.cuda.CUDAGraph
  per cache bucket Tb (multiples of `bucket`, so that early steps read a short
  cache); generation replays one graph per token with no host sync.
- prompts of one batch have equal length (the benchmarks use equal lengths).

Shape legend: B batch, T prompt length, C n_embd, H heads, D = C / H, L layers,
V vocab, Tmax cache length.

CLI:  python benchmarks/torch_peer.py --check [--device cpu|cuda]
      python benchmarks/torch_peer.py --model DIR --prompt-len 16 --max-tokens 64
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F


def _load_state_dict(ckpt_dir):
    from safetensors.torch import load_file
    idx = os.path.join(ckpt_dir, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    sd = {}
    for fn in files:
        sd.update(load_file(os.path.join(ckpt_dir, fn)))
    return sd


class TorchGPT2:
    """GPT-2 greedy generator with a static KV cache and CUDA-graph decode."""

    def __init__(self, config, state_dict, dtype=torch.float16, device="cuda",
                 max_batch=1, max_seq_len=None, use_graph=None, bucket=128):
        self.device = torch.device(device)
        self.dtype = dtype
        c = config
        self.C, self.L, self.H = c["n_embd"], c["n_layer"], c["n_head"]
        self.D = self.C // self.H
        self.V, self.P = c["vocab_size"], c.get("n_positions", 1024)
        self.eps = c.get("layer_norm_epsilon", 1e-5)
        act = c.get("activation_function", "gelu_new")
        if act in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
            self.act = lambda x: F.gelu(x, approximate="tanh")
        elif act == "gelu":
            self.act = F.gelu
        elif act == "relu":
            self.act = F.relu
        else:
            raise ValueError(f"unsupported activation_function {act!r}")
        self.B = max_batch
        self.Tmax = min(max_seq_len or self.P, self.P)
        self.bucket = bucket
        self.use_graph = (self.device.type == "cuda") if use_graph is None else use_graph

        def get(name):
            for k in ("transformer." + name, name):
                if k in state_dict:
                    return state_dict[k].to(device=self.device, dtype=dtype).contiguous()
            raise KeyError(f"checkpoint lacks {name}")

        # HF Conv1D weights are [in, out]; F.linear wants [out, in]
        def lin(name):
            return get(name + ".weight").t().contiguous(), get(name + ".bias")

        self.wte = get("wte.weight")                       # [V, C], tied lm_head
        self.wpe = get("wpe.weight")                       # [P, C]
        self.layers = []
        for i in range(self.L):
            p = f"h.{i}."
            self.layers.append(dict(
                ln1=(get(p + "ln_1.weight"), get(p + "ln_1.bias")),
                qkv=lin(p + "attn.c_attn"),                # [3C, C]
                proj=lin(p + "attn.c_proj"),               # [C, C]
                ln2=(get(p + "ln_2.weight"), get(p + "ln_2.bias")),
                fc=lin(p + "mlp.c_fc"),                    # [4C, C]
                fc2=lin(p + "mlp.c_proj"),                 # [C, 4C]
            ))
        self.lnf = (get("ln_f.weight"), get("ln_f.bias"))
        kv = dict(device=self.device, dtype=dtype)
        # zeros, not empty: masked-out positions must hold finite values (0 * NaN = NaN)
        self.k_cache = [torch.zeros(self.B, self.H, self.Tmax, self.D, **kv) for _ in range(self.L)]
        self.v_cache = [torch.zeros(self.B, self.H, self.Tmax, self.D, **kv) for _ in range(self.L)]
        # static decode state
        self.tok = torch.zeros(self.B, dtype=torch.long, device=self.device)         # input token
        self.pos = torch.zeros(1, dtype=torch.long, device=self.device)              # its position
        self.out = torch.zeros(self.B, self.Tmax + 1, dtype=torch.long, device=self.device)
        self.arange = torch.arange(self.Tmax, device=self.device)
        self.graphs = {}
        self.cur_b = self.B
        if self.use_graph:
            self._capture()

    @classmethod
    def from_pretrained(cls, ckpt_dir, **kw):
        with open(os.path.join(ckpt_dir, "config.json")) as f:
            config = json.load(f)
        return cls(config, _load_state_dict(ckpt_dir), **kw)

    @classmethod
    def from_hf_model(cls, model, **kw):
        return cls(model.config.to_dict(), model.state_dict(), **kw)

    # -- layers ---------------------------------------------------------------
    def _ln(self, x, wb):
        return F.layer_norm(x, (self.C,), wb[0], wb[1], self.eps)

    def _block_tail(self, x, y, lay):
        """x + c_proj(y), then the MLP half of the block."""
        x = x + F.linear(y, *lay["proj"])
        h = self.act(F.linear(self._ln(x, lay["ln2"]), *lay["fc"]))
        return x + F.linear(h, *lay["fc2"])

    def _logits(self, x):
        return F.linear(self._ln(x, self.lnf), self.wte)

    @torch.no_grad()
    def prefill(self, ids):
        """ids [b, T] (b <= B) -> first generated token [b]; fills cache[:, :, :T]."""
        b, T = ids.shape
        x = F.embedding(ids, self.wte) + self.wpe[:T]
        for l, lay in enumerate(self.layers):
            qkv = F.linear(self._ln(x, lay["ln1"]), *lay["qkv"])            # [b, T, 3C]
            q, k, v = qkv.view(b, T, 3, self.H, self.D).permute(2, 0, 3, 1, 4)  # each [b, H, T, D]
            self.k_cache[l][:b, :, :T] = k
            self.v_cache[l][:b, :, :T] = v
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = self._block_tail(x, y.transpose(1, 2).reshape(b, T, self.C), lay)
        return self._logits(x[:, -1]).argmax(-1)

    def _decode_step(self, Tb):
        """One token per sequence at position self.pos, attending cache[:, :, :Tb]."""
        b = self.cur_b
        x = F.embedding(self.tok[:b], self.wte) + F.embedding(self.pos, self.wpe)   # [b, C]
        x = x.view(b, 1, self.C)
        mask = (self.arange[:Tb] <= self.pos).view(1, 1, 1, Tb)
        for l, lay in enumerate(self.layers):
            qkv = F.linear(self._ln(x, lay["ln1"]), *lay["qkv"])            # [b, 1, 3C]
            q, k, v = qkv.view(b, 1, 3, self.H, self.D).permute(2, 0, 3, 1, 4)  # [b, H, 1, D]
            kc, vc = self.k_cache[l][:b], self.v_cache[l][:b]
            kc.index_copy_(2, self.pos, k)
            vc.index_copy_(2, self.pos, v)
            y = F.scaled_dot_product_attention(q, kc[:, :, :Tb], vc[:, :, :Tb], attn_mask=mask)
            x = self._block_tail(x, y.transpose(1, 2).reshape(b, 1, self.C), lay)
        nxt = self._logits(x[:, 0]).argmax(-1)                                # [b]
        self.tok[:b].copy_(nxt)
        self.out[:b].index_copy_(1, self.pos + 1, nxt.view(b, 1))
        self.pos.add_(1)

    def _buckets(self):
        bs = list(range(self.bucket, self.Tmax, self.bucket)) + [self.Tmax]
        return sorted(set(bs))

    def _bucket_for(self, p):
        for tb in self._buckets():
            if p < tb:
                return tb
        raise ValueError(f"position {p} >= max_seq_len {self.Tmax}")

    @torch.no_grad()
    def _capture(self):
        """One graph per bucket length; warm-up on a side stream as torch requires.
        Warm-up writes garbage K/V at position 0, which prefill overwrites."""
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        self.pool = None
        with torch.cuda.stream(s):
            for tb in self._buckets():
                self.pos.zero_()
                for _ in range(2):
                    self._decode_step(tb)
                    self.pos.zero_()
        torch.cuda.current_stream().wait_stream(s)
        for tb in self._buckets():
            g = torch.cuda.CUDAGraph()
            self.pos.zero_()
            with torch.cuda.graph(g, pool=self.pool):
                self._decode_step(tb)
            self.pool = g.pool()
            self.graphs[tb] = g
        torch.cuda.synchronize()

    @torch.no_grad()
    def generate(self, ids, max_new_tokens):
        """ids [b, T] long tensor (or list of equal-length lists) -> [b, max_new_tokens]
        greedy tokens (no EOS stop). Graph replay needs b == max_batch."""
        if not torch.is_tensor(ids):
            ids = torch.tensor(ids, dtype=torch.long)
        ids = ids.to(self.device)
        b, T = ids.shape
        if b > self.B or T + max_new_tokens > self.Tmax + 1:
            raise ValueError(f"batch {b} / length {T}+{max_new_tokens} exceed the cache "
                             f"(max_batch {self.B}, max_seq_len {self.Tmax})")
        if self.use_graph and b != self.B:
            raise ValueError(f"graphs were captured for batch {self.B}, got {b}")
        self.cur_b = b
        first = self.prefill(ids)
        self.tok[:b].copy_(first)
        self.out[:b, T] = first
        self.pos.fill_(T)
        for p in range(T, T + max_new_tokens - 1):
            if self.use_graph:
                self.graphs[self._bucket_for(p)].replay()
            else:
                self._decode_step(self._bucket_for(p))
        return self.out[:b, T:T + max_new_tokens].clone()


# -- self-check against transformers -------------------------------------------
def check(device="cpu", new_tokens=12):
    """Greedy tokens of the peer == HF generate(do_sample=False) on a small random
    fp32 model, batch 1 and batch 3 (equal-length prompts). Returns True/False."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=512, n_positions=128,
                     bos_token_id=511, eos_token_id=511,
                     initializer_range=0.3)   # HF's 0.02 makes greedy repeat one token
    hf = GPT2LMHeadModel(cfg).to(device).eval()
    ok = True
    for b, T in ((1, 7), (3, 11)):
        ids = torch.randint(0, cfg.vocab_size, (b, T), device=device)
        with torch.no_grad():
            ref = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                              max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              pad_token_id=cfg.eos_token_id)[:, T:]
        peer = TorchGPT2.from_hf_model(hf, dtype=torch.float32, device=device, max_batch=b,
                                       max_seq_len=T + new_tokens, bucket=8)
        got = peer.generate(ids, new_tokens)
        # also the first-step logits, the sharper check
        with torch.no_grad():
            ref_logits = hf(ids).logits[:, -1]
            x = peer.prefill(ids)
        same = torch.equal(got.cpu(), ref.cpu())
        print(f"check b={b} T={T} device={device} graph={peer.use_graph}: "
              f"tokens {'match' if same else 'DIFFER'}"
              f"{'' if same else f' peer={got.tolist()} hf={ref.tolist()}'}; "
              f"prefill argmax {'match' if torch.equal(x, ref_logits.argmax(-1)) else 'DIFFER'}")
        ok = ok and same
    print("check:", "PASS" if ok else "FAIL")
    return ok


def main():
    ap = argparse.ArgumentParser(description="strong PyTorch peer for GPT-2 generation")
    ap.add_argument("--check", action="store_true", help="compare greedy tokens with HF generate")
    ap.add_argument("--device", default=None, help="cpu or cuda (default cuda; --check may use cpu)")
    ap.add_argument("--model", help="HF-layout checkpoint dir (timing run)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    a = ap.parse_args()
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if a.check:
        if device == "cuda" and not torch.cuda.is_available():
            sys.exit("--device cuda needs a CUDA GPU (torch.cuda.is_available() is False)")
        sys.exit(0 if check(device) else 1)
    if not torch.cuda.is_available():
        sys.exit("timing runs need a CUDA GPU; use --check --device cpu for the CPU self-check")
    if not a.model:
        sys.exit("--model DIR is required for a timing run")
    import time
    peer = TorchGPT2.from_pretrained(a.model, max_batch=a.batch, max_seq_len=a.prompt_len + a.max_tokens)
    ids = torch.randint(0, peer.V, (a.batch, a.prompt_len))
    peer.generate(ids, a.max_tokens)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    peer.generate(ids, a.max_tokens)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(f"{a.batch}x({a.prompt_len} in, {a.max_tokens} out): {dt * 1e3:.2f} ms, "
          f"{a.batch * a.max_tokens / dt:,.0f} output tokens/s")


if __name__ == "__main__":
    main()
