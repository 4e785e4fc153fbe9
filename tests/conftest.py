"""Shared fixtures: random checkpoints (tools/make_random_model.py), the NumPy
reference, and markers for GPU tests."""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tools.make_random_model import make_random_model  # noqa: E402


def _cuda_available():
    try:
        import gpt2_engine
        return gpt2_engine.cuda_available()
    except Exception:
        return False


HAVE_CUDA = _cuda_available()
requires_cuda = pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA GPU and a CUDA build")


def model_config(**kw):
    cfg = dict(n_embd=64, n_layer=2, n_head=4, n_positions=128, vocab_size=512,
               layer_norm_epsilon=1e-5, activation_function="gelu_new")
    cfg.update(kw)
    return cfg


class RandomModel:
    """A random checkpoint on disk plus the exact weights written."""

    def __init__(self, path, config, weights):
        self.path = str(path)
        self.config = config
        self.weights = weights


def make_model(path, dtype="float32", key_style="hf", shards=1, seed=0, std=0.3, **cfg):
    config = model_config(**cfg)
    weights = make_random_model(
        str(path), n_embd=config["n_embd"], n_layer=config["n_layer"],
        n_head=config["n_head"], n_positions=config["n_positions"],
        vocab_size=config["vocab_size"], dtype=dtype, key_style=key_style, shards=shards,
        seed=seed, std=std, activation=config["activation_function"],
        layer_norm_epsilon=config["layer_norm_epsilon"])
    return RandomModel(path, config, weights)


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    """A small random fp32 model (C=64, L=2, H=4, P=128, V=512) shared by many tests.
    std=0.3 makes the logits far from flat, so greedy choices are well separated."""
    return make_model(tmp_path_factory.mktemp("small_model"))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
