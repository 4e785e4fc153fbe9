"""outputs.py — the result objects of LLM.generate / LLM.step, as vLLM shapes them:
RequestOutput (one per prompt) holding CompletionOutput (one per sequence, n of
them), Logprob entries for logprobs / prompt_logprobs, and RequestMetrics.
Plain dataclasses: built in Python from the tuples the C engine returns."""
from dataclasses import dataclass
from typing import Dict, List, Optional, Union

__all__ = ["Logprob", "CompletionOutput", "RequestMetrics", "RequestOutput"]


@dataclass
class Logprob:
    """One token's log probability (under the raw model distribution, before
    penalties and temperature), its rank (1 = most likely) and its text."""
    logprob: float
    rank: Optional[int] = None
    decoded_token: Optional[str] = None


# vLLM's types: per position, {token id: Logprob} holding the top-k ids plus the
# sampled (or prompt) token.
SampleLogprobs = List[Dict[int, Logprob]]
PromptLogprobs = List[Optional[Dict[int, Logprob]]]


def _short_text(s: Optional[str], limit: int = 60) -> str:
    if s is None:
        return "None"
    return repr(s) if len(s) <= limit else repr(s[:limit]) + f"...({len(s)} chars)"


def _short_list(x, limit: int = 12) -> str:
    if x is None:
        return "None"
    x = list(x)
    if len(x) <= limit:
        return repr(x)
    return repr(x[:limit])[:-1] + f", ...] ({len(x)} items)"


@dataclass
class CompletionOutput:
    """One generated sequence of a request.

    finish_reason: None while running, else "stop" (EOS, a stop token or a stop
    string), "length" (max_tokens or max_model_len) or "abort".
    stop_reason: the stop token id or stop string that ended it (None for EOS)."""
    index: int
    text: str
    token_ids: List[int]
    cumulative_logprob: Optional[float]
    logprobs: Optional[SampleLogprobs]
    finish_reason: Optional[str] = None
    stop_reason: Union[int, str, None] = None

    def finished(self) -> bool:
        return self.finish_reason is not None

    def __repr__(self) -> str:
        lp = "None" if self.logprobs is None else f"<{len(self.logprobs)} positions>"
        return (f"CompletionOutput(index={self.index}, text={_short_text(self.text)}, "
                f"token_ids={_short_list(self.token_ids)}, "
                f"cumulative_logprob={self.cumulative_logprob}, logprobs={lp}, "
                f"finish_reason={self.finish_reason}, stop_reason={self.stop_reason!r})")


@dataclass
class RequestMetrics:
    """Timestamps (seconds, time.monotonic clock) of one request's life."""
    arrival_time: float
    first_scheduled_time: Optional[float] = None
    first_token_time: Optional[float] = None
    finished_time: Optional[float] = None
    time_in_queue: Optional[float] = None
    num_cached_tokens: int = 0          # prompt tokens served by the prefix cache
    last_token_time: Optional[float] = None

    @classmethod
    def from_engine(cls, times: tuple, finished: bool) -> "RequestMetrics":
        """From the engine's (arrival_time, first_scheduled_time, first_token_time,
        finished_time, num_cached_tokens), the times not reached yet None; a
        finished request's last token came at its finish."""
        arrival, first_sched, first_token, finished_time, cached = times
        return cls(arrival, first_sched, first_token, finished_time,
                   None if first_sched is None else first_sched - arrival, cached,
                   finished_time if finished else None)


@dataclass
class RequestOutput:
    """The output of one request: its prompt, its n sequences, and whether it is done.

    prompt_logprobs: None, or [None, {id: Logprob}, ...] (position 0 has no
    logprob), when SamplingParams.prompt_logprobs was set."""
    request_id: str
    prompt: Optional[str]
    prompt_token_ids: List[int]
    prompt_logprobs: Optional[PromptLogprobs]
    outputs: List[CompletionOutput]
    finished: bool
    metrics: Optional[RequestMetrics] = None
    num_cached_tokens: int = 0

    def __repr__(self) -> str:
        plp = "None" if self.prompt_logprobs is None else f"<{len(self.prompt_logprobs)} positions>"
        return (f"RequestOutput(request_id={self.request_id!r}, prompt={_short_text(self.prompt)}, "
                f"prompt_token_ids={_short_list(self.prompt_token_ids)}, "
                f"prompt_logprobs={plp}, outputs={self.outputs!r}, finished={self.finished}, "
                f"metrics={self.metrics!r}, num_cached_tokens={self.num_cached_tokens})")
