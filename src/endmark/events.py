"""What a generation reports, in order: progress while its prompt is read, a token event per
sampled token, and one last `Done` (the one result every dialect renders) or `Failed`."""

from __future__ import annotations

from dataclasses import dataclass

from endmark.channels import ToolCall
from endmark.delta import Delta
from endmark.endings import Finish


@dataclass
class Timings:
    """What the prompt and the answer took, in tokens and milliseconds (llama-server's
    `timings`)."""

    prompt_n: int = 0
    prompt_ms: float = 0.0
    predicted_n: int = 0
    predicted_ms: float = 0.0
    cached_n: int = 0
    draft_n: int = 0
    draft_n_accepted: int = 0

    def as_dict(self) -> dict[str, float]:
        def rate(n: int, ms: float) -> float:
            return n / ms * 1000.0 if ms > 0 else 0.0

        def per_token(n: int, ms: float) -> float:
            return ms / n if n else 0.0

        drafts = {"draft_n": self.draft_n, "draft_n_accepted": self.draft_n_accepted}
        return {
            **(drafts if self.draft_n else {}),  # as llama-server: only where it speculated
            "cache_n": self.cached_n,
            "prompt_n": self.prompt_n,
            "prompt_ms": self.prompt_ms,
            "prompt_per_token_ms": per_token(self.prompt_n, self.prompt_ms),
            "prompt_per_second": rate(self.prompt_n, self.prompt_ms),
            "predicted_n": self.predicted_n,
            "predicted_ms": self.predicted_ms,
            "predicted_per_token_ms": per_token(self.predicted_n, self.predicted_ms),
            "predicted_per_second": rate(self.predicted_n, self.predicted_ms),
        }


@dataclass(frozen=True)
class TokenEvent:
    """A sampled token and the text it released (after stop-string hold-back): `text` is
    content; with channels, `reasoning` and finished tool `calls` come apart from it."""

    token: int
    text: str
    logprob: float | None = None
    top: tuple[tuple[int, float], ...] = ()
    timings: Timings | None = None
    reasoning: str = ""
    calls: tuple[ToolCall, ...] = ()

    @property
    def delta(self) -> Delta:
        """What this token added to the answer, channel by channel."""
        return Delta(self.text, self.reasoning, self.calls)


@dataclass(frozen=True)
class Progress:
    """How far the prompt's evaluation has come (llama-server's `prompt_progress`)."""

    total: int
    cache: int
    processed: int
    time_ms: float

    def as_dict(self) -> dict[str, float]:
        return {
            "total": self.total,
            "cache": self.cache,
            "processed": self.processed,
            "time_ms": self.time_ms,
        }


@dataclass(frozen=True)
class Done:
    """The last event of every generation. `finish.tail` is content released at the end;
    `reasoning_tail` and `tail_calls` are the other channels' share of it, and `calls` every
    tool call the generation made."""

    finish: Finish
    tokens: tuple[int, ...]
    n_prompt: int
    timings: Timings
    reasoning_tail: str = ""
    tail_calls: tuple[ToolCall, ...] = ()
    calls: tuple[ToolCall, ...] = ()

    @property
    def delta(self) -> Delta:
        """What the end released (the tail), channel by channel."""
        return Delta(self.finish.tail, self.reasoning_tail, self.tail_calls)

    @property
    def ended_by_calls(self) -> bool:
        """The turn ends with the dialect's tool-call reason (ending rule 7): it made calls,
        and the token limit did not cut it. The one place this is decided."""
        return bool(self.calls) and self.finish.stop_type != "limit"


@dataclass(frozen=True)
class Failed:
    """The generation could not run to an end (engine error, shutdown), or its constraint
    failed: then `param` names the request's field at fault (a 400, not a server error)."""

    message: str
    param: str | None = None


Event = TokenEvent | Progress | Done | Failed
