"""What the plumbing knows of a dialect, and which dialect a path speaks.

Errors, a stream cut short, the OpenAPI document and the replicas' prefix routing all need a
few facts per dialect: its error shape, its mid-stream error event, its finish words, its
request models, its routing text. Each dialect states them once, in one `Dialect` record next
to its wire models; the app (and router mode, and the replicas' ingress) registers the table of
records, and the plumbing looks a path up here. The plumbing never imports a dialect module.

llama.cpp's shapes are the default: a path no registered dialect claims is answered in them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import BaseModel

if TYPE_CHECKING:
    from endmark.generation import Done

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"

# The error `type` llama-server and OpenAI give each status.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    500: "server_error",
    501: "not_supported_error",
    503: "unavailable_error",
}


@dataclass(frozen=True)
class Problem:
    """An error, as every dialect's error body reads it. `details` are extra fields
    llama-server adds for some errors (e.g. `n_ctx` when the prompt is too long)."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    kind: str | None = None
    details: Mapping[str, Any] | None = None

    @property
    def type(self) -> str:
        """llama.cpp's type: its own `kind` where it has one, else the status's."""
        return self.kind or self.status_type

    @property
    def status_type(self) -> str:
        """The type OpenAI gives the status (OpenAI's bodies say the detail in `code`)."""
        fallback = "invalid_request_error" if self.status < 500 else "server_error"
        return ERROR_TYPES.get(self.status, fallback)


@dataclass(frozen=True)
class FinishWords:
    """How a dialect words why a generation ended: by an end token, a stop word, the limit,
    or by the tool calls it made (ending rule 7, decided once by `Done.ended_by_calls`)."""

    eos: str
    word: str
    limit: str
    calls: str

    def of(self, done: Done) -> str:
        if done.ended_by_calls:
            return self.calls
        return {"eos": self.eos, "word": self.word, "limit": self.limit}[done.finish.stop_type]


def llama_error(problem: Problem) -> dict[str, Any]:
    body = {"code": problem.status, "message": problem.message, "type": problem.type}
    return {"error": {**body, **(problem.details or {})}}


def sse_bytes(data: dict[str, Any], event: str | None = None) -> bytes:
    """One server-sent event, built without the stream writer (a relay needs no orjson)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def llama_failure(model: str, message: str) -> bytes:
    return sse_bytes({"error": {"code": 500, "message": message, "type": "server_error"}})


@dataclass(frozen=True)
class PromptText:
    """Where a dialect's body holds the text its prompt begins with, read in order: leading
    strings (a system prompt), a list of chat messages (role and text), then plain prompts."""

    heads: tuple[str, ...] = ()
    messages: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()

    def __call__(self, data: Mapping[str, Any]) -> str:
        parts = [data[key] for key in self.heads if isinstance(data.get(key), str)]
        found = next((data[k] for k in self.messages if isinstance(data.get(k), list)), [])
        for m in found:
            if isinstance(m, dict):
                parts.append(f"<{m.get('role')}>{_content_text(m.get('content'))}")
        parts += [data[key] for key in self.texts if isinstance(data.get(key), str)]
        return "\n".join(parts)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


@dataclass(frozen=True)
class ServedModel:
    """A model as router mode serves it, for a dialect's own model routes (Ollama's
    `/api/tags`, `/api/ps`): its id, file, whether its worker is loaded, when it unloads (an
    ISO time; None: never) and the memory it holds."""

    id: str
    path: Path
    loaded: bool
    expires_at: str | None
    size: int


# Router mode's own routes for a dialect, given the models it serves at the time of asking.
ModelRoutes = Callable[[Callable[[], list[ServedModel]]], APIRouter]
# The answer to a request that only asks to unload its model (path, body, model), or None.
UnloadReply = Callable[[str, Mapping[str, Any], str], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Dialect:
    """One dialect's facts for the plumbing. `prefixes` are the paths it answers (the longest
    matching prefix of any registered dialect wins); `failure(model, message)` is the one event
    its streams end with when a generation fails mid-stream, in its own stream and when a
    relayed stream breaks; `streams` gives each streaming path its media type;
    `routing_text(body)` is the text a request's prompt begins with, for prefix routing;
    `routes` names the modules whose `router` the app includes.
    Router mode answers `model_routes` itself (what concerns the set of models), and a request
    its `unload_reply` answers (a request to unload the model, as Ollama's `keep_alive: 0`)."""

    name: str
    prefixes: tuple[str, ...]
    finish: FinishWords
    error_body: Callable[[Problem], dict[str, Any]] = llama_error
    failure: Callable[[str, str], bytes] = llama_failure
    request_bodies: Mapping[str, type[BaseModel]] = field(default_factory=dict)
    streams: Mapping[str, str] = field(default_factory=dict)
    routing_text: Callable[[Mapping[str, Any]], str] = PromptText()
    model_routes: ModelRoutes | None = None
    unload_reply: UnloadReply | None = None
    # the modules whose `router` serves this dialect, named, not imported: the plumbing and
    # router mode read the table without loading any dialect's routes
    routes: tuple[str, ...] = ()


# llama.cpp's own shapes: what a path no registered dialect claims is answered in.
LLAMA_CPP = Dialect("llama.cpp", ("/",), FinishWords("eos", "word", "limit", "eos"))

_registered: list[Dialect] = []


def register(dialects: Iterable[Dialect]) -> None:
    """The table this process answers with (the app, router mode, the replicas' ingress all
    register the same one); registering again replaces it."""
    _registered[:] = list(dialects)


def registered() -> tuple[Dialect, ...]:
    return tuple(_registered)


def dialect_for(path: str) -> Dialect:
    """The dialect whose prefix is the longest start of `path`; llama.cpp's by default."""
    best, length = LLAMA_CPP, 0
    for dialect in _registered:
        for prefix in dialect.prefixes:
            if path.startswith(prefix) and len(prefix) > length:
                best, length = dialect, len(prefix)
    return best
