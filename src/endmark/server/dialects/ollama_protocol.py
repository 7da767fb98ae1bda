"""Ollama's request bodies (`/api/chat`, `/api/generate`, `/api/embed`, `/api/show`), with
Ollama's names and defaults; options Ollama has and endmark does not use are ignored, as
Ollama itself ignores those a model does not use."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from endmark.constraints import ConstraintSpec
from endmark.invalid import InvalidRequest
from endmark.server.dialects.fields import StrictModel, sampling_spec
from endmark.server.dialects.openai_protocol import ToolDef
from endmark.spec import ChatInput, Prompt, RequestSpec
from endmark.tools import Tool, ToolRequest


class Options(BaseModel):
    """`options`: Ollama's sampling defaults, which differ from llama.cpp's."""

    model_config = ConfigDict(extra="ignore")

    num_predict: int = -1
    num_ctx: int | None = None  # endmark's context is fixed at start; accepted
    temperature: Annotated[float, Field(ge=0.0, le=100.0)] = 0.8
    top_k: Annotated[int, Field(ge=0)] = 40
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] = 0.9
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    repeat_penalty: Annotated[float, Field(gt=0.0, le=100.0)] = 1.1
    repeat_last_n: Annotated[int, Field(ge=-1)] = 64
    presence_penalty: Annotated[float, Field(ge=-100.0, le=100.0)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-100.0, le=100.0)] = 0.0
    seed: int | None = None
    stop: list[str] | None = None


class CallFunction(StrictModel):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class CallIn(StrictModel):
    function: CallFunction


class Message(StrictModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[CallIn] | None = None
    tool_name: str | None = None

    def as_template_input(self) -> dict[str, Any]:
        """The message as Hugging Face chat templates expect it (calls with object arguments)."""
        if self.images:
            raise ValueError("images are not supported: this model reads text only")
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [
                {"id": f"call_{i}", "type": "function",
                 "function": {"name": c.function.name, "arguments": c.function.arguments}}
                for i, c in enumerate(self.tool_calls)
            ]  # fmt: skip
        if self.tool_name:
            out["name"] = self.tool_name
        return out


class Generating(StrictModel):
    """What `/api/chat` and `/api/generate` share."""

    model: str = ""
    stream: bool = True
    format: Literal["json", ""] | dict[str, Any] | None = None
    options: Options = Field(default_factory=Options)
    think: bool | Literal["low", "medium", "high"] | None = None
    keep_alive: str | int | float | None = None  # one model stays loaded; accepted

    def constraint(self) -> ConstraintSpec | None:
        if self.format == "json":
            return ConstraintSpec("json_object", None, "format")
        if isinstance(self.format, dict):
            return ConstraintSpec("json_schema", self.format, "format")
        return None

    def spec_of(self, input: ChatInput | list[Prompt], label: str) -> RequestSpec:
        """The spec of either endpoint; `options` holds the sampling, with Ollama's defaults."""
        o = self.options
        return RequestSpec(
            input,
            label,
            sampling_spec(o),
            n_predict=o.num_predict if o.num_predict >= 0 else -1,
            stop=o.stop or [],
            constraint=self.constraint(),
            reasoning_budget=self.reasoning_budget,
        )

    @property
    def reasoning_budget(self) -> int | None:
        """`think: false` skips thinking; otherwise the server's budget holds."""
        return 0 if self.think is False else None


class ChatRequest(Generating):
    messages: list[Message] = Field(default_factory=list)
    tools: list[ToolDef] | None = None

    def tool_request(self) -> ToolRequest | None:
        if not self.tools:
            return None
        defs = [t.function for t in self.tools]
        return ToolRequest(tuple(Tool(d.name, d.description, d.parameters) for d in defs))

    def to_spec(self) -> RequestSpec:
        try:
            messages = [m.as_template_input() for m in self.messages]
        except ValueError as exc:
            raise InvalidRequest(str(exc), "messages") from None
        tools = self.tool_request()
        if tools is not None and self.constraint() is not None:
            raise InvalidRequest("tools cannot be combined with format", "format")
        return self.spec_of(ChatInput(messages, tools=tools), "POST /api/chat")


class GenerateRequest(Generating):
    prompt: str = ""
    system: str | None = None
    raw: bool = False  # the prompt as is, without the chat template
    images: list[str] | None = None

    def to_spec(self) -> RequestSpec:
        if self.raw:
            return self.spec_of([self.prompt], "POST /api/generate")
        messages = [{"role": "user", "content": self.prompt}]
        if self.system:
            messages.insert(0, {"role": "system", "content": self.system})
        return self.spec_of(ChatInput(messages), "POST /api/generate")


class EmbedRequest(StrictModel):
    model: str = ""
    input: str | list[str] = ""
    truncate: bool = True
    keep_alive: str | int | float | None = None


class LegacyEmbeddingsRequest(StrictModel):
    model: str = ""
    prompt: str = ""


class ShowRequest(StrictModel):
    model: str = ""
    verbose: bool = False
