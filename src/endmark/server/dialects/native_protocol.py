"""Wire models of the llama.cpp-native dialect: `/completion`, `/tokenize`, `/detokenize`."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from endmark.constraints import ConstraintSpec
from endmark.server.dialects.fields import (
    MAX_STOP_CHARS,
    DraftFields,
    GrammarText,
    LogitBiasEntry,
    LoraFields,
    SamplingFields,
    StopWords,
    StrictModel,
    TimeLimitMs,
    check_schema_size,
    pick_constraint,
    sampling_spec,
)
from endmark.server.dialects.openai_protocol import ApplyTemplateRequest
from endmark.server.http.dialect import LLAMA_CPP, SSE, PromptText
from endmark.spec import RequestSpec

# One llama.cpp prompt: text, token ids, or a mix of both.
Prompt = str | list[str | int]
MULTIMODAL_KEY = "multimodal_data"


def _one_prompt(p: Any) -> Prompt:
    """llama-server's JSON prompt object `{"prompt_string": ..., "multimodal_data": [...]}`,
    or a plain prompt."""
    if isinstance(p, dict):
        if p.get(MULTIMODAL_KEY):
            raise ValueError("multimodal_data: this server serves a text-only model")
        text = p.get("prompt_string")
        if not isinstance(text, str):
            raise ValueError("a JSON prompt object needs a prompt_string")
        return text
    if isinstance(p, str):
        return p
    if isinstance(p, list) and all(
        isinstance(x, (str, int)) and not isinstance(x, bool) for x in p
    ):
        return p
    raise ValueError("each prompt is a text, a list of token ids, or a JSON prompt object")


def split_prompts(prompt: Any) -> list[Prompt]:
    """llama-server's rules: a text, a list of ids, or a list mixing texts and ids is one
    prompt; any other list (of texts, of id lists, of prompt objects) is several."""
    if isinstance(prompt, (str, dict)):
        return [_one_prompt(prompt)]
    if isinstance(prompt, list) and prompt:
        ints = [isinstance(x, int) and not isinstance(x, bool) for x in prompt]
        strs = [isinstance(x, str) for x in prompt]
        if all(ints) or (any(ints) and all(i or s for i, s in zip(ints, strs, strict=True))):
            return [_one_prompt(prompt)]
        return [_one_prompt(p) for p in prompt]
    raise ValueError("the prompt is empty")


class CompletionRequest(SamplingFields, DraftFields, LoraFields):
    prompt: str | dict[str, Any] | list[Any]
    n_predict: Annotated[int, Field(ge=-1)] = -1
    max_tokens: Annotated[int, Field(ge=-1)] | None = None  # llama-server takes either
    n_keep: Annotated[int, Field(ge=-1)] = 0  # what a context shift keeps (--context-shift)
    n_cache_reuse: Annotated[int, Field(ge=0)] | None = None  # None: --cache-reuse
    timings_per_token: bool = False
    return_progress: bool = False
    response_fields: list[str] = Field(default_factory=list)
    stop: StopWords | Annotated[str, Field(max_length=MAX_STOP_CHARS)] = Field(default_factory=list)
    logit_bias: list[LogitBiasEntry] | dict[str, float | bool] = Field(default_factory=list)
    cache_prompt: bool = True
    return_tokens: bool = False
    stream: bool = False
    grammar: GrammarText | None = None
    json_schema: dict[str, Any] | None = None
    t_max_predict_ms: TimeLimitMs = 0

    check_schema_size = field_validator("json_schema")(check_schema_size)

    def constraint(self) -> ConstraintSpec | None:
        return pick_constraint(grammar=self.grammar, json_schema=self.json_schema)

    @model_validator(mode="after")
    def _one_constraint(self) -> CompletionRequest:
        self.constraint()
        self.prompts()
        return self

    def prompts(self) -> list[Prompt]:
        return split_prompts(self.prompt)

    def to_spec(self) -> RequestSpec:
        sampling = sampling_spec(self, logit_bias=tuple(self.bias_entries()), n_probs=self.n_probs)
        return RequestSpec(
            self.prompts(),
            "POST /completion",
            sampling,
            n_predict=self.limit,
            stop=self.stop,
            ignore_eos=self.ignore_eos,
            time_limit_ms=self.t_max_predict_ms,
            constraint=self.constraint(),
            cache_prompt=self.cache_prompt if "cache_prompt" in self.model_fields_set else None,
            draft_max=self.speculative_n_max,
            draft_min=self.speculative_n_min,
            report_progress=self.return_progress and self.stream,
            timings_per_token=self.timings_per_token,
            lora=self.lora_scales(),
            n_keep=self.n_keep,
            n_cache_reuse=self.n_cache_reuse,
        )

    @property
    def limit(self) -> int:
        if "n_predict" not in self.model_fields_set and self.max_tokens is not None:
            return self.max_tokens
        return self.n_predict

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: list[str] | str) -> list[str]:
        return [v] if isinstance(v, str) else v

    @field_validator("logit_bias")
    @classmethod
    def _bias_pairs(
        cls, v: list[list[int | str | float | bool]] | dict[str, float | bool]
    ) -> list[list[int | str | float | bool]] | dict[str, float | bool]:
        for entry in v if isinstance(v, list) else ():
            key, bias = entry
            if isinstance(key, bool) or not isinstance(key, (int, str)):
                raise ValueError(f"a bias entry starts with a token id or a text, got {key!r}")
            if isinstance(bias, str):
                raise ValueError(f"a bias is a number or false, got {bias!r}")
        return v

    def bias_entries(self) -> list[tuple[int | str, float | bool]]:
        """llama.cpp accepts `[[id, bias], ...]`, `[["text", bias]]` and `{"id": bias}`."""
        if isinstance(self.logit_bias, dict):
            out: list[tuple[int | str, float | bool]] = []
            for key, bias in self.logit_bias.items():
                out.append((int(key) if key.lstrip("-").isdigit() else key, bias))
            return out
        return [(e[0], e[1]) for e in self.logit_bias]  # type: ignore[misc]


class TokenizeRequest(StrictModel):
    content: str
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False


class DetokenizeRequest(StrictModel):
    tokens: list[int]


# -- the dialect's facts for the plumbing: errors, streams cut short, OpenAPI, routing --


NATIVE = replace(
    LLAMA_CPP,  # llama.cpp's shapes, which answer any path another dialect does not claim
    routes=tuple(
        f"endmark.server.dialects.{m}" for m in ("native", "infill", "rerank", "lora", "slot_files")
    ),
    request_bodies={
        "/completion": CompletionRequest,
        "/completions": CompletionRequest,
        "/apply-template": ApplyTemplateRequest,
        "/tokenize": TokenizeRequest,
        "/detokenize": DetokenizeRequest,
    },
    streams=dict.fromkeys(("/completion", "/completions", "/infill"), SSE),
    routing_text=PromptText(messages=("messages",), texts=("prompt", "content")),
)
