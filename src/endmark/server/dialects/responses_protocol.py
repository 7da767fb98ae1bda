"""OpenAI's Responses API request (`POST /v1/responses`).

The request is OpenAI's `/v1` fields (sampling, llama.cpp's extensions) with the Responses
names on top: `input` items instead of messages, flat function tools, `text.format` for a
JSON schema, `max_output_tokens`, `reasoning`, and `previous_response_id`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from endmark.constraints import ConstraintSpec
from endmark.server.dialects.fields import StrictModel, check_schema_size, pick_constraint
from endmark.server.dialects.openai_protocol import OpenAIFields, openai_error
from endmark.server.http.dialect import SSE, Dialect, FinishWords, PromptText, sse_bytes
from endmark.spec import ChatInput, RequestSpec
from endmark.tools import Tool, ToolRequest

LOGPROBS = "message.output_text.logprobs"  # the `include` entry that asks for logprobs
TEXT_PARTS = {"input_text", "output_text", "text", "refusal", "summary_text", "reasoning_text"}


class Part(StrictModel):
    """A content part of an input message; only text is read (images and files are refused)."""

    type: str
    text: str | None = None
    refusal: str | None = None

    def plain(self) -> str:
        if self.type not in TEXT_PARTS:
            raise ValueError(f"content parts of type {self.type!r} are not supported")
        return self.text if self.text is not None else self.refusal or ""


def _joined(content: str | list[Part] | None) -> str:
    if isinstance(content, list):
        return "\n\n".join(p.plain() for p in content)
    return content or ""


class Item(StrictModel):
    """One input item: a message (typed or not), a function call the model made, its output,
    or a reasoning item (which is not sent back to the model, as OpenAI drops it too)."""

    type: Literal["message", "function_call", "function_call_output", "reasoning"] = "message"
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[Part] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[Part] | None = None
    id: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> Item:
        needs = {
            "message": ("role",),
            "function_call": ("call_id", "name", "arguments"),
            "function_call_output": ("call_id", "output"),
        }.get(self.type, ())
        missing = [name for name in needs if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.type} item needs {', '.join(missing)}")
        return self


def template_messages(items: list[Item]) -> list[dict[str, Any]]:
    """Items as chat-template messages: a run of function calls joins the assistant message
    before it (or starts one), and each output is a `tool` message."""
    out: list[dict[str, Any]] = []
    for item in items:
        if item.type == "message":
            role = "system" if item.role == "developer" else item.role
            out.append({"role": role, "content": _joined(item.content)})
        elif item.type == "function_call":
            if not (out and out[-1]["role"] == "assistant"):
                out.append({"role": "assistant", "content": ""})
            function = {"name": item.name, "arguments": _arguments(item.arguments)}
            call = {"id": item.call_id, "type": "function", "function": function}
            out[-1].setdefault("tool_calls", []).append(call)
        elif item.type == "function_call_output":
            output = _joined(item.output)
            out.append({"role": "tool", "tool_call_id": item.call_id, "content": output})
    return out


def _arguments(text: str | None) -> Any:
    """Arguments as an object, for templates that write them with `tojson`."""
    try:
        return json.loads(text or "{}")
    except json.JSONDecodeError:
        return text


class FunctionTool(StrictModel):
    type: str
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = "_"
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("type")
    @classmethod
    def _function_only(cls, v: str) -> str:
        if v != "function":
            raise ValueError(f"only function tools are supported, not {v!r}")
        return v


class NamedTool(StrictModel):
    type: Literal["function"]
    name: str


class TextFormat(StrictModel):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None

    _size = field_validator("schema_")(check_schema_size)


class TextOptions(StrictModel):
    format: TextFormat | None = None
    verbosity: str | None = None


class ReasoningOptions(StrictModel):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: str | None = None


class ResponsesRequest(OpenAIFields):
    input: str | Annotated[list[Item], Field(min_length=1)]
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedTool | None = None
    parallel_tool_calls: bool = True
    text: TextOptions | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    reasoning: ReasoningOptions | None = None
    previous_response_id: str | None = None
    store: bool = True
    metadata: dict[str, str] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    include: list[str] | None = None

    @property
    def include_list(self) -> list[str]:
        return self.include or []

    @property
    def n_predict(self) -> int:
        return -1 if self.max_output_tokens is None else self.max_output_tokens

    def input_messages(self) -> list[dict[str, Any]]:
        if isinstance(self.input, str):
            return [{"role": "user", "content": self.input}]
        return template_messages(self.input)

    def to_spec(self, history: list[dict[str, Any]]) -> RequestSpec:
        """The turn after `history` (the stored conversation and this request's input)."""
        messages = list(history)
        if self.instructions:
            messages.insert(0, {"role": "system", "content": self.instructions})
        effort = self.reasoning.effort if self.reasoning is not None else None
        budget = 0 if effort in ("none", "minimal") else None
        top_n = self.top_logprobs or 0
        logprobs = top_n > 0 or LOGPROBS in self.include_list
        chat = ChatInput(messages, tools=self.tool_request())
        label = "POST /v1/responses"
        return self.spec_of(chat, label, self.n_predict, top_n, logprobs, n=1,
                            reasoning_budget=budget, prompt_param="input")  # fmt: skip

    def constraint(self) -> ConstraintSpec | None:
        spec = pick_constraint(self.grammar, self.json_schema, self.response_format)
        fmt = self.text.format if self.text else None
        if fmt is None or fmt.type == "text":
            return spec
        if spec is not None:
            raise ValueError(f"give only one constraint, not {spec.field} and text.format")
        if fmt.type == "json_schema" and fmt.schema_ is None:
            raise ValueError("text.format json_schema needs a schema")
        return ConstraintSpec(fmt.type, fmt.schema_, "text.format")

    def tool_request(self) -> ToolRequest | None:
        choice_in = self.tool_choice or "auto"
        if not self.tools:
            if choice_in not in ("auto", "none"):
                raise ValueError("tool_choice asks for a tool, but the request gives no tools")
            return None
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names):
            raise ValueError("two tools have the same name")
        choice = choice_in if isinstance(choice_in, str) else choice_in.name
        if isinstance(choice_in, NamedTool) and choice not in names:
            raise ValueError(f"tool_choice names {choice!r}, which is not among the tools")
        tools = tuple(
            Tool(t.name, t.description or "", t.parameters or {"type": "object"})
            for t in self.tools
        )
        return ToolRequest(tools, choice, self.parallel_tool_calls)

    @model_validator(mode="after")
    def _tools_fit(self) -> ResponsesRequest:
        request = self.tool_request()
        if request is not None and request.choice != "none" and self.constraint() is not None:
            raise ValueError("tools cannot be combined with text.format, grammar or json_schema")
        return self


# -- the dialect's facts for the plumbing: errors, streams cut short, OpenAPI, routing --


def responses_failure(model: str, message: str) -> bytes:
    error = {"type": "error", "code": "server_error", "message": message, "param": None}
    return sse_bytes(error, "error")


RESPONSES = Dialect(
    "responses", ("/v1/responses",),
    FinishWords(eos="completed", word="completed", limit="incomplete", calls="completed"),
    routes=("endmark.server.dialects.responses",),
    error_body=openai_error, failure=responses_failure,  # errors: as the rest of /v1's
    request_bodies={"/v1/responses": ResponsesRequest}, streams={"/v1/responses": SSE},
    routing_text=PromptText(heads=("instructions",), messages=("input",), texts=("input",)),
)  # fmt: skip
