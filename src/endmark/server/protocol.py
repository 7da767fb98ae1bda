"""Wire models of the llama.cpp-native dialect: data and validation only.

Models are strict: a number given as a string or a bool given as a number is a 400, not a guess.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from endmark.constraints import ConstraintSpec
from endmark.sampling import SamplingParams
from endmark.settings import SAMPLING_DEFAULTS


class StrictModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


# Limits on what one request may ask for; beyond them, a 400 that names the field.
MAX_STOPS = 16
MAX_STOP_CHARS = 500
MAX_CONSTRAINT_CHARS = 64 * 1024

StopWords = Annotated[
    list[Annotated[str, Field(max_length=MAX_STOP_CHARS)]], Field(max_length=MAX_STOPS)
]
GrammarText = Annotated[str, Field(max_length=MAX_CONSTRAINT_CHARS)]
TimeLimitMs = Annotated[int, Field(ge=0)]


def _schema_size(v: dict[str, Any] | None) -> dict[str, Any] | None:
    if v is not None and len(json.dumps(v)) > MAX_CONSTRAINT_CHARS:
        raise ValueError(f"the schema is larger than {MAX_CONSTRAINT_CHARS} characters")
    return v


KNOBS = tuple(k for k in SAMPLING_DEFAULTS if k != "seed")  # seed has its own rule


def sampling_from(
    fields: BaseModel,
    logit_bias: dict[int, float],
    seed: int | None,
    n_probs: int,
    logprobs: bool = False,
    defaults: Mapping[str, Any] | None = None,
) -> SamplingParams:
    """SamplingParams from either dialect's request: they share the knobs' names. A knob the
    request leaves out takes the server-wide default (`--temp`, `--seed`, ...) if one was set,
    else the dialect's own."""
    defaults = defaults or {}
    given = fields.model_fields_set

    def pick(name: str) -> Any:
        return defaults[name] if name not in given and name in defaults else getattr(fields, name)

    if seed is None or "seed" not in given:
        seed = defaults.get("seed", -1 if seed is None else seed)
    return SamplingParams(
        **{name: pick(name) for name in KNOBS},
        seed=seed,
        logit_bias=logit_bias,
        n_probs=n_probs,
        logprobs=logprobs,
        post_sampling_probs=bool(getattr(fields, "post_sampling_probs", False)),
    )


def pick_constraint(
    grammar: str | None = None,
    json_schema: dict[str, Any] | None = None,
    response_format: ResponseFormat | None = None,
) -> ConstraintSpec | None:
    """At most one constraint per request; asking for two is an error, not a silent pick."""
    specs = []
    if grammar is not None:
        specs.append(ConstraintSpec("grammar", grammar, "grammar"))
    if json_schema is not None:
        specs.append(ConstraintSpec("json_schema", json_schema, "json_schema"))
    if response_format is not None and response_format.type != "text":
        specs.append(response_format.spec())
    if len(specs) > 1:
        fields = ", ".join(s.field for s in specs)
        raise ValueError(f"give only one constraint, not {fields}")
    return specs[0] if specs else None


class JsonSchemaFormat(StrictModel):
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    _size = field_validator("schema_")(_schema_size)
    description: str | None = None


class ResponseFormat(StrictModel):
    type: Literal["text", "json_object", "json_schema"]
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    json_schema: JsonSchemaFormat | None = None

    _size = field_validator("schema_")(_schema_size)

    def spec(self) -> ConstraintSpec:
        if self.type == "json_schema":
            if self.json_schema is None or self.json_schema.schema_ is None:
                raise ValueError("response_format json_schema needs json_schema.schema")
            return ConstraintSpec("json_schema", self.json_schema.schema_, "response_format")
        return ConstraintSpec("json_object", self.schema_, "response_format")


Probability = Annotated[float, Field(ge=0.0, le=1.0)]
# `[id or text, bias or false]`; JSON has no tuples, so a two-item list checked below
LogitBiasEntry = Annotated[list[int | str | float | bool], Field(min_length=2, max_length=2)]


class SamplingFields(StrictModel):
    """Sampling knobs shared by every generation endpoint (llama.cpp names and defaults)."""

    temperature: Annotated[float, Field(ge=0.0, le=100.0)] = 0.8
    top_k: Annotated[int, Field(ge=0)] = 40
    top_p: Probability = 0.95
    min_p: Probability = 0.05
    repeat_penalty: Annotated[float, Field(gt=0.0, le=100.0)] = 1.0
    repeat_last_n: Annotated[int, Field(ge=-1)] = 64
    presence_penalty: Annotated[float, Field(ge=-100.0, le=100.0)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-100.0, le=100.0)] = 0.0
    seed: int = -1
    n_probs: Annotated[int, Field(ge=0, le=100)] = 0
    ignore_eos: bool = False
    post_sampling_probs: bool = False

    def sampling_params(
        self, logit_bias: dict[int, float], defaults: Mapping[str, Any] | None = None
    ) -> SamplingParams:
        return sampling_from(self, logit_bias, self.seed, self.n_probs, defaults=defaults)


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


class CompletionRequest(SamplingFields):
    prompt: str | dict[str, Any] | list[Any]
    n_predict: Annotated[int, Field(ge=-1)] = -1
    max_tokens: Annotated[int, Field(ge=-1)] | None = None  # llama-server takes either
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

    _schema_size = field_validator("json_schema")(_schema_size)

    def constraint(self) -> ConstraintSpec | None:
        return pick_constraint(grammar=self.grammar, json_schema=self.json_schema)

    @model_validator(mode="after")
    def _one_constraint(self) -> CompletionRequest:
        self.constraint()
        self.prompts()
        return self

    def prompts(self) -> list[Prompt]:
        return split_prompts(self.prompt)

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


# -- OpenAI dialect -------------------------------------------------------------------------


class ContentPart(StrictModel):
    type: str
    text: str | None = None


class ChatMessage(StrictModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _text_only(cls, v: str | list[ContentPart] | None) -> str | list[ContentPart] | None:
        if isinstance(v, list):
            kinds = {p.type for p in v} - {"text"}
            if kinds:
                raise ValueError(f"content parts of type {sorted(kinds)} are not supported")
        return v

    def as_template_input(self) -> dict[str, str]:
        """The plain `{role, content}` that chat templates expect; text parts are joined by a
        blank line, as llama-server joins them."""
        if isinstance(self.content, list):
            text = "\n\n".join(p.text or "" for p in self.content)
        else:
            text = self.content or ""
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": text}


class StreamOptions(StrictModel):
    include_usage: bool = False


class OpenAIFields(StrictModel):
    """Fields both `/v1` generation endpoints take: OpenAI's, plus llama.cpp's as extensions."""

    model: str | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0
    top_p: Probability = 1.0
    stop: Annotated[str, Field(max_length=MAX_STOP_CHARS)] | StopWords | None = Field(
        default=None, validate_default=True
    )
    seed: int | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    n: Annotated[int, Field(ge=1, le=16)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # llama.cpp extensions
    top_k: Annotated[int, Field(ge=0)] = 40
    min_p: Probability = 0.05
    repeat_penalty: Annotated[float, Field(gt=0.0, le=100.0)] = 1.0
    repeat_last_n: Annotated[int, Field(ge=-1)] = 64
    n_probs: Annotated[int, Field(ge=0, le=100)] = 0
    ignore_eos: bool = False
    t_max_predict_ms: TimeLimitMs = 0
    grammar: GrammarText | None = None
    json_schema: dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    timings_per_token: bool = False
    return_progress: bool = False
    post_sampling_probs: bool = False
    verbose: bool = False  # llama-server: add `__verbose` (the prompt, the raw result)

    _schema_size = field_validator("json_schema")(_schema_size)

    def constraint(self) -> ConstraintSpec | None:
        return pick_constraint(self.grammar, self.json_schema, self.response_format)

    @model_validator(mode="after")
    def _one_constraint(self) -> OpenAIFields:
        self.constraint()
        return self

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> list[str]:
        if v is None:
            return []
        return [v] if isinstance(v, str) else v

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def sampling_params(
        self,
        logit_bias: dict[int, float],
        top_n: int,
        logprobs: bool,
        defaults: Mapping[str, Any] | None = None,
    ) -> SamplingParams:
        n_probs = max(top_n, self.n_probs)
        return sampling_from(self, logit_bias, self.seed, n_probs, logprobs, defaults)

    @field_validator("logit_bias")
    @classmethod
    def _token_id_keys(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for key in v or {}:
            if not key.lstrip("-").isdigit():
                raise ValueError(f"keys must be token ids, got {key!r}")
        return v

    def bias_entries(self) -> list[tuple[int | str, float | bool]]:
        return [(int(key), bias) for key, bias in (self.logit_bias or {}).items()]


class ChatCompletionRequest(OpenAIFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool | None = None

    @property
    def n_predict(self) -> int:
        limit = self.max_completion_tokens or self.max_tokens
        return -1 if limit is None else limit


class CompletionsRequest(OpenAIFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: Annotated[int, Field(ge=0)] | None = 16
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    echo: bool = False
    suffix: str | None = None

    @property
    def n_predict(self) -> int:
        return -1 if self.max_tokens is None else self.max_tokens

    def prompts(self) -> list[str | list[int]]:
        """OpenAI's prompt forms as a list of prompts: text, or token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [p]  # type: ignore[list-item]
        return list(p)  # type: ignore[arg-type]


class ApplyTemplateRequest(StrictModel):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
