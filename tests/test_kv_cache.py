"""llm.kv_cache (the C KVCache type): sizes, usage and block tables while a
request runs, and the CPU NumPy views of the cache checked against K/V that the
NumPy reference computes for layer 0."""
import gc

import numpy as np
import pytest

from reference_gpt2 import _layernorm

import gpt2_engine
from gpt2_engine import LLM, SamplingParams


def test_sizes_and_counters(small_model):
    with LLM(model=small_model.path, device="cpu", num_kv_blocks=40, block_size=8) as llm:
        kv = llm.kv_cache
        assert (kv.num_blocks, kv.block_size, kv.num_layers, kv.num_heads, kv.head_size) == \
            (40, 8, 2, 4, 16)
        assert kv.dtype == "float32"
        assert kv.num_free_blocks == 40 and kv.usage == 0.0
        assert kv.nbytes == 40 * 2 * 2 * 4 * 8 * 16 * 4      # blocks x K/V x layers x H x bs x D x 4B
        assert "num_blocks=40" in repr(kv)


def test_block_table_and_usage_during_a_request(small_model):
    with LLM(model=small_model.path, device="cpu", num_kv_blocks=40, block_size=8) as llm:
        prompt = list(range(1, 20))                                   # 19 tokens -> 3 blocks
        llm.add_request("a", prompt, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))
        llm.step()                                                    # prefill + first token
        table = llm.kv_cache.block_table("a")
        assert len(table) == 3 and len(set(table)) == 3
        assert all(0 <= b < 40 for b in table)
        assert llm.kv_cache.num_free_blocks == 37
        assert llm.kv_cache.usage == pytest.approx(3 / 40)
        with pytest.raises(KeyError):
            llm.kv_cache.block_table("nope")
        while llm.has_unfinished_requests():
            llm.step()
        llm.step()                                                    # release the finished one
        assert llm.kv_cache.num_free_blocks == 40


def test_key_value_views_hold_layer0_kv(small_model):
    """The views are the cache itself: layer 0's K/V of every prompt position,
    found through the block table, equal ln_1(wte + wpe) @ c_attn (NumPy, fp64)."""
    W, cfg = small_model.weights, small_model.config
    C, H = cfg["n_embd"], cfg["n_head"]
    D = C // H
    prompt = [5, 17, 99, 3, 250, 7, 8, 9, 10, 11, 300, 12]
    with LLM(model=small_model.path, device="cpu", block_size=8, enable_prefix_caching=False) as llm:
        llm.add_request("r", prompt, SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
        llm.step()
        table = llm.kv_cache.block_table("r")
        kc, vc = llm.kv_cache.key_cache(0), llm.kv_cache.value_cache(0)
        assert kc.shape == (llm.kv_cache.num_blocks, H, 8, D) and kc.dtype == np.float32
        x = W["wte.weight"][prompt].astype(np.float64) + W["wpe.weight"][:len(prompt)]
        h = _layernorm(x, W["h.0.ln_1.weight"], W["h.0.ln_1.bias"], cfg["layer_norm_epsilon"])
        qkv = h @ W["h.0.attn.c_attn.weight"] + W["h.0.attn.c_attn.bias"]
        for pos in range(len(prompt)):
            blk, off = table[pos // 8], pos % 8
            np.testing.assert_allclose(kc[blk, :, off, :], qkv[pos, C:2 * C].reshape(H, D),
                                       rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(vc[blk, :, off, :], qkv[pos, 2 * C:].reshape(H, D),
                                       rtol=1e-5, atol=1e-5)
        with pytest.raises(IndexError):
            llm.kv_cache.key_cache(2)
        del kc, vc


def test_views_keep_the_engine_alive_and_block_close(small_model):
    llm = LLM(model=small_model.path, device="cpu", num_kv_blocks=16)
    view = llm.kv_cache.key_cache(1)
    with pytest.raises(gpt2_engine.EngineError, match="view"):
        llm.close()
    assert llm.compute_logits([[1, 2, 3]])[0].shape == (3, 512)      # still usable
    del llm
    gc.collect()
    assert float(np.abs(view).sum()) >= 0.0                          # memory still valid
    del view
    gc.collect()


def test_closed_engine_raises(small_model):
    llm = LLM(model=small_model.path, device="cpu", num_kv_blocks=16)
    kv = llm.kv_cache
    llm.close()
    with pytest.raises(Exception, match="closed"):
        kv.num_free_blocks
