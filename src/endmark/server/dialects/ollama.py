"""Ollama's API: `/api/chat`, `/api/generate`, `/api/embed` (and the legacy `/api/embeddings`),
`/api/tags`, `/api/show`, `/api/ps` and `/api/version`, for the `ollama` clients and the tools
built on them. (`HEAD /`, which Ollama's CLI asks, is answered by the chat page's route.)

Streams are NDJSON, one object a line, the last with `done: true`, `done_reason` and Ollama's
counts and durations (nanoseconds). Thinking goes to `thinking`, tool calls to `tool_calls`
with arguments as objects, as Ollama writes them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from endmark import __version__
from endmark.calls import Reasoning
from endmark.generation import Done, Failed, GenerationRequest, TokenEvent
from endmark.runtime import Runtime
from endmark.server.dialects.ollama_protocol import (
    ChatRequest,
    EmbedRequest,
    GenerateRequest,
    Generating,
    LegacyEmbeddingsRequest,
    ShowRequest,
)
from endmark.server.dialects.results import Answer, Events, collect
from endmark.server.http.disconnect import unless_disconnected
from endmark.server.http.errors import ApiError, parse_body
from endmark.server.http.state import runtime_of
from endmark.server.http.stream import ndjson_stream

router = APIRouter()
OLLAMA_VERSION = "0.12.0"  # the API this dialect follows


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def details(rt: Runtime) -> dict[str, Any]:
    facts = rt.engine.model_facts()
    n = facts["parameters"]
    size = f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"
    family = facts["architecture"]
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": size,
        "quantization_level": facts["quantization"],
    }


def listing(rt: Runtime) -> dict[str, Any]:
    return file_listing(rt.alias, rt.model_path, details(rt))


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


@router.get("/api/version")
async def version() -> dict[str, str]:
    return {"version": OLLAMA_VERSION, "endmark": __version__}


@router.get("/api/tags")
async def tags(request: Request) -> dict[str, Any]:
    return {"models": [listing(runtime_of(request))]}


@router.get("/api/ps")
async def running(request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    forever = "2318-01-01T00:00:00Z"  # loaded for the life of the server
    return {"models": [{**listing(rt), "expires_at": forever, "size_vram": 0,
                        "context_length": rt.engine.n_ctx}]}  # fmt: skip


@router.post("/api/show")
async def show(request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    await parse_body(request, ShowRequest)
    facts = rt.engine.model_facts()
    arch = facts["architecture"]
    capabilities = ["completion", "embedding"]
    if rt.template is not None:
        capabilities.append("tools")
    if rt.think_format is not None:
        capabilities.append("thinking")
    return {
        "modelfile": f"FROM {rt.model_path}\n",
        "parameters": "",
        "template": getattr(rt.template, "source", ""),
        "details": details(rt),
        "model_info": {
            "general.architecture": arch,
            "general.parameter_count": facts["parameters"],
            f"{arch}.context_length": facts["context_length"],
            f"{arch}.embedding_length": facts["embedding_length"],
            f"{arch}.block_count": facts["layers"],
            f"{arch}.attention.head_count": facts["heads"],
        },
        "capabilities": capabilities,
        "modified_at": listing(rt)["modified_at"],
    }


# -- generation --------------------------------------------------------------------------


def options_of(rt: Runtime, req: Generating, label: str) -> dict[str, Any]:
    return {
        "n_predict": req.options.num_predict if req.options.num_predict >= 0 else -1,
        "stop": req.options.stop or [],
        "label": label,
        "constraint": req.constraint(),
        "cache_prompt": rt.settings.cache_prompt,
    }


def reasoning_of(rt: Runtime, req: Generating) -> Reasoning:
    budget = req.reasoning_budget
    return Reasoning(rt.settings.reasoning_format,
                     rt.settings.reasoning_budget if budget is None else budget)  # fmt: skip


def stats(done: Done, started: float) -> dict[str, Any]:
    """Ollama's closing counts and durations, in nanoseconds."""
    t = done.timings
    return {
        "done_reason": done.finish.finish_reason,
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": t.prompt_n,
        "prompt_eval_duration": int(t.prompt_ms * 1e6),
        "eval_count": len(done.tokens),
        "eval_duration": int(t.predicted_ms * 1e6),
    }


def calls_of(answer_calls: Any) -> list[dict[str, Any]]:
    return [{"function": {"name": c.name, "arguments": json.loads(c.arguments)}}
            for c in answer_calls]  # fmt: skip


async def parts(
    rt: Runtime, events: Events, chat: bool, started: float
) -> AsyncIterator[dict[str, Any]]:
    """The stream: a line per token (text, thinking, or a finished call), then the end."""
    head = {"model": rt.alias}
    key = "content" if chat else "response"
    try:
        async for _, event in events:
            if isinstance(event, Failed):
                yield {**head, "created_at": now_iso(), "error": event.message, "done": True}
                return
            if isinstance(event, TokenEvent):
                text, thinking, calls = event.text, event.reasoning, event.calls
            elif not isinstance(event, Done):
                continue  # prompt progress: Ollama has no such line
            else:
                text, thinking, calls = event.finish.tail, event.reasoning_tail, event.tail_calls
            piece: dict[str, Any] = {key: text}
            if thinking:
                piece["thinking"] = thinking
            if calls:
                piece["tool_calls"] = calls_of(calls)
            body = {"role": "assistant", **piece} if chat else piece
            line = {**head, "created_at": now_iso(), **({"message": body} if chat else body)}
            if isinstance(event, Done):
                yield {**line, "done": True, **stats(event, started)}
            elif text or thinking or calls:
                yield {**line, "done": False}
    finally:
        await events.aclose()


def whole(rt: Runtime, answer: Answer, chat: bool, started: float) -> dict[str, Any]:
    assert answer.done is not None
    body: dict[str, Any] = {"content" if chat else "response": answer.content}
    thinking = "".join(answer.reasoning)
    if thinking:
        body["thinking"] = thinking
    if answer.calls:
        body["tool_calls"] = calls_of(answer.calls)
    out = {"model": rt.alias, "created_at": now_iso()}
    out.update({"message": {"role": "assistant", **body}} if chat else body)
    return {**out, "done": True, **stats(answer.done, started)}


async def answer(request: Request, rt: Runtime, gen: GenerationRequest, stream: bool,
                 chat: bool) -> Any:  # fmt: skip
    started = time.perf_counter()
    events = rt.stream_many([gen])
    if stream:
        return ndjson_stream(parts(rt, events, chat, started))
    (found,) = await unless_disconnected(request, collect(events, 1))
    return JSONResponse(whole(rt, found, chat, started))


@router.post("/api/chat")
async def chat(request: Request) -> Any:
    rt = runtime_of(request)
    req = await parse_body(request, ChatRequest)
    try:
        messages = [m.as_template_input() for m in req.messages]
    except ValueError as exc:
        raise ApiError(400, str(exc), "messages") from None
    if not messages:  # Ollama loads the model and answers at once
        return {"model": rt.alias, "created_at": now_iso(), "done": True, "done_reason": "load",
                "message": {"role": "assistant", "content": ""}}  # fmt: skip
    tools = req.tool_request()
    if tools is not None and req.constraint() is not None:
        raise ApiError(400, "tools cannot be combined with format", "format")
    sampling = req.sampling(rt.settings.sampling_defaults())
    gen = rt.chat_request(
        messages, sampling, tools=tools, reasoning=reasoning_of(rt, req),
        **options_of(rt, req, "POST /api/chat"),
    )  # fmt: skip
    return await answer(request, rt, gen, req.stream, chat=True)


@router.post("/api/generate")
async def generate(request: Request) -> Any:
    rt = runtime_of(request)
    req = await parse_body(request, GenerateRequest)
    if req.images:
        raise ApiError(400, "images are not supported: this model reads text only", "images")
    if not req.prompt:
        return {"model": rt.alias, "created_at": now_iso(), "response": "", "done": True,
                "done_reason": "load"}  # fmt: skip
    sampling = req.sampling(rt.settings.sampling_defaults())
    options = options_of(rt, req, "POST /api/generate")
    if req.raw:
        gen = rt.make_request(req.prompt, sampling, **options)
    else:
        messages = [{"role": "user", "content": req.prompt}]
        if req.system:
            messages.insert(0, {"role": "system", "content": req.system})
        gen = rt.chat_request(messages, sampling, reasoning=reasoning_of(rt, req), **options)
    return await answer(request, rt, gen, req.stream, chat=False)


# -- embeddings --------------------------------------------------------------------------


@router.post("/api/embed")
async def embed(request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    req = await parse_body(request, EmbedRequest)
    inputs = [req.input] if isinstance(req.input, str) else list(req.input)
    started = time.perf_counter()
    vectors, n_tokens = await rt.embed(inputs)
    return {
        "model": rt.alias,
        "embeddings": [v.tolist() for v in vectors],
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": n_tokens,
    }


@router.post("/api/embeddings")
async def legacy_embeddings(request: Request) -> dict[str, Any]:
    """Ollama's first embeddings route: one prompt, a vector not normalized."""
    rt = runtime_of(request)
    req = await parse_body(request, LegacyEmbeddingsRequest)
    vectors, _ = await rt.embed([req.prompt], -1)
    return {"embedding": vectors[0].tolist()}
