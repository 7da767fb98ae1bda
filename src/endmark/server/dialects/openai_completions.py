"""OpenAI's legacy completions, `/v1/completions`, and the model list, `/v1/models` (also
without `/v1`, as llama-server answers it)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from endmark.delta import Delta
from endmark.generation import Done, Progress, TokenEvent
from endmark.runtime import Runtime
from endmark.server.dialects.openai_protocol import CompletionsRequest
from endmark.server.dialects.openai_shared import (
    base,
    finish_of,
    stream_chunks,
    verbose_info,
    whole_response,
)
from endmark.server.dialects.results import collect
from endmark.server.http.disconnect import unless_disconnected
from endmark.server.http.errors import parse_body
from endmark.server.http.state import runtime_of
from endmark.server.http.stream import event_stream

router = APIRouter()


@router.get("/v1/models")
@router.get("/models")
async def models(request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    return {
        "object": "list",
        "data": [
            {
                "id": rt.alias,
                "object": "model",
                "created": int(rt.model_path.stat().st_mtime),
                "owned_by": "endmark",
                "aliases": rt.settings.aliases() or [rt.alias],
                "tags": [t.strip() for t in (rt.settings.tags or "").split(",") if t.strip()],
                "meta": {"n_ctx": rt.n_ctx, "n_vocab": rt.n_vocab},
            }
        ],
    }


def completion_logprobs(
    rt: Runtime, tokens: list[TokenEvent], top_n: int, offset: int = 0
) -> dict[str, Any]:
    texts = [rt.token_text(e.token) for e in tokens]
    offsets = []
    for text in texts:
        offsets.append(offset)
        offset += len(text)
    return {
        "tokens": texts,
        "token_logprobs": [e.logprob for e in tokens],
        "top_logprobs": [{rt.token_text(t): lp for t, lp in e.top[:top_n]} for e in tokens],
        "text_offset": offsets,
    }


@router.post("/v1/completions")
async def completions(request: Request) -> Any:
    rt = runtime_of(request)
    req = await parse_body(request, CompletionsRequest)
    requests = await rt.prepare_async(req.to_spec())
    top_n = req.logprobs or 0
    head = base("text_completion", rt, "cmpl")

    def pieces(i: int, event: TokenEvent | Progress | Done, delta: Delta) -> list[dict[str, Any]]:
        out: dict[str, Any] = {"index": i, "text": delta.content, "logprobs": None,
                               "finish_reason": None}  # fmt: skip
        if isinstance(event, TokenEvent) and req.logprobs is not None:
            out["logprobs"] = completion_logprobs(rt, [event], top_n)
        elif isinstance(event, Done):
            out.update(finish_of(event))
        return [out]

    events = rt.stream_many(requests, whole=not req.stream)
    if req.stream:
        return event_stream(
            stream_chunks(events, requests, req.n, head, None, pieces, req.include_usage)
        )
    choices = await unless_disconnected(request, collect(events, len(requests)))
    return whole_response(
        base("text_completion", rt, "cmpl"),
        choices,
        requests,
        req.n,
        lambda c: {
            "text": c.content,
            "logprobs": completion_logprobs(rt, c.tokens, top_n)
            if req.logprobs is not None
            else None,
        },
        verbose_info(rt, req, requests[0], choices[0]),
    )
