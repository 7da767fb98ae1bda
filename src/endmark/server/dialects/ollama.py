"""Ollama's API: `/api/chat`, `/api/generate`, `/api/embed` (and the legacy `/api/embeddings`),
`/api/tags`, `/api/show`, `/api/ps` and `/api/version`, for the `ollama` clients and the tools
built on them. (`HEAD /`, which Ollama's CLI asks, is answered by the chat page's route.)

Streams are NDJSON, one object a line, the last with `done: true`, `done_reason` and Ollama's
counts and durations (nanoseconds). Thinking goes to `thinking`, tool calls to `tool_calls`
with arguments as objects, as Ollama writes them.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from endmark import __version__
from endmark.generation import Done, Failed, GenerationRequest
from endmark.invalid import ContextExceeded
from endmark.runtime import Runtime
from endmark.server.dialects.blocks import BlockTracker, Change, changes_of
from endmark.server.dialects.ollama_protocol import (
    OLLAMA,
    OLLAMA_VERSION,
    ChatRequest,
    EmbedRequest,
    GenerateRequest,
    LegacyEmbeddingsRequest,
    ShowRequest,
    file_listing,
    now_iso,
)
from endmark.server.dialects.ollama_pull import pulled_listing
from endmark.server.dialects.results import Answer, Events, Follow, collect, cut_detail
from endmark.server.http.disconnect import unless_disconnected
from endmark.server.http.errors import ApiError, parse_body
from endmark.server.http.state import runtime_of
from endmark.server.http.stream import ndjson_stream

router = APIRouter()


def details(rt: Runtime) -> dict[str, Any]:
    facts = rt.model_facts()
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


@router.get("/api/version")
async def version() -> dict[str, str]:
    return {"version": OLLAMA_VERSION, "endmark": __version__}


@router.get("/api/tags")
async def tags(request: Request) -> dict[str, Any]:
    rt = runtime_of(request)  # the model served, then those pulled (they wait in the cache)
    return {"models": [listing(rt), *pulled_listing(skip=str(rt.model_path))]}


@router.get("/api/ps")
async def running(request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    forever = "2318-01-01T00:00:00Z"  # loaded for the life of the server
    return {"models": [{**listing(rt), "expires_at": forever, "size_vram": 0,
                        "context_length": rt.n_ctx}]}  # fmt: skip


@router.post("/api/show")
async def show(request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    await parse_body(request, ShowRequest)
    facts = rt.model_facts()
    arch = facts["architecture"]
    capabilities = ["completion", "embedding"]
    if rt.learned.template is not None:
        capabilities.append("tools")
    if rt.learned.think_format is not None:
        capabilities.append("thinking")
    return {
        "modelfile": f"FROM {rt.model_path}\n",
        "parameters": "",
        "template": getattr(rt.learned.template, "source", ""),
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


def stats(done: Done, started: float) -> dict[str, Any]:
    """Ollama's closing counts and durations, in nanoseconds."""
    t = done.timings
    return {
        "done_reason": OLLAMA.finish.of(done),
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": t.prompt_n,
        "prompt_eval_duration": int(t.prompt_ms * 1e6),
        "eval_count": len(done.tokens),
        "eval_duration": int(t.predicted_ms * 1e6),
        **cut_detail(done),
    }


def grown(changes: list[Change], chat: bool) -> dict[str, Any]:
    """What the blocks grew by, as Ollama writes it: text, thinking, finished calls (with
    arguments as objects). One line's worth in a stream, or a whole answer's."""
    grew = [c for c in changes if c.what == "grow"]
    body: dict[str, Any] = {"content" if chat else "response":
                            "".join(c.text for c in grew if c.block.kind == "text")}  # fmt: skip
    thinking = "".join(c.text for c in grew if c.block.kind == "reasoning")
    if thinking:
        body["thinking"] = thinking
    calls = [c.block.call for c in grew if c.block.call is not None]
    if calls:
        body["tool_calls"] = [{"function": {"name": c.name, "arguments": json.loads(c.arguments)}}
                              for c in calls]  # fmt: skip
    return {"message": {"role": "assistant", **body}} if chat else body


async def parts(
    rt: Runtime, events: Events, chat: bool, started: float, said: dict[str, Any]
) -> AsyncIterator[dict[str, Any] | bytes]:
    """The stream: a line per token that added something, then the end."""
    tracker = BlockTracker()
    async with aclosing(Follow(events, 1)) as steps:
        async for _, event, delta in steps:
            if isinstance(event, Failed):
                yield OLLAMA.failure(rt.alias, event.message)
                return
            changes = tracker.add(delta)
            line = {"model": rt.alias, "created_at": now_iso()}
            if isinstance(event, Done):
                changes += tracker.finish()
                yield {**line, **grown(changes, chat), "done": True, **stats(event, started),
                       **said}  # fmt: skip
            elif any(c.what == "grow" for c in changes):  # not prompt progress, nor held space
                yield {**line, **grown(changes, chat), "done": False}


def whole(rt: Runtime, answer: Answer, chat: bool, started: float) -> dict[str, Any]:
    assert answer.done is not None
    out = {"model": rt.alias, "created_at": now_iso(), **grown(changes_of(answer.deltas), chat)}
    return {**out, "done": True, **stats(answer.done, started)}


async def answer(request: Request, rt: Runtime, gen: GenerationRequest, stream: bool,
                 chat: bool, dropped: int = 0) -> Any:  # fmt: skip
    """The answer, whole or streamed; one that `truncate` made fit says how many messages it
    dropped (`truncated_messages`, on the last line)."""
    started = time.perf_counter()
    events = rt.stream_many([gen], whole=not stream)
    said = {"truncated_messages": dropped} if dropped else {}
    if stream:
        return ndjson_stream(parts(rt, events, chat, started, said))
    (found,) = await unless_disconnected(request, collect(events, 1))
    return JSONResponse({**whole(rt, found, chat, started), **said})


async def fitted(rt: Runtime, req: ChatRequest) -> tuple[GenerationRequest, int]:
    """The chat's request, and how many of its oldest messages were dropped to fit the
    context: none unless `truncate` asks (a prompt over the context is a 400 otherwise).
    The fewest that make it fit, found by halving; if dropping them all does not, the 400."""
    try:
        (gen,) = await rt.prepare_async(req.to_spec())
        return gen, 0
    except ContextExceeded:
        droppable = req.droppable()
        if not (req.truncate and droppable):
            raise
    best: tuple[GenerationRequest, int] | None = None
    lo, hi = 1, len(droppable)
    while lo <= hi:
        k = (lo + hi) // 2
        try:
            (gen,) = await rt.prepare_async(req.without(droppable[:k]).to_spec())
            best, hi = (gen, k), k - 1
        except ContextExceeded:
            if k == len(droppable):
                raise
            lo = k + 1
    assert best is not None
    return best


@router.post("/api/chat")
async def chat(request: Request) -> Any:
    rt = runtime_of(request)
    req = await parse_body(request, ChatRequest)
    if not req.messages:  # Ollama loads the model and answers at once
        return {"model": rt.alias, "created_at": now_iso(), "done": True, "done_reason": "load",
                "message": {"role": "assistant", "content": ""}}  # fmt: skip
    gen, dropped = await fitted(rt, req)
    return await answer(request, rt, gen, req.stream, chat=True, dropped=dropped)


@router.post("/api/generate")
async def generate(request: Request) -> Any:
    rt = runtime_of(request)
    req = await parse_body(request, GenerateRequest)
    if req.images:
        raise ApiError(400, "images are not supported: this model reads text only", "images")
    if not req.prompt:
        return {"model": rt.alias, "created_at": now_iso(), "response": "", "done": True,
                "done_reason": "load"}  # fmt: skip
    (gen,) = await rt.prepare_async(req.to_spec())
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
