"""Wire models of the OpenAI dialect (and of `/apply-template`, which takes chat messages)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from endmark.constraints import ConstraintSpec
from endmark.invalid import InvalidRequest
from endmark.server.dialects.fields import (
    MAX_STOP_CHARS,
    DraftFields,
    GrammarText,
    LoraFields,
    Probability,
    ResponseFormat,
    StopWords,
    StrictModel,
    TimeLimitMs,
    check_schema_size,
    pick_constraint,
    sampling_spec,
)
from endmark.server.http.dialect import SSE, Dialect, FinishWords, Problem, PromptText, sse_bytes
from endmark.spec import ChatInput, Prompt, RequestSpec
from endmark.tools import Tool, ToolRequest


class ContentPart(StrictModel):
    type: str
    text: str | None = None


class FunctionCall(StrictModel):
    name: str
    arguments: str = "{}"  # a JSON text, as OpenAI sends it


class ToolCallIn(StrictModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(StrictModel):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None

    @field_validator("content")
    @classmethod
    def _text_only(cls, v: str | list[ContentPart] | None) -> str | list[ContentPart] | None:
        if isinstance(v, list):
            kinds = {p.type for p in v} - {"text"}
            if kinds:
                raise ValueError(f"content parts of type {sorted(kinds)} are not supported")
        return v

    def as_template_input(self) -> dict[str, Any]:
        """The message as Hugging Face chat templates expect it: `{role, content}`, with an
        assistant's `tool_calls` (arguments as objects, for templates that write them with
        `tojson`) and a tool result's `tool_call_id`; text parts are joined by a blank line,
        as llama-server joins them."""
        if isinstance(self.content, list):
            text = "\n\n".join(p.text or "" for p in self.content)
        else:
            text = self.content or ""
        role = {"developer": "system", "function": "tool"}.get(self.role, self.role)
        out: dict[str, Any] = {"role": role, "content": text}
        if self.tool_calls:
            out["tool_calls"] = [
                {"id": c.id or f"call_{i}", "type": "function",
                 "function": {"name": c.function.name, "arguments": _arguments(c.function)}}
                for i, c in enumerate(self.tool_calls)
            ]  # fmt: skip
        if role == "tool":
            out["tool_call_id"] = self.tool_call_id or ""
            if self.name:
                out["name"] = self.name
        return out


def _arguments(call: FunctionCall) -> Any:
    try:
        return json.loads(call.arguments)
    except json.JSONDecodeError:
        return call.arguments


class StreamOptions(StrictModel):
    include_usage: bool = False


class OpenAIFields(DraftFields, LoraFields):
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
    cache_prompt: bool | None = None  # llama.cpp's: reuse a slot's cached prefix
    n_cache_reuse: Annotated[int, Field(ge=0)] | None = None  # llama.cpp's --cache-reuse
    n_keep: Annotated[int, Field(ge=-1)] = 0  # llama.cpp's: what a context shift keeps
    post_sampling_probs: bool = False
    verbose: bool = False  # llama-server: add `__verbose` (the prompt, the raw result)

    check_schema_size = field_validator("json_schema")(check_schema_size)

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

    def spec_of(
        self,
        input: ChatInput | list[Prompt],
        label: str,
        n_predict: int,
        top_n: int,
        logprobs: bool,
        n: int | None = None,
        **chat: Any,
    ) -> RequestSpec:
        """The spec of either endpoint: what they share, the prompt and the limits apart."""
        bias = tuple(self.bias_entries())
        sampling = sampling_spec(
            self, logit_bias=bias, n_probs=max(top_n, self.n_probs), logprobs=logprobs
        )
        return RequestSpec(
            input,
            label,
            sampling,
            n=self.n if n is None else n,
            n_predict=n_predict,
            stop=self.stop,
            ignore_eos=self.ignore_eos,
            time_limit_ms=self.t_max_predict_ms,
            constraint=self.constraint(),
            cache_prompt=self.cache_prompt,
            n_cache_reuse=self.n_cache_reuse,
            n_keep=self.n_keep,
            draft_max=self.speculative_n_max,
            draft_min=self.speculative_n_min,
            report_progress=self.return_progress and self.stream,
            timings_per_token=self.timings_per_token,
            lora=self.lora_scales(),
            **chat,
        )

    @field_validator("logit_bias")
    @classmethod
    def _token_id_keys(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for key in v or {}:
            if not key.lstrip("-").isdigit():
                raise ValueError(f"keys must be token ids, got {key!r}")
        return v

    def bias_entries(self) -> list[tuple[int | str, float | bool]]:
        return [(int(key), bias) for key, bias in (self.logit_bias or {}).items()]


class FunctionDef(StrictModel):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    strict: bool | None = None


class ToolDef(StrictModel):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(StrictModel):
    name: str


class NamedToolChoice(StrictModel):
    type: Literal["function"]
    function: NamedFunction


class ToolFields(StrictModel):
    """The tools a chat turn offers (and the deprecated `functions`), for a completion and
    for `/apply-template` alike."""

    tools: list[ToolDef] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    functions: list[FunctionDef] | None = None  # deprecated by OpenAI; mapped onto tools
    function_call: Literal["auto", "none"] | NamedFunction | None = None

    @model_validator(mode="after")
    def _valid_tool_choice(self) -> ToolFields:
        self.tool_request()
        return self

    def tool_request(self) -> ToolRequest | None:
        """The tools offered, and how they may be used; the deprecated `functions` and
        `function_call` mean the same with one call at most."""
        defs = [t.function for t in self.tools or []] or list(self.functions or [])
        choice_in: Any = self.tool_choice if self.tools else self.function_call
        parallel = self.parallel_tool_calls if self.tools else False
        if not defs:
            if self.tool_choice not in (None, "none", "auto") or self.function_call is not None:
                raise ValueError("tool_choice names a tool, but the request gives no tools")
            return None
        names = [d.name for d in defs]
        if len(set(names)) != len(names):
            raise ValueError("two tools have the same name")
        if choice_in is None:
            choice = "auto"
        elif isinstance(choice_in, str):
            choice = choice_in
        else:
            choice = choice_in.function.name if self.tools else choice_in.name
            if choice not in names:
                raise ValueError(f"tool_choice names {choice!r}, which is not among the tools")
        tools = tuple(Tool(d.name, d.description, d.parameters) for d in defs)
        return ToolRequest(tools, choice, parallel)


class ChatCompletionRequest(OpenAIFields, ToolFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    reasoning_format: Literal["none", "deepseek", "auto"] | None = None
    reasoning_budget: Annotated[int, Field(ge=-1)] | None = None
    reasoning_control: bool = False  # `/v1/chat/completions/control` may end its thinking
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

    def to_spec(self) -> RequestSpec:
        chat = ChatInput(
            [m.as_template_input() for m in self.messages],
            self.add_generation_prompt,
            self.continue_final_message,
            self.tool_request(),
        )
        top_n = (self.top_logprobs or 0) if self.logprobs else 0
        return self.spec_of(
            chat,
            "POST /v1/chat/completions",
            self.n_predict,
            top_n,
            self.logprobs,
            reasoning_format=self.reasoning_format,
            reasoning_budget=self.reasoning_budget,
            prompt_param="messages",
        )

    @model_validator(mode="after")
    def _tools_fit(self) -> ChatCompletionRequest:
        request = self.tool_request()
        if request is not None and request.choice != "none" and self.constraint() is not None:
            raise ValueError(
                "tools cannot be combined with grammar, json_schema or response_format"
            )
        return self


class CompletionsRequest(OpenAIFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: Annotated[int, Field(ge=0)] | None = 16
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    echo: bool = False
    suffix: str | None = None

    @property
    def n_predict(self) -> int:
        return -1 if self.max_tokens is None else self.max_tokens

    @field_validator("prompt")
    @classmethod
    def _some_prompt(cls, v: Any) -> Any:
        if isinstance(v, list) and (not v or any(isinstance(x, list) and not x for x in v)):
            raise ValueError("the prompt is empty")
        return v

    def prompts(self) -> list[str | list[int]]:
        """OpenAI's prompt forms as a list of prompts: text, or token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [p]  # type: ignore[list-item]
        return list(p)  # type: ignore[arg-type]

    def to_spec(self) -> RequestSpec:
        if self.echo or self.suffix:
            param = "echo" if self.echo else "suffix"
            raise InvalidRequest("echo and suffix are not supported", param)
        top_n = self.logprobs or 0
        prompts: list[Prompt] = list(self.prompts())
        logprobs = self.logprobs is not None
        return self.spec_of(prompts, "POST /v1/completions", self.n_predict, top_n, logprobs)


class ApplyTemplateRequest(ToolFields):
    """llama-server's `/apply-template`: the prompt a chat completion with this body gets."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    add_generation_prompt: bool = True
    continue_final_message: bool | None = None

    def to_chat(self) -> ChatInput:
        messages = [m.as_template_input() for m in self.messages]
        shape = (self.add_generation_prompt, self.continue_final_message)
        return ChatInput(messages, *shape, self.tool_request())


# -- the dialect's facts for the plumbing: errors, streams cut short, OpenAPI, routing --


def openai_error(problem: Problem) -> dict[str, Any]:
    """OpenAI's shape: the status's type, the detail in `code` (`context_length_exceeded`);
    llama-server's extra numbers (`n_prompt_tokens`, `n_ctx`) ride along."""
    body = {"message": problem.message, "type": problem.status_type, "param": problem.param,
            "code": problem.code}  # fmt: skip
    return {"error": {**body, **(problem.details or {})}}


def openai_failure(model: str, message: str) -> bytes:
    return sse_bytes({"error": {"message": message, "type": "server_error"}})


OPENAI = Dialect(
    "openai", ("/v1",), FinishWords(eos="stop", word="stop", limit="length", calls="tool_calls"),
    routes=tuple(f"endmark.server.dialects.{m}"
                 for m in ("openai_completions", "openai_chat", "embeddings")),
    error_body=openai_error, failure=openai_failure,
    request_bodies={
        **dict.fromkeys(("/v1/chat/completions", "/chat/completions",
                         "/v1/chat/completions/input_tokens", "/chat/completions/input_tokens"),
                        ChatCompletionRequest),
        "/v1/completions": CompletionsRequest,
    },
    streams=dict.fromkeys(("/v1/chat/completions", "/chat/completions", "/v1/completions"), SSE),
    routing_text=PromptText(messages=("messages",), texts=("prompt", "input")),
)  # fmt: skip
