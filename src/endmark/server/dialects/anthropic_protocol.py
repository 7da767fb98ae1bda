"""Anthropic's Messages API request (`/v1/messages`, `/v1/messages/count_tokens`)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field

from endmark.invalid import CONTEXT_LENGTH_EXCEEDED, InvalidRequest
from endmark.sampling import SamplingParams
from endmark.server.dialects.fields import LoraFields, StrictModel, sampling_spec
from endmark.server.http.dialect import SSE, Dialect, FinishWords, Problem, PromptText, sse_bytes
from endmark.spec import ChatInput, RequestSpec
from endmark.tools import Tool, ToolRequest

# llama-server's words for an image sent to a model without a vision projector
NO_IMAGES = (
    "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj"
)

# Anthropic's defaults for the knobs it has not (the ones it has are the model's defaults).
ANTHROPIC_SAMPLING = SamplingParams(min_p=0.0, repeat_penalty=1.0)


class Block(StrictModel):
    """A content block: text, tool_use, tool_result or thinking (images are refused)."""

    type: Literal["text", "tool_use", "tool_result", "thinking", "redacted_thinking", "image"]
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    content: str | list[Block] | None = None
    is_error: bool | None = None
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None
    source: dict[str, Any] | None = None

    def plain(self) -> str:
        if isinstance(self.content, list):
            return "\n\n".join(b.text or "" for b in self.content)
        return self.content or self.text or ""


class Message(StrictModel):
    role: Literal["user", "assistant"]
    content: str | list[Block]

    def as_template_input(self) -> list[dict[str, Any]]:
        """One message, or several: each tool result is a `tool` message of its own."""
        if isinstance(self.content, str):
            return [{"role": self.role, "content": self.content}]
        nested = [c for b in self.content if isinstance(b.content, list) for c in b.content]
        if any(b.type == "image" for b in [*self.content, *nested]):  # in a tool result too
            raise ValueError(NO_IMAGES)
        out: list[dict[str, Any]] = [
            {"role": "tool", "tool_call_id": b.tool_use_id, "content": b.plain()}
            for b in self.content
            if b.type == "tool_result"
        ]
        text = "\n\n".join(b.text or "" for b in self.content if b.type == "text")
        calls = [
            {"id": b.id, "type": "function",
             "function": {"name": b.name, "arguments": b.input or {}}}
            for b in self.content if b.type == "tool_use"
        ]  # fmt: skip
        if text or calls or not out:
            message: dict[str, Any] = {"role": self.role, "content": text}
            if calls:
                message["tool_calls"] = calls
            out.append(message)
        return out


class ToolIn(StrictModel):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class ToolChoice(StrictModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class Thinking(StrictModel):
    type: Literal["enabled", "disabled"]
    budget_tokens: Annotated[int, Field(ge=0)] | None = None


class MessagesRequest(LoraFields):
    model: str = ""
    max_tokens: Annotated[int, Field(ge=1)]
    messages: list[Message]  # empty: accepted, as llama-server accepts it
    system: str | list[Block] | None = None
    stop_sequences: Annotated[list[str], Field(max_length=16)] = Field(default_factory=list)
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    top_k: Annotated[int, Field(ge=0)] = 0
    seed: int | None = None  # endmark's extension, as on the other dialects
    stream: bool = False
    tools: list[ToolIn] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    metadata: dict[str, Any] | None = None

    def template_messages(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.system:
            system = self.system if isinstance(self.system, str) else "\n\n".join(
                b.text or "" for b in self.system)  # fmt: skip
            out.append({"role": "system", "content": system})
        for m in self.messages:
            out += m.as_template_input()
        return out

    def tool_request(self) -> ToolRequest | None:
        choice = self.tool_choice or ToolChoice(type="auto")
        if not self.tools:
            if choice.type in ("any", "tool"):
                raise ValueError("tool_choice asks for a tool, but the request gives no tools")
            return None
        names = [t.name for t in self.tools]
        picked = {"auto": "auto", "any": "required", "none": "none"}.get(choice.type)
        if choice.type == "tool":
            if choice.name not in names:
                raise ValueError(f"tool_choice names {choice.name!r}, which is not a tool")
            picked = choice.name
        tools = tuple(Tool(t.name, t.description, t.input_schema) for t in self.tools)
        return ToolRequest(tools, picked or "auto", not choice.disable_parallel_tool_use)

    def to_spec(self) -> RequestSpec:
        try:
            chat = ChatInput(self.template_messages(), tools=self.tool_request())
        except ValueError as exc:
            raise InvalidRequest(str(exc), "messages") from None
        budget = None  # the server's
        if self.thinking is not None and self.thinking.type == "enabled":
            budget = -1 if self.thinking.budget_tokens is None else self.thinking.budget_tokens
        elif self.thinking is not None:
            budget = 0
        return RequestSpec(
            chat,
            "POST /v1/messages",
            sampling_spec(self, ANTHROPIC_SAMPLING),
            n_predict=self.max_tokens,
            stop=self.stop_sequences,
            reasoning_budget=budget,
            prompt_param="messages",
            lora=self.lora_scales(),
        )


class CountTokensRequest(StrictModel):
    model: str = ""
    messages: list[Message]  # empty: accepted, as llama-server accepts it
    system: str | list[Block] | None = None
    tools: list[ToolIn] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None

    def as_messages_request(self) -> MessagesRequest:
        fields = json.loads(self.model_dump_json(exclude_none=True))
        return MessagesRequest.model_validate({**fields, "max_tokens": 1})


# -- the dialect's facts for the plumbing: errors, streams cut short, OpenAPI, routing --


ANTHROPIC_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def anthropic_error(problem: Problem) -> dict[str, Any]:
    fallback = "api_error" if problem.status >= 500 else "invalid_request_error"
    kind = ANTHROPIC_TYPES.get(problem.status, fallback)
    message = problem.message
    if problem.code == CONTEXT_LENGTH_EXCEEDED and problem.details:  # Anthropic's words
        d = problem.details
        message = f"prompt is too long: {d['n_prompt_tokens']} tokens > {d['n_ctx']} maximum"
    return {"type": "error", "error": {"type": kind, "message": message}}


def anthropic_failure(model: str, message: str) -> bytes:
    return sse_bytes({"type": "error", "error": {"type": "api_error", "message": message}}, "error")


ANTHROPIC = Dialect(
    "anthropic", ("/v1/messages",),
    FinishWords(eos="end_turn", word="stop_sequence", limit="max_tokens", calls="tool_use"),
    routes=("endmark.server.dialects.anthropic",),
    error_body=anthropic_error, failure=anthropic_failure, streams={"/v1/messages": SSE},
    request_bodies={"/v1/messages": MessagesRequest,
                    "/v1/messages/count_tokens": CountTokensRequest},
    routing_text=PromptText(heads=("system",), messages=("messages",)),
)  # fmt: skip
