"""llm.py — gpt2_engine.LLM, the offline-inference entry point (vLLM's `LLM`).

A thin Python shell over the C engine `_C.Engine` (csrc/python/llm.c): it
validates and resolves the constructor arguments, normalises prompts, assigns
request ids, drives engine.step() with a progress bar, and turns the tuples the
engine returns into RequestOutput / CompletionOutput dataclasses (outputs.py).
Everything that decides or computes (tokenizing, scheduling, sampling) is C.

generate() is host time during which the GPU idles, so its common case (prompts
of token ids) takes a fast path: one Engine.add_requests call converts and
checks every prompt in C, all or nothing. Anything else, and any error there,
goes the reference way (each prompt normalised here, one add_request each),
which raises the reference exception.
"""
import logging
import numbers
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Union

from . import _C
from .outputs import CompletionOutput, Logprob, RequestMetrics, RequestOutput

SamplingParams = _C.SamplingParams

logger = logging.getLogger("gpt2_engine")

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))
_DATA_DIR = os.path.join(_PKG_DIR, "data")
_DEFAULT_MODEL_DIR = os.path.join(_DATA_DIR, "default_model")

_DTYPES = {"float32": "float32", "fp32": "float32", "float": "float32",
           "float16": "float16", "fp16": "float16", "half": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}

PromptType = Union[str, List[int], Dict[str, object]]

# generate()'s steps report only finished requests: Engine.step runs up to this
# many in one call, returning at the first that reports one (the progress bar
# moves only then anyway)
_MAX_STEPS = 2**31 - 1


def _token_id_batch(prompts) -> Optional[tuple]:
    """(texts, token-id lists) when prompts is a list/tuple whose every entry is a
    list/tuple (of token ids, unchecked) or a dict holding one as "prompt_token_ids":
    the form Engine.add_requests checks element by element in C. None for any
    other form (str, NumPy, one prompt of ids), which the reference path resolves."""
    if type(prompts) is not list and type(prompts) is not tuple:
        return None
    texts, ids = [], []
    for p in prompts:
        tp = type(p)
        if tp is list or tp is tuple:
            texts.append(None)
            ids.append(p)
        elif tp is dict:
            tok = p.get("prompt_token_ids")
            if type(tok) is not list and type(tok) is not tuple:
                return None
            text = p.get("prompt")
            texts.append(text if isinstance(text, str) else None)
            ids.append(tok)
        else:
            return None
    return texts, ids


def _output_index(c) -> int:
    return c.index


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _all_plain_ints(seq) -> bool:
    """True when seq holds only exact ints (no bools): the common prompt form,
    checked at C speed (generate() with 256 x 128-token prompts spent ~30 ms
    in a per-element isinstance(x, numbers.Integral) check)."""
    return set(map(type, seq)) <= {int}


def _int_ids(seq) -> Optional[List[int]]:
    """seq (list/tuple) as a list of int, or None when an element is not an int."""
    if _all_plain_ints(seq):
        return list(seq)
    if all(_is_int(t) for t in seq):     # numpy integers and other Integral types
        return [int(t) for t in seq]
    return None


def _check_int(name, value, lo=None, hi=None, allowed=None):
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if allowed is not None and value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value}")
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise ValueError(f"{name} must be <= {hi}, got {value}")
    return value


def _has_tokenizer_files(d) -> bool:
    return all(os.path.isfile(os.path.join(d, f)) for f in ("vocab.json", "merges.txt"))


def _cuda_available() -> bool:
    try:
        from . import cuda_available
        return bool(cuda_available())
    except ImportError:
        return False


class _ProgressBar:
    """tqdm when it imports, else a one-line bar on stderr; shows prompt and
    output tokens/s."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled = total, 0, enabled
        self.t0 = time.monotonic()
        self.prompt_tokens = self.output_tokens = 0
        self._tqdm = None
        self._last_draw = 0.0
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
            self._tqdm = tqdm(total=total, desc="Processed prompts", dynamic_ncols=True)
        except Exception:
            self._tqdm = None

    def _rates(self):
        dt = max(time.monotonic() - self.t0, 1e-9)
        return self.prompt_tokens / dt, self.output_tokens / dt

    def update(self, finished: int, prompt_tokens: int, output_tokens: int):
        if not self.enabled:
            return
        self.done += finished
        self.prompt_tokens += prompt_tokens
        self.output_tokens += output_tokens
        inp, out = self._rates()
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(f"input: {inp:.2f} toks/s, output: {out:.2f} toks/s",
                                       refresh=False)
            self._tqdm.update(finished)
            return
        now = time.monotonic()
        if now - self._last_draw < 0.1 and self.done < self.total:
            return
        self._last_draw = now
        width = 30
        fill = width * self.done // max(self.total, 1)
        sys.stderr.write(f"\rProcessed prompts {self.done}/{self.total} "
                         f"[{'#' * fill}{'.' * (width - fill)}] "
                         f"input: {inp:.2f} toks/s, output: {out:.2f} toks/s")
        sys.stderr.flush()

    def close(self):
        if not self.enabled:
            return
        if self._tqdm is not None:
            self._tqdm.close()
        else:
            sys.stderr.write("\n")
            sys.stderr.flush()


class LLM:
    """An offline GPT-2 inference engine with vLLM's interface.

    LLM(model=None, tokenizer=None, dtype="auto", device="auto", block_size=16,
        max_num_seqs=256, max_num_batched_tokens=None, max_model_len=None,
        enable_prefix_caching=True, gpu_memory_utilization=0.9, num_kv_blocks=None,
        seed=0, attention_backend=None, tensor_parallel_size=1, enforce_eager=False,
        async_scheduling=None)

    model: a directory with config.json + *.safetensors (None: the bundled default).
    tokenizer: a directory with vocab.json + merges.txt (None: the model's, else the
    bundled GPT-2 vocabulary). dtype "auto": the checkpoint's dtype on CUDA, float32
    on the CPU. device "auto": CUDA when a GPU is usable, else the CPU.
    async_scheduling (vLLM's): generate() schedules and launches each step before
    the previous one's tokens reach the host, so host work overlaps the GPU; the
    outputs are the same. None: on for CUDA, off for the CPU (nothing to overlap).
    """

    def __init__(self, model: Optional[str] = None, tokenizer: Optional[str] = None,
                 dtype: str = "auto", device: str = "auto", block_size: int = 16,
                 max_num_seqs: int = 256, max_num_batched_tokens: Optional[int] = None,
                 max_model_len: Optional[int] = None, enable_prefix_caching: bool = True,
                 gpu_memory_utilization: float = 0.9, num_kv_blocks: Optional[int] = None,
                 seed: int = 0, attention_backend: Optional[str] = None,
                 tensor_parallel_size: int = 1, enforce_eager: bool = False,
                 async_scheduling: Optional[bool] = None):
        self._engine = None
        self._prompts: Dict[str, Optional[str]] = {}    # live request id -> prompt text
        self._next_id = 0                               # request ids: gen-0, gen-1, ...
        self._token_text: Dict[int, str] = {}

        model = self._resolve_model(model)
        tokenizer = self._resolve_tokenizer(tokenizer, model)
        device = self._resolve_device(device)
        dtype = self._resolve_dtype(dtype, device, model)
        block_size = _check_int("block_size", block_size, allowed={8, 16, 32})
        max_num_seqs = _check_int("max_num_seqs", max_num_seqs, lo=1)
        if max_model_len is None:
            max_model_len = 0
        else:
            max_model_len = _check_int("max_model_len", max_model_len, lo=1)
        if max_num_batched_tokens is None:
            max_num_batched_tokens = 8192 if device == "cuda" else 2048
        else:
            max_num_batched_tokens = _check_int("max_num_batched_tokens",
                                                max_num_batched_tokens, lo=1)
        if not isinstance(gpu_memory_utilization, numbers.Real) or \
                isinstance(gpu_memory_utilization, bool):
            raise TypeError("gpu_memory_utilization must be a float, got "
                            f"{type(gpu_memory_utilization).__name__}")
        if not 0.0 < float(gpu_memory_utilization) <= 1.0:
            raise ValueError("gpu_memory_utilization must be in (0, 1], got "
                             f"{gpu_memory_utilization}")
        num_kv_blocks = 0 if num_kv_blocks is None else \
            _check_int("num_kv_blocks", num_kv_blocks, lo=1)
        seed = _check_int("seed", seed, lo=0, hi=2**64 - 1)
        if attention_backend is not None and not isinstance(attention_backend, str):
            raise TypeError("attention_backend must be a str or None, got "
                            f"{type(attention_backend).__name__}")
        tensor_parallel_size = _check_int("tensor_parallel_size", tensor_parallel_size, lo=1)
        if tensor_parallel_size > 1:
            raise ValueError("tensor_parallel_size > 1 is not supported yet "
                             f"(got {tensor_parallel_size})")
        for name, flag in (("enable_prefix_caching", enable_prefix_caching),
                           ("enforce_eager", enforce_eager),
                           ("async_scheduling", False if async_scheduling is None
                            else async_scheduling)):
            if not isinstance(flag, (bool, numbers.Integral)):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")

        self._engine = _C.Engine(
            model, tokenizer, dtype=dtype, device=device, block_size=block_size,
            max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
            max_model_len=max_model_len, enable_prefix_caching=bool(enable_prefix_caching),
            gpu_memory_utilization=float(gpu_memory_utilization), num_kv_blocks=num_kv_blocks,
            seed=seed, attention_backend=attention_backend, enforce_eager=bool(enforce_eager),
            async_scheduling=-1 if async_scheduling is None else int(bool(async_scheduling)))
        self.model = model
        self.tokenizer_dir = tokenizer
        logger.info("gpt2_engine: %s on %s (%s), attention backend %s (%s), %d KV blocks, "
                    "fused batch-1 decode %s",
                    model, self._engine.device, self._engine.dtype,
                    self._engine.attention_backend, self._engine.attention_backend_reason,
                    self._engine.kv_cache.num_blocks, self._engine.fused_decode_reason)

    # ---- argument resolution ----

    @staticmethod
    def _resolve_model(model):
        if model is None:
            if not os.path.isfile(os.path.join(_DEFAULT_MODEL_DIR, "config.json")):
                raise FileNotFoundError(
                    "model=None needs the bundled default model, but none is bundled yet "
                    f"({_DEFAULT_MODEL_DIR} does not exist); pass model=<checkpoint directory>")
            return _DEFAULT_MODEL_DIR
        if not isinstance(model, (str, os.PathLike)):
            raise TypeError(f"model must be a path (str) or None, got {type(model).__name__}")
        return os.fspath(model)

    @staticmethod
    def _resolve_tokenizer(tokenizer, model):
        if tokenizer is None:
            return model if _has_tokenizer_files(model) else _DATA_DIR
        if not isinstance(tokenizer, (str, os.PathLike)):
            raise TypeError("tokenizer must be a directory path (str) or None, got "
                            f"{type(tokenizer).__name__}")
        return os.fspath(tokenizer)

    @staticmethod
    def _resolve_device(device):
        if not isinstance(device, str):
            raise TypeError(f"device must be a str, got {type(device).__name__}")
        if device == "auto":
            return "cuda" if _cuda_available() else "cpu"
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        return device

    @staticmethod
    def _resolve_dtype(dtype, device, model):
        if not isinstance(dtype, str):
            dtype = str(dtype).replace("torch.", "")     # torch.float16 -> "float16"
        if dtype == "auto":
            if device == "cpu":
                return "float32"
            return _DTYPES.get(_C.checkpoint_dtype(model), "float16")
        if dtype not in _DTYPES:
            raise ValueError("dtype must be 'auto', 'float32', 'float16' or 'bfloat16', "
                             f"got {dtype!r}")
        return _DTYPES[dtype]

    # ---- properties ----

    def _live(self):
        if self._engine is None:
            raise RuntimeError("this LLM is closed")
        return self._engine

    def get_tokenizer(self):
        return self._live().tokenizer

    @property
    def kv_cache(self):
        return self._live().kv_cache

    @property
    def attention_backend(self) -> str:
        return self._live().attention_backend

    @property
    def attention_backend_reason(self) -> str:
        """Why the attention backend was chosen (forced, environment, or auto-detection)."""
        return self._live().attention_backend_reason

    @property
    def fused_decode(self) -> bool:
        """Whether a step of one sequence decoding one token runs as one fused kernel
        (the CUDA backend on fp16/bf16 models, opt-in with GPT2_ENGINE_FUSED_DECODE=1: it
        is slower than the per-layer kernels on an H200). Attention in that kernel is its
        own split-KV loop over the same paged cache."""
        return self._live().fused_decode

    @property
    def fused_decode_reason(self) -> str:
        """'on: ...' or 'off: <why>' for fused_decode."""
        return self._live().fused_decode_reason

    @property
    def device(self) -> str:
        return self._live().device

    @property
    def async_scheduling(self) -> bool:
        """Whether generate() overlaps scheduling with the device (see LLM)."""
        return self._live().async_scheduling

    @property
    def dtype(self) -> str:
        return self._live().dtype

    @property
    def model_config(self) -> dict:
        return self._live().model_config

    @property
    def max_model_len(self) -> int:
        return self._live().max_model_len

    @property
    def stats(self) -> dict:
        return self._live().stats

    # ---- prompts and parameters ----

    def _to_request(self, prompt) -> tuple:
        """One prompt -> (prompt text or None, token ids)."""
        if isinstance(prompt, str):
            return prompt, list(self.get_tokenizer().encode(prompt))
        if isinstance(prompt, dict):
            if "prompt_token_ids" in prompt:
                ids = prompt["prompt_token_ids"]
                ids = _int_ids(ids) if isinstance(ids, (list, tuple)) else None
                if ids is None:
                    raise TypeError("prompt_token_ids must be a list of int")
                text = prompt.get("prompt")
                return (text if isinstance(text, str) else None), ids
            if "prompt" in prompt and isinstance(prompt["prompt"], str):
                return prompt["prompt"], list(self.get_tokenizer().encode(prompt["prompt"]))
            raise ValueError("a prompt dict needs 'prompt_token_ids' (list of int) or "
                             f"'prompt' (str), got keys {sorted(prompt)}")
        if isinstance(prompt, (list, tuple)):
            ids = _int_ids(prompt)
            if ids is not None:
                return None, ids
        try:                                   # numpy arrays of ids
            import numpy as np
            if isinstance(prompt, np.ndarray) and prompt.ndim == 1 and \
                    np.issubdtype(prompt.dtype, np.integer):
                return None, [int(t) for t in prompt.tolist()]
        except ImportError:
            pass
        raise TypeError("a prompt must be a str, a list of token ids, or a dict with "
                        f"'prompt_token_ids' / 'prompt', got {type(prompt).__name__}")

    def _normalize_prompts(self, prompts) -> List[tuple]:
        if isinstance(prompts, (str, dict)):
            return [self._to_request(prompts)]
        if isinstance(prompts, (list, tuple)):
            if len(prompts) > 0 and (_all_plain_ints(prompts) or
                                     all(_is_int(t) for t in prompts)):
                return [self._to_request(prompts)]          # one prompt of token ids
            return [self._to_request(p) for p in prompts]
        try:
            import numpy as np
            if isinstance(prompts, np.ndarray):
                if prompts.ndim == 1:
                    return [self._to_request(prompts)]
                return [self._to_request(row) for row in prompts]
        except ImportError:
            pass
        raise TypeError("prompts must be a str, a list of str, a list of token ids, a list "
                        f"of those, or prompt dicts, got {type(prompts).__name__}")

    @staticmethod
    def _normalize_params(sampling_params, n: int) -> list:
        if sampling_params is None:
            return [SamplingParams()] * n
        if isinstance(sampling_params, SamplingParams):
            return [sampling_params] * n
        if isinstance(sampling_params, (list, tuple)):
            if len(sampling_params) != n:
                raise ValueError("sampling_params must be one SamplingParams or a list with one "
                                 f"per prompt ({n}), got a list of {len(sampling_params)}")
            for sp in sampling_params:
                if not isinstance(sp, SamplingParams):
                    raise TypeError("sampling_params entries must be SamplingParams, got "
                                    f"{type(sp).__name__}")
            return list(sampling_params)
        raise TypeError("sampling_params must be a SamplingParams, a list of them or None, "
                        f"got {type(sampling_params).__name__}")

    def _new_request_id(self) -> str:
        rid = f"gen-{self._next_id}"
        self._next_id += 1
        return rid

    # ---- converting engine tuples ----

    def _decode_token(self, tid: int) -> str:
        s = self._token_text.get(tid)
        if s is None:
            try:
                s = self.get_tokenizer().decode([tid])
            except Exception:
                s = ""
            self._token_text[tid] = s
        return s

    def _logprob_dicts(self, lp, tokens) -> List[Dict[int, Logprob]]:
        """(lps, ranks, top_ids, top_lps) + chosen tokens -> vLLM's per-position dicts:
        the chosen token first, then the top-k ids (rank = position + 1)."""
        lps, ranks, top_ids, top_lps = lp
        out = []
        for i, tok in enumerate(tokens):
            d = {int(tok): Logprob(float(lps[i]), int(ranks[i]), self._decode_token(int(tok)))}
            if top_ids:
                for j, (tid, tlp) in enumerate(zip(top_ids[i], top_lps[i])):
                    tid = int(tid)
                    if tid < 0 or tid in d:
                        continue
                    d[tid] = Logprob(float(tlp), j + 1, self._decode_token(tid))
            out.append(d)
        return out

    def _make_output(self, t, prompt: Optional[str]) -> RequestOutput:
        """One tuple of Engine.step (csrc/python/llm_outputs.c) -> RequestOutput. Its
        lists are fresh (the caller's to keep) and its ints, floats and bools already
        of their type. Arguments are positional, in the dataclasses' field order: per
        generate() this runs for every prompt, and keywords cost twice the time."""
        rid, prompt_ids, prompt_lp, finished, times, seqs = t
        plp = None
        if prompt_lp is not None:
            plp = [None] + self._logprob_dicts(prompt_lp, prompt_ids[1:])
        outputs = [CompletionOutput(index, text, token_ids, cum,
                                    None if lp is None else self._logprob_dicts(lp, token_ids),
                                    finish_reason, stop_reason)
                   for index, text, token_ids, cum, lp, finish_reason, stop_reason in seqs]
        if len(outputs) > 1:
            outputs.sort(key=_output_index)
        m = RequestMetrics.from_engine(times, finished)
        return RequestOutput(rid, prompt, prompt_ids, plp, outputs, finished, m,
                             m.num_cached_tokens)

    # ---- step-level API ----

    def add_request(self, request_id: str, prompt: PromptType,
                    params: Optional["SamplingParams"] = None) -> None:
        """Queue one request; its outputs come from step()."""
        if not isinstance(request_id, str):
            raise TypeError(f"request_id must be a str, got {type(request_id).__name__}")
        if request_id in self._prompts:
            raise ValueError(f"request_id {request_id!r} is already in use")
        text, ids = self._to_request(prompt)
        params = self._normalize_params(params, 1)[0]
        self._live().add_request(request_id, ids, params)
        self._prompts[request_id] = text

    def step(self) -> List[RequestOutput]:
        """One engine step; the outputs (so far) of every request that progressed."""
        prompts = self._prompts
        outs = [self._make_output(t, prompts.get(t[0])) for t in self._live().step()]
        for o in outs:
            if o.finished:
                self._prompts.pop(o.request_id, None)
        return outs

    def abort_request(self, request_id: Union[str, Sequence[str]]) -> None:
        ids = [request_id] if isinstance(request_id, str) else list(request_id)
        engine = self._live()
        for rid in ids:
            engine.abort_request(rid)
            self._prompts.pop(rid, None)

    def has_unfinished_requests(self) -> bool:
        return bool(self._live().has_unfinished_requests())

    # ---- offline API ----

    def generate(self, prompts, sampling_params=None, use_tqdm: bool = True
                 ) -> List[RequestOutput]:
        """Generates for every prompt; returns RequestOutputs in input order.

        prompts: a str, a list of str, a list of token ids, a list of those, or
        dicts {"prompt_token_ids": [...]} / {"prompt": str}. sampling_params: one
        SamplingParams for all, or a list with one per prompt (None: defaults).
        Runs the engine until these requests finish; requests queued through
        add_request progress too, but their outputs are not returned here.
        KeyboardInterrupt (or any error) aborts this call's requests and re-raises;
        the engine stays usable."""
        engine = self._live()
        texts, ids = self._add_generate_requests(engine, prompts, sampling_params)
        n = len(ids)
        results: List[Optional[RequestOutput]] = [None] * n
        pending = dict(zip(ids, range(n)))          # request id -> input position
        bar = None
        try:
            bar = _ProgressBar(n, bool(use_tqdm))
            while pending:
                if not engine.has_unfinished_requests():
                    raise RuntimeError("the engine stopped with requests unfinished: "
                                       f"{sorted(pending)[:5]}")
                done, new_prompt, new_out = 0, 0, 0
                for t in engine.step(finished_only=True, max_steps=_MAX_STEPS):
                    i = pending.pop(t[0], None)
                    if i is None:             # queued through add_request: not returned here
                        self._prompts.pop(t[0], None)
                        continue
                    out = results[i] = self._make_output(t, texts[i])
                    done += 1
                    if bar.enabled:
                        new_prompt += len(out.prompt_token_ids)
                        new_out += sum(len(c.token_ids) for c in out.outputs)
                if done:
                    bar.update(done, new_prompt, new_out)
        except BaseException:
            for rid in pending:                 # KeyboardInterrupt, errors: free our requests
                try:
                    engine.abort_request(rid)
                except Exception:
                    pass
            raise
        finally:
            if bar is not None:
                bar.close()
        return results

    def _add_generate_requests(self, engine, prompts, sampling_params) -> tuple:
        """Queues generate()'s requests, all or none; returns (prompt texts, request ids).

        Fast path: token-id prompts and SamplingParams go to Engine.add_requests in
        one call. When it refuses them (TypeError / ValueError: NumPy ints, a bad id,
        a bad parameter; nothing is queued then, and no request id is used up), the
        reference path does the work again and raises the reference exception."""
        batch = _token_id_batch(prompts)
        if batch is not None:
            texts, toks = batch
            start = self._next_id
            ids = [f"gen-{i}" for i in range(start, start + len(toks))]
            try:
                engine.add_requests(ids, toks, SamplingParams() if sampling_params is None
                                    else sampling_params)
            except (TypeError, ValueError):
                pass
            else:
                self._next_id = start + len(ids)
                return texts, ids
        requests = self._normalize_prompts(prompts)
        params = self._normalize_params(sampling_params, len(requests))
        ids = [self._new_request_id() for _ in requests]
        added = []
        try:
            for rid, (_, tok), sp in zip(ids, requests, params):
                engine.add_request(rid, tok, sp)
                added.append(rid)
        except BaseException:
            for rid in added:                   # a bad request in the middle: none stays
                try:
                    engine.abort_request(rid)
                except Exception:
                    pass
            raise
        return [text for text, _ in requests], ids

    def compute_logits(self, prompts) -> list:
        """Logits (n, vocab_size) float32 of every position of each prompt."""
        engine = self._live()
        return [engine.compute_logits(ids) for _, ids in self._normalize_prompts(prompts)]

    # ---- lifetime ----

    def close(self) -> None:
        """Frees every byte the engine holds; the LLM is unusable afterwards."""
        engine = self._engine
        if engine is None:
            return
        engine.close()          # raises while KV-cache views are alive; then retry later
        self._engine = None
        self._prompts.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:       # the engine's own dealloc frees it anyway
            pass

    def __repr__(self) -> str:
        if self._engine is None:
            return "LLM(<closed>)"
        return (f"LLM(model={self.model!r}, device={self.device!r}, dtype={self.dtype!r}, "
                f"attention_backend={self.attention_backend!r})")
