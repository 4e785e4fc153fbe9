"""Attention backend selection (DESIGN.md): forced > GPT2_ENGINE_ATTENTION_BACKEND >
auto. Unknown names list the valid ones; a backend that cannot serve the model
is an error, never a silent fallback; the choice is readable and logged."""
import pytest

import gpt2_engine
from gpt2_engine import LLM


def test_auto_on_cpu_is_cpu(small_model):
    with LLM(model=small_model.path, device="cpu") as llm:
        assert llm.attention_backend == "CPU"


def test_forced_cpu_and_case_insensitive(small_model):
    with LLM(model=small_model.path, device="cpu", attention_backend="cpu") as llm:
        assert llm.attention_backend == "CPU"


def test_unknown_name_lists_valid(small_model):
    with pytest.raises(ValueError, match=r"unknown attention backend 'BOGUS'.*CPU, PAGED, FLASH"):
        LLM(model=small_model.path, device="cpu", attention_backend="BOGUS")


def test_env_variable(small_model, monkeypatch):
    monkeypatch.setenv("GPT2_ENGINE_ATTENTION_BACKEND", "NOPE")
    with pytest.raises(ValueError, match="GPT2_ENGINE_ATTENTION_BACKEND"):
        LLM(model=small_model.path, device="cpu")
    monkeypatch.setenv("GPT2_ENGINE_ATTENTION_BACKEND", "CPU")
    with LLM(model=small_model.path, device="cpu") as llm:
        assert llm.attention_backend == "CPU"


def test_forced_beats_env(small_model, monkeypatch):
    monkeypatch.setenv("GPT2_ENGINE_ATTENTION_BACKEND", "NOPE")
    with LLM(model=small_model.path, device="cpu", attention_backend="CPU") as llm:
        assert llm.attention_backend == "CPU"


@pytest.mark.parametrize("name", ["PAGED", "FLASH"])
def test_gpu_backend_on_cpu_is_an_error(small_model, name):
    with pytest.raises(ValueError, match=name):
        LLM(model=small_model.path, device="cpu", attention_backend=name)


def test_engine_usable_after_selection_error(small_model):
    with pytest.raises(ValueError):
        LLM(model=small_model.path, device="cpu", attention_backend="BOGUS")
    with LLM(model=small_model.path, device="cpu") as llm:
        assert llm.compute_logits([[1, 2, 3]])[0].shape == (3, 512)


@pytest.mark.skipif(gpt2_engine.cuda_available(), reason="checks the no-GPU error")
def test_cuda_device_without_gpu_is_clear(small_model):
    with pytest.raises(ValueError, match="cuda"):
        LLM(model=small_model.path, device="cuda")


def test_choice_is_logged_and_explained(small_model, caplog):
    import logging
    with caplog.at_level(logging.INFO, logger="gpt2_engine"):
        with LLM(model=small_model.path, device="cpu") as llm:
            assert "auto" in llm.attention_backend_reason
    assert any("attention backend CPU" in r.getMessage() for r in caplog.records)
