"""One request, whatever dialect it came in: what each wire model converts itself into
(`to_spec()`, as vLLM's `to_sampling_params`) and `prepare` turns into `GenerationRequest`s.

A spec holds what the request gave, not what it will run with: a knob left as None is
decided by `prepare` (the server's setting, else the dialect's own default), so every default
and policy is resolved in that one place, the same way for every dialect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from endmark.invalid import InvalidRequest
from endmark.sampling import SamplingParams

if TYPE_CHECKING:  # kept light: the CLI imports specs before it needs llguidance
    from endmark.constraints import ConstraintSpec
    from endmark.tools import ToolRequest

# One llama.cpp prompt: text, token ids, or a mix of both.
Prompt = str | Sequence[str | int]
# A logit bias as a request writes it: a token id or a text, and a bias or `false` (ban).
BiasEntry = tuple[int | str, float | bool]

# The ranges every dialect's values must be in, whatever its wire model lets through: the
# sampler's own domain (each dialect's wire model may narrow it, as OpenAI's does).
SEED_RANGE = (-(2**63), 2**64 - 1)  # negative: a random seed
MAX_CHOICES = 128  # `n`, as OpenAI bounds it
FINITE_KNOBS = ("temperature", "top_p", "min_p", "repeat_penalty", "presence_penalty",
                "frequency_penalty")  # fmt: skip


def check_range(value: float, param: str, low: float, high: float) -> None:
    """A 400 naming `param` unless `low <= value <= high` (NaN is never in range)."""
    if not low <= value <= high:
        raise InvalidRequest(f"{param} must be between {low} and {high}, not {value}", param)


def check_finite(value: float, param: str) -> None:
    if not math.isfinite(value):
        raise InvalidRequest(f"{param} must be a finite number, not {value}", param)


@dataclass(frozen=True)
class SamplingSpec:
    """The sampling knobs a request set (None: not set), over its dialect's own defaults.

    A knob not set takes the server's default (`--temp`, `--seed`, ...) if one was given, else
    `dialect`'s: llama.cpp's on the native API, OpenAI's on `/v1`, Anthropic's, Ollama's."""

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    dialect: SamplingParams = field(default_factory=SamplingParams)
    logit_bias: tuple[BiasEntry, ...] = ()  # resolved to token ids by `prepare`
    n_probs: int = 0
    logprobs: bool = False
    post_sampling_probs: bool = False

    def __post_init__(self) -> None:
        """No value the sampler cannot take gets past here, from any dialect: the one check
        that makes a NaN, an infinity or a seed beyond 64 bits a 400 rather than a failure."""
        for name in FINITE_KNOBS:
            value = getattr(self, name)
            if value is not None:
                check_finite(value, name)
        if self.repeat_penalty is not None and self.repeat_penalty <= 0:
            raise InvalidRequest("repeat_penalty must be above 0", "repeat_penalty")
        if self.seed is not None:
            check_range(self.seed, "seed", *SEED_RANGE)
        if self.n_probs < 0:
            raise InvalidRequest("n_probs must not be negative", "n_probs")
        for _, bias in self.logit_bias:
            if not isinstance(bias, bool):
                check_finite(bias, "logit_bias")


@dataclass(frozen=True)
class ChatInput:
    """Messages for the chat template, and the tools the turn offers."""

    messages: Sequence[dict[str, Any]]
    add_generation_prompt: bool = True
    continue_final_message: bool | None = None  # None: a last assistant message is continued
    tools: ToolRequest | None = None


@dataclass(frozen=True)
class RequestSpec:
    """Everything a generation request asks, engine-neutral.

    `input` is a chat turn, or raw prompts (`/completion` and `/v1/completions` take several);
    each prompt gets `n` choices, choice i seeded with seed + i."""

    input: ChatInput | Sequence[Prompt]
    label: str
    sampling: SamplingSpec = field(default_factory=SamplingSpec)
    n: int = 1
    n_predict: int = -1  # -1: the server's `-n`; within `--n-predict-cap` either way
    stop: Sequence[str] = ()
    ignore_eos: bool = False
    time_limit_ms: int = 0
    constraint: ConstraintSpec | None = None
    reasoning_format: str | None = None  # chat only; None: the server's `--reasoning-format`
    reasoning_budget: int | None = None  # chat only; None: the server's `--reasoning-budget`
    cache_prompt: bool | None = None  # None: the server's `--cache-prompt`
    draft_max: int | None = None  # `speculative.n_max` (0: no drafts); None: the server's
    draft_min: int | None = None
    report_progress: bool = False
    timings_per_token: bool = False
    prompt_param: str = "prompt"  # the field that holds the prompt, named when it overflows
    lora: tuple[tuple[int, float], ...] | None = None  # (id, scale); None: the global scales
    n_keep: int = 0  # prompt tokens a context shift keeps (-1: all)
    n_cache_reuse: int | None = None  # None: the server's `--cache-reuse`

    def __post_init__(self) -> None:
        if isinstance(self.input, str):  # a text is a sequence too: one prompt per letter
            raise TypeError("input is a ChatInput or a list of prompts, not one text")
        check_range(self.n, "n", 1, MAX_CHOICES)
