"""Ollama's request bodies (`/api/chat`, `/api/generate`, `/api/embed`, `/api/show`), with
Ollama's names and defaults; options Ollama has and endmark does not use are ignored, as
Ollama itself ignores those a model does not use."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from endmark import __version__
from endmark.constraints import ConstraintSpec
from endmark.invalid import CONTEXT_LENGTH_EXCEEDED, InvalidRequest
from endmark.server.dialects.fields import StrictModel, sampling_spec
from endmark.server.dialects.openai_protocol import ToolDef
from endmark.server.http.dialect import (
    NDJSON,
    Dialect,
    FinishWords,
    Problem,
    PromptText,
    ServedModel,
)
from endmark.spec import ChatInput, Prompt, RequestSpec
from endmark.tools import Tool, ToolRequest


class Options(BaseModel):
    """`options`: Ollama's sampling defaults, which differ from llama.cpp's."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

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
    # Ollama truncates a chat over the context unless told not to; endmark only when asked
    truncate: bool = False

    def constraint(self) -> ConstraintSpec | None:
        if self.format == "json":
            return ConstraintSpec("json_object", None, "format")
        if isinstance(self.format, dict):
            return ConstraintSpec("json_schema", self.format, "format")
        return None

    def spec_of(
        self, input: ChatInput | list[Prompt], label: str, prompt_param: str = "prompt"
    ) -> RequestSpec:
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
            prompt_param=prompt_param,
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

    def droppable(self) -> list[int]:
        """The messages `truncate` may drop, oldest first: all but the system messages and the
        last message, which Ollama keeps too."""
        last = len(self.messages) - 1
        return [i for i, m in enumerate(self.messages) if m.role != "system" and i != last]

    def without(self, dropped: Sequence[int]) -> ChatRequest:
        gone = set(dropped)
        kept = [m for i, m in enumerate(self.messages) if i not in gone]
        return self.model_copy(update={"messages": kept})

    def to_spec(self) -> RequestSpec:
        try:
            messages = [m.as_template_input() for m in self.messages]
        except ValueError as exc:
            raise InvalidRequest(str(exc), "messages") from None
        tools = self.tool_request()
        if tools is not None and self.constraint() is not None:
            raise InvalidRequest("tools cannot be combined with format", "format")
        return self.spec_of(ChatInput(messages, tools=tools), "POST /api/chat", "messages")


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


class PullRequest(BaseModel):
    """`/api/pull`: a Hugging Face model, `hf.co/user/repo[:tag]` (or `user/repo[:tag]`)."""

    model_config = ConfigDict(extra="ignore")

    model: str = ""
    name: str = ""  # older clients
    insecure: bool = False
    stream: bool = True


class DeleteRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = ""
    name: str = ""


# -- the dialect's facts for the plumbing: errors, streams cut short, OpenAPI, routing --


OLLAMA_VERSION = "0.12.0"  # the API this dialect follows
NEVER = "2318-01-01T00:00:00Z"  # Ollama's time for a model that stays loaded


def file_listing(name: str, path: Path, facts: dict[str, Any]) -> dict[str, Any]:
    """A model as `/api/tags` and `/api/ps` list it. The digest names this file (its path,
    size and time), not its bytes: hashing the weights would cost a read of them all."""
    stat = path.stat()
    ident = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    return {
        "name": name,
        "model": name,
        "modified_at": datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(),
        "size": stat.st_size,
        "digest": hashlib.sha256(ident).hexdigest(),
        "details": facts,
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def ollama_error(problem: Problem) -> dict[str, Any]:
    """Ollama's errors are the message alone; a prompt over the context begins with
    Ollama's own words for it."""
    if problem.code == CONTEXT_LENGTH_EXCEEDED:
        return {"error": f"the input length exceeds the context length: {problem.message}"}
    return {"error": problem.message}


def ollama_failure(model: str, message: str) -> bytes:
    line = {"model": model, "created_at": now_iso(), "error": message, "done": True}
    return json.dumps(line, ensure_ascii=False).encode() + b"\n"


def model_routes(served: Callable[[], list[ServedModel]]) -> APIRouter:
    """The model routes router mode answers itself: every model of its catalog, the loaded."""
    from endmark.server.dialects.ollama_pull import router as pulls  # pull and delete

    router = APIRouter()
    router.include_router(pulls)

    @router.get("/api/version")
    async def version() -> dict[str, str]:
        return {"version": OLLAMA_VERSION, "endmark": __version__}

    @router.get("/api/tags")
    async def tags() -> dict[str, Any]:
        return {"models": [file_listing(m.id, m.path, {"format": "gguf"}) for m in served()]}

    @router.get("/api/ps")
    async def running() -> dict[str, Any]:
        return {"models": [{**file_listing(m.id, m.path, {"format": "gguf"}), "size": m.size,
                            "expires_at": m.expires_at or NEVER, "size_vram": 0}
                           for m in served() if m.loaded]}  # fmt: skip

    return router


def unload_reply(path: str, body: Mapping[str, Any], model: str) -> dict[str, Any] | None:
    """Ollama's way to unload a model: `keep_alive: 0` on a chat or generation that asks for
    nothing; its answer, as Ollama gives it."""
    if path not in ("/api/generate", "/api/chat") or body.get("prompt") or body.get("messages"):
        return None
    out = {"model": model, "created_at": now_iso(), "done": True, "done_reason": "unload"}
    return out | ({"message": {"role": "assistant", "content": ""}} if path == "/api/chat"
                  else {"response": ""})  # fmt: skip


OLLAMA = Dialect(
    "ollama", ("/api/",),
    FinishWords(eos="stop", word="stop", limit="length", calls="stop"),  # Ollama's done_reason
    routes=("endmark.server.dialects.ollama", "endmark.server.dialects.ollama_pull"),
    error_body=ollama_error, failure=ollama_failure,
    request_bodies={"/api/chat": ChatRequest, "/api/generate": GenerateRequest,
                    "/api/embed": EmbedRequest, "/api/embeddings": LegacyEmbeddingsRequest,
                    "/api/show": ShowRequest, "/api/pull": PullRequest},
    streams=dict.fromkeys(("/api/chat", "/api/generate", "/api/pull"), NDJSON),
    routing_text=PromptText(heads=("system",), messages=("messages",), texts=("prompt", "input")),
    model_routes=model_routes, unload_reply=unload_reply,
)  # fmt: skip
