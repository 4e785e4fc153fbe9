"""compute_logits against two independent references — the NumPy float64 GPT-2
in tests/reference_gpt2.py and Hugging Face transformers' GPT2LMHeadModel — on
random checkpoints of several shapes, both key styles, F32/F16/BF16 files, and
several prompts of different lengths (1 token .. n_positions) in one call.

Tolerance: max |engine - ref| / max |ref| <= 1e-5 (float32 compute)."""
import numpy as np
import pytest

from conftest import make_model
from reference_gpt2 import reference_logits, rel_error

import gpt2_engine
from gpt2_engine import LLM

TOL = 1e-5

SHAPES = [
    dict(n_embd=64, n_layer=2, n_head=4, n_positions=64, vocab_size=512),
    dict(n_embd=48, n_layer=3, n_head=3, n_positions=40, vocab_size=777),   # odd sizes
    dict(n_embd=96, n_layer=1, n_head=2, n_positions=33, vocab_size=1000),
]


def prompts_for(cfg, rng):
    P, V = cfg["n_positions"], cfg["vocab_size"]
    lengths = [1, 2, 7, 17, P - 1, P]
    return [rng.integers(0, V, size=n).tolist() for n in lengths]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"C{s['n_embd']}H{s['n_head']}V{s['vocab_size']}")
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("key_style", ["hf", "original"])
def test_logits_match_numpy_reference(tmp_path, shape, dtype, key_style):
    m = make_model(tmp_path, dtype=dtype, key_style=key_style, **shape)
    rng = np.random.default_rng(7)
    prompts = prompts_for(m.config, rng)
    with LLM(model=m.path, device="cpu", dtype="float32", block_size=8,
             max_num_batched_tokens=64) as llm:
        got = llm.compute_logits(prompts)
    assert len(got) == len(prompts)
    for ids, lg in zip(prompts, got):
        assert lg.dtype == np.float32 and lg.shape == (len(ids), shape["vocab_size"])
        err = rel_error(lg, reference_logits(m.weights, m.config, ids))
        assert err <= TOL, f"prompt of {len(ids)} tokens: rel err {err:.2e}"


def test_sharded_checkpoint(tmp_path):
    m = make_model(tmp_path, shards=3, n_embd=48, n_head=3, vocab_size=777, n_positions=40)
    ids = list(range(0, 700, 23))
    with LLM(model=m.path, device="cpu") as llm:
        lg = llm.compute_logits([ids])[0]
    assert rel_error(lg, reference_logits(m.weights, m.config, ids)) <= TOL


@pytest.mark.parametrize("block_size", [8, 16, 32])
@pytest.mark.parametrize("budget", [5, 16, 1000])
def test_chunked_prefill_and_block_sizes(small_model, block_size, budget):
    """The same logits whatever the block size and the token budget (chunking)."""
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 512, size=100).tolist()
    ref = reference_logits(small_model.weights, small_model.config, ids)
    with LLM(model=small_model.path, device="cpu", block_size=block_size,
             max_num_batched_tokens=budget) as llm:
        lg = llm.compute_logits([ids])[0]
    assert rel_error(lg, ref) <= TOL


torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("cfg", [
    dict(n_embd=64, n_layer=2, n_head=4, n_positions=64, vocab_size=512),
    dict(n_embd=48, n_layer=2, n_head=3, n_positions=32, vocab_size=777),
], ids=["C64", "C48-odd"])
@pytest.mark.parametrize("save_dtype", [torch.float32, torch.float16, torch.bfloat16],
                         ids=["F32", "F16", "BF16"])
def test_logits_match_transformers(tmp_path, cfg, save_dtype):
    """The engine reads exactly what save_pretrained writes and matches its forward."""
    torch.manual_seed(0)
    conf = transformers.GPT2Config(n_embd=cfg["n_embd"], n_layer=cfg["n_layer"],
                                   n_head=cfg["n_head"], n_positions=cfg["n_positions"],
                                   vocab_size=cfg["vocab_size"], initializer_range=0.2)
    model = transformers.GPT2LMHeadModel(conf).eval()
    model = model.to(save_dtype)
    model.save_pretrained(tmp_path, safe_serialization=True)
    model = model.to(torch.float64)           # reference in float64 from the same stored values
    rng = np.random.default_rng(11)
    prompts = [rng.integers(0, cfg["vocab_size"], size=n).tolist()
               for n in (1, 5, cfg["n_positions"])]
    with LLM(model=str(tmp_path), device="cpu") as llm:
        got = llm.compute_logits(prompts)
    for ids, lg in zip(prompts, got):
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0].numpy()
        assert rel_error(lg, ref) <= TOL


def test_compute_logits_accepts_strings(tmp_path):
    """String prompts go through the model's tokenizer (a full 50257-token vocab)."""
    m = make_model(tmp_path, n_embd=32, n_head=2, n_layer=1, n_positions=32, vocab_size=50257)
    with LLM(model=m.path, device="cpu") as llm:
        ids = llm.get_tokenizer().encode("Hello world, it's me")
        a = llm.compute_logits(["Hello world, it's me"])[0]
        b = llm.compute_logits([ids])[0]
    np.testing.assert_array_equal(a, b)
    assert rel_error(b, reference_logits(m.weights, m.config, ids)) <= TOL


def test_engine_error_is_runtime_error():
    assert issubclass(gpt2_engine.EngineError, RuntimeError)


@pytest.mark.parametrize("prompt, match", [
    ([], "at least one token"),
    ([1, 512], "out of range"),
    ([-1], "out of range"),
    (list(range(129)), "128"),                 # longer than n_positions = 128
], ids=["empty", "id-too-large", "id-negative", "too-long"])
def test_compute_logits_bad_prompts(small_model, prompt, match):
    with LLM(model=small_model.path, device="cpu") as llm:
        with pytest.raises(ValueError, match=match):
            llm.compute_logits([prompt])
        assert llm.compute_logits([[1, 2]])[0].shape == (2, 512)     # still usable
        assert llm.kv_cache.num_free_blocks == llm.kv_cache.num_blocks
