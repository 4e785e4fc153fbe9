"""gpt2_engine — a vLLM-style inference engine for GPT-2-family models.

    from gpt2_engine import LLM, SamplingParams
    llm = LLM(model="path/to/gpt2")
    for out in llm.generate(["Today is a"], SamplingParams(temperature=0.7, max_tokens=32)):
        print(out.outputs[0].text)

The work happens in the C extension gpt2_engine._C (tokenizer, scheduler, block
manager, sampler, CPU and CUDA backends); this package holds the Python-facing
classes and result objects.
"""
from . import _C
from ._C import EngineError, KVCache, SamplingParams, Tokenizer
from .llm import LLM
from .outputs import CompletionOutput, Logprob, RequestMetrics, RequestOutput

__version__ = "0.1.0"

__all__ = [
    "LLM", "SamplingParams", "Tokenizer", "KVCache", "EngineError", "RequestOutput",
    "CompletionOutput", "Logprob", "RequestMetrics", "cuda_available", "built_with_cuda",
]

built_with_cuda = bool(_C.built_with_cuda)


def cuda_available() -> bool:
    """True when this build has CUDA and at least one GPU is visible."""
    return _C.cuda_device_count() > 0
