"""Bad checkpoints must raise a clear Python exception naming the problem (and
the file / tensor), never crash, and leave the engine usable: every test loads a
good model right after the failure.

Written against gpt2_engine.LLM(model=dir, device="cpu").
"""
import json
import os
import shutil
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tools.make_random_model import make_random_model, write_safetensors  # noqa: E402

from gpt2_engine import LLM  # noqa: E402

SMALL = dict(n_embd=48, n_layer=2, n_head=4, n_positions=16, vocab_size=64)


# ------------------------------------------------------------------ loader

@pytest.fixture(scope="session")
def loader():
    def load(path):
        LLM(model=str(path), device="cpu").close()
    return load


@pytest.fixture(scope="session")
def good_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    make_random_model(str(d), **SMALL)
    return d


@pytest.fixture
def expect(loader, good_dir):
    """expect(dir, exc, match): loading dir raises exc matching `match`; then a
    good model still loads."""
    def check(path, exc, match):
        with pytest.raises(exc, match=match):
            loader(path)
        loader(good_dir)
    return check


# ------------------------------------------------------------------ helpers

def model(tmp_path, **kw):
    d = tmp_path / "m"
    make_random_model(str(d), **{**SMALL, **kw})
    return d


def read_st(path):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_st(path, header, data):
    hb = json.dumps(header).encode()
    path.write_bytes(len(hb).to_bytes(8, "little") + hb + data)


def edit_header(path, fn):
    header, data = read_st(path)
    fn(header)
    write_st(path, header, data)


def edit_config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    for k, v in changes.items():
        if v is ...:
            cfg.pop(k)
        else:
            cfg[k] = v
    (d / "config.json").write_text(json.dumps(cfg))


# ------------------------------------------------------------------ good loads

@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("key_style", ["hf", "original"])
@pytest.mark.parametrize("shards", [1, 3])
def test_good_checkpoints_load(loader, tmp_path, dtype, key_style, shards):
    loader(model(tmp_path, dtype=dtype, key_style=key_style, shards=shards))


def test_tied_lm_head_present_loads(loader, tmp_path):
    loader(model(tmp_path, lm_head=True))


# ------------------------------------------------------------------ missing files

def test_missing_dir(expect, tmp_path):
    expect(tmp_path / "nope", FileNotFoundError, "does not exist")


def test_missing_config(expect, tmp_path):
    d = model(tmp_path)
    (d / "config.json").unlink()
    expect(d, FileNotFoundError, "config.json")


def test_missing_safetensors(expect, tmp_path):
    d = model(tmp_path)
    (d / "model.safetensors").unlink()
    expect(d, FileNotFoundError, "no model.safetensors")


def test_missing_shard(expect, tmp_path):
    d = model(tmp_path, shards=2)
    (d / "model-00002-of-00002.safetensors").unlink()
    expect(d, FileNotFoundError, "model-00002-of-00002.safetensors")


# ------------------------------------------------------------------ corrupted safetensors

def test_file_shorter_than_8_bytes(expect, tmp_path):
    d = model(tmp_path)
    (d / "model.safetensors").write_bytes(b"\x10\x00\x00")
    expect(d, ValueError, r"model\.safetensors.*shorter than the 8-byte header")


def test_header_length_past_end(expect, tmp_path):
    d = model(tmp_path)
    f = d / "model.safetensors"
    raw = f.read_bytes()
    f.write_bytes((len(raw) * 2).to_bytes(8, "little") + raw[8:])
    expect(d, ValueError, r"model\.safetensors.*header length \d+ runs past the end")


def test_truncated_file(expect, tmp_path):
    d = model(tmp_path)
    f = d / "model.safetensors"
    raw = f.read_bytes()
    f.write_bytes(raw[:-100])
    expect(d, ValueError, r"model\.safetensors.*past the end of the data section")


def test_invalid_json_header(expect, tmp_path):
    d = model(tmp_path)
    f = d / "model.safetensors"
    raw = bytearray(f.read_bytes())
    colon = raw.index(b'"__metadata__":') + len(b'"__metadata__"')
    raw[colon] = ord(";")
    f.write_bytes(bytes(raw))
    expect(d, ValueError, r"model\.safetensors.*invalid JSON at byte \d+")


def test_header_not_an_object(expect, tmp_path):
    d = model(tmp_path)
    write_st(d / "model.safetensors", [1, 2], b"")
    expect(d, ValueError, "header is a JSON array")


def test_offsets_past_end(expect, tmp_path):
    d = model(tmp_path)
    name = "transformer.wpe.weight"
    edit_header(d / "model.safetensors",
                lambda h: h[name].update(data_offsets=[h[name]["data_offsets"][0], 10**12]))
    expect(d, ValueError, rf"'{name}'.*past the end")


def test_begin_greater_than_end(expect, tmp_path):
    d = model(tmp_path)
    name = "transformer.ln_f.bias"
    edit_header(d / "model.safetensors",
                lambda h: h[name].update(data_offsets=h[name]["data_offsets"][::-1]))
    expect(d, ValueError, rf"'{name}'.*begin \d+ > end \d+")


def test_overlapping_ranges(expect, tmp_path):
    d = model(tmp_path)
    a, b = "transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias"
    edit_header(d / "model.safetensors",
                lambda h: h[b].update(data_offsets=list(h[a]["data_offsets"])))
    expect(d, ValueError, "overlapping data ranges")


def test_shape_dtype_size_mismatch(expect, tmp_path):
    d = model(tmp_path)
    name = "transformer.h.1.ln_2.bias"
    edit_header(d / "model.safetensors", lambda h: h[name].update(shape=[SMALL["n_embd"] + 1]))
    expect(d, ValueError, rf"'{name}'.*does not match shape")


def test_unknown_dtype(expect, tmp_path):
    d = model(tmp_path)
    name = "transformer.wte.weight"
    edit_header(d / "model.safetensors", lambda h: h[name].update(dtype="F31"))
    expect(d, ValueError, rf"'{name}'.*unknown dtype \"F31\"")


def test_unsupported_dtype_for_weight(expect, tmp_path):
    d = model(tmp_path)
    name = "transformer.h.0.ln_1.weight"   # 48 F32 = 192 bytes = 24 I64
    edit_header(d / "model.safetensors", lambda h: h[name].update(dtype="I64", shape=[24]))
    expect(d, ValueError, rf"'{name}'.*dtype I64; only F32, F16 and BF16")


def test_duplicate_tensor_key_is_rejected(expect, tmp_path):
    d = model(tmp_path)
    f = d / "model.safetensors"
    header, data = read_st(f)
    name = "transformer.ln_f.bias"
    entry = json.dumps(header[name])
    hb = json.dumps(header)[:-1] + f', "{name}": {entry}}}'
    f.write_bytes(len(hb).to_bytes(8, "little") + hb.encode() + data)
    expect(d, ValueError, "appears twice")


def test_missing_tensor(expect, tmp_path):
    d = model(tmp_path)
    name = "transformer.h.1.mlp.c_fc.weight"
    edit_header(d / "model.safetensors", lambda h: h.pop(name))
    expect(d, ValueError, rf"missing tensor '{name}'")


def test_wrong_shape_tensor(expect, tmp_path):
    d = model(tmp_path)
    name = "transformer.h.0.attn.c_attn.weight"   # (C, 3C) stored as (3C, C): same bytes
    edit_header(d / "model.safetensors", lambda h: h[name].update(shape=h[name]["shape"][::-1]))
    expect(d, ValueError, rf"'{name}' in model\.safetensors has shape \[144, 48\], expected \[48, 144\]")


def test_not_a_gpt2_checkpoint(expect, tmp_path):
    d = model(tmp_path)
    write_safetensors(str(d / "model.safetensors"),
                      {"model.embed_tokens.weight": ("F32", np.zeros((4, 4), np.float32))})
    expect(d, ValueError, "missing tensor 'transformer.wte.weight'")


def test_lm_head_wrong_shape(expect, tmp_path):
    d = model(tmp_path, lm_head=True)
    edit_header(d / "model.safetensors",
                lambda h: h["lm_head.weight"].update(shape=[SMALL["vocab_size"] * 2, SMALL["n_embd"] // 2]))
    expect(d, ValueError, r"'lm_head.weight' has shape \[128, 24\], expected \[64, 48\]")


# ------------------------------------------------------------------ sharded index

def test_index_maps_to_wrong_shard(expect, tmp_path):
    d = model(tmp_path, shards=2)
    idx = json.loads((d / "model.safetensors.index.json").read_text())
    idx["weight_map"]["transformer.wte.weight"] = "model-00002-of-00002.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps(idx))
    expect(d, ValueError, r"maps tensor 'transformer.wte.weight' to 'model-00002-of-00002")


def test_index_without_weight_map(expect, tmp_path):
    d = model(tmp_path, shards=2)
    (d / "model.safetensors.index.json").write_text('{"metadata": {}}')
    expect(d, ValueError, "weight_map")


def test_index_path_traversal_rejected(expect, tmp_path):
    d = model(tmp_path, shards=2)
    idx = json.loads((d / "model.safetensors.index.json").read_text())
    idx["weight_map"]["transformer.wte.weight"] = "../model-00001-of-00002.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps(idx))
    expect(d, ValueError, "not a file name")


# ------------------------------------------------------------------ config

def test_config_contradicts_tensors(expect, tmp_path):
    d = model(tmp_path)
    edit_config(d, n_embd=64)
    expect(d, ValueError, r"'transformer.wte.weight' in model\.safetensors has shape \[64, 48\], "
                          r"expected \[64, 64\]")


def test_config_fewer_layers_than_file(expect, tmp_path):
    d = model(tmp_path)
    edit_config(d, n_layer=1)
    expect(d, ValueError, r"transformer.h.1.ln_1.weight.*n_layer=1")


def test_config_more_layers_than_file(expect, tmp_path):
    d = model(tmp_path)
    edit_config(d, n_layer=3)
    expect(d, ValueError, r"missing tensor 'transformer.h.2.ln_1.weight'")


def test_n_embd_not_divisible_by_n_head(expect, tmp_path):
    d = model(tmp_path)
    edit_config(d, n_head=5)
    expect(d, ValueError, r"n_embd \(48\) is not divisible by n_head \(5\)")


@pytest.mark.parametrize("key", ["n_embd", "n_layer", "n_head", "vocab_size"])
def test_missing_config_key(expect, tmp_path, key):
    d = model(tmp_path)
    edit_config(d, **{key: ...})
    expect(d, ValueError, rf"config\.json: missing key \"{key}\"")


@pytest.mark.parametrize("value", ["12", 1.5, -3, 0, None, True])
def test_invalid_config_value(expect, tmp_path, value):
    d = model(tmp_path)
    edit_config(d, n_layer=value)
    expect(d, ValueError, r"config\.json: .*n_layer")


def test_config_invalid_json(expect, tmp_path):
    d = model(tmp_path)
    (d / "config.json").write_text('{"n_embd": 48,, }')
    expect(d, ValueError, r"config\.json: invalid JSON at byte 14")


def test_config_bad_epsilon(expect, tmp_path):
    d = model(tmp_path)
    edit_config(d, layer_norm_epsilon="tiny")
    expect(d, ValueError, "layer_norm_epsilon")


@pytest.mark.parametrize("act", ["swish", "quick_gelu", 3])
def test_unsupported_activation(expect, tmp_path, act):
    d = model(tmp_path)
    edit_config(d, activation_function=act)
    expect(d, ValueError, "activation_function")


@pytest.mark.parametrize("act", ["gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu", "relu"])
def test_supported_activations(loader, tmp_path, act):
    loader(model(tmp_path, activation=act))


def test_n_inner_not_4x(expect, tmp_path):
    d = model(tmp_path)
    edit_config(d, n_inner=100)
    expect(d, ValueError, r"n_inner \(100\) != 4\*n_embd")


def test_n_inner_4x_is_fine(loader, tmp_path):
    d = model(tmp_path)
    edit_config(d, n_inner=4 * SMALL["n_embd"])
    loader(d)


def test_other_model_type(expect, tmp_path):
    d = model(tmp_path)
    edit_config(d, model_type="llama")
    expect(d, ValueError, "model_type \"llama\" is not supported")


# ------------------------------------------------------------------ robustness

def test_random_header_corruption_never_crashes(loader, good_dir, tmp_path):
    """Byte flips in the header: an error or a successful load, never a crash."""
    src = (good_dir / "model.safetensors").read_bytes()
    hlen = int.from_bytes(src[:8], "little")
    d = tmp_path / "fuzz"
    d.mkdir()
    shutil.copy(good_dir / "config.json", d / "config.json")
    rng = np.random.default_rng(0)
    for _ in range(150):
        raw = bytearray(src)
        for pos in rng.integers(0, 8 + hlen, size=int(rng.integers(1, 4))):
            raw[pos] = int(rng.integers(0, 256))
        (d / "model.safetensors").write_bytes(bytes(raw))
        try:
            loader(d)
        except (ValueError, FileNotFoundError, OSError):
            pass
    loader(good_dir)
