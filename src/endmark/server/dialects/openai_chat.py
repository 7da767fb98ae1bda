"""The OpenAI chat routes: `/v1/chat/completions` (also without `/v1`) and llama-server's
`/chat/completions/input_tokens`. The plumbing both `/v1` endpoints share is in
`openai_shared.py`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from endmark.delta import Delta
from endmark.generation import Done, Progress, TokenEvent
from endmark.runtime import Runtime
from endmark.server.dialects.blocks import BlockTracker, Change
from endmark.server.dialects.openai_protocol import ChatCompletionRequest
from endmark.server.dialects.openai_shared import (
    base,
    finish_of,
    stream_chunks,
    verbose_info,
    whole_response,
)
from endmark.server.dialects.results import Answer, collect
from endmark.server.http.disconnect import unless_disconnected
from endmark.server.http.errors import ApiError, parse_body
from endmark.server.http.state import runtime_of
from endmark.server.http.stream import event_stream

router = APIRouter()


def chat_logprobs(rt: Runtime, tokens: list[TokenEvent], top_n: int) -> dict[str, Any]:
    def entry(token: int, logprob: float) -> dict[str, Any]:
        return {"token": rt.token_text(token), "logprob": logprob, "bytes": rt.token_bytes(token)}

    content = []
    for e in tokens:
        item = entry(e.token, e.logprob if e.logprob is not None else 0.0)
        item["top_logprobs"] = [entry(t, lp) for t, lp in e.top[:top_n]]
        content.append(item)
    return {"content": content, "refusal": None}


@router.post("/v1/chat/completions")
@router.post("/chat/completions")
async def chat_completions(request: Request) -> Any:
    rt = runtime_of(request)
    req = await parse_body(request, ChatCompletionRequest)
    top_n = (req.top_logprobs or 0) if req.logprobs else 0
    requests = await rt.prepare_async(req.to_spec())
    head = base("chat.completion.chunk", rt, "chatcmpl")
    if req.reasoning_control:  # the id the stream sends names it to the control route
        for one in requests:
            one.control_id = head["id"]

    trackers = [BlockTracker() for _ in requests]

    def pieces(i: int, event: TokenEvent | Progress | Done, delta: Delta) -> list[dict[str, Any]]:
        def choice(delta: dict[str, Any], logprobs: Any = None) -> dict[str, Any]:
            return {"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": None}

        if isinstance(event, TokenEvent):
            probs = chat_logprobs(rt, [event], top_n) if req.logprobs else None
            found = chunk_deltas(trackers[i], trackers[i].add(delta)) or [{}]
            return [choice(d, probs if k == 0 else None) for k, d in enumerate(found)]
        if isinstance(event, Progress):
            return [choice({})]
        changes = trackers[i].add(delta) + trackers[i].finish()
        return [
            *map(choice, chunk_deltas(trackers[i], changes)),
            {**choice({}), **finish_of(event)},
        ]

    def start(i: int) -> dict[str, Any]:
        role = {"role": "assistant", "content": None}
        return {"index": i, "delta": role, "logprobs": None, "finish_reason": None}

    events = rt.stream_many(requests, whole=not req.stream)
    if req.stream:
        chunks = stream_chunks(events, requests, req.n, head, start, pieces, req.include_usage)
        return event_stream(chunks)
    choices = await unless_disconnected(request, collect(events, req.n))
    response = whole_response(
        {**base("chat.completion", rt, "chatcmpl"), "id": head["id"]},
        choices,
        requests,
        req.n,
        lambda c: {
            "message": message(c),
            "logprobs": chat_logprobs(rt, c.tokens, top_n) if req.logprobs else None,
        },
        verbose_info(rt, req, requests[0], choices[0]),
    )
    return response


def chunk_deltas(tracker: BlockTracker, changes: list[Change]) -> list[dict[str, Any]]:
    """A stream's deltas for what grew: reasoning, content, a call (indexed among the calls)."""
    out: list[dict[str, Any]] = []
    for change in changes:
        block = change.block
        if change.what != "grow":
            continue
        if block.call is not None:
            index = sum(b.call is not None for b in tracker.blocks[: block.index])
            out.append({"tool_calls": [block.call.as_openai(index)]})
        else:
            out.append({"content" if block.kind == "text" else "reasoning_content": change.text})
    return out


def message(choice: Answer) -> dict[str, Any]:
    """The assistant message: content, and apart from it the reasoning and the tool calls,
    from the blocks its stream would have sent."""
    blocks = choice.blocks()
    texts = [b.text for b in blocks if b.kind == "text"]
    calls = [b.call for b in blocks if b.call is not None]
    reasoning = "".join(b.text for b in blocks if b.kind == "reasoning")
    out: dict[str, Any] = {"role": "assistant"}
    if reasoning:
        out["reasoning_content"] = reasoning
    out["content"] = "".join(texts) if texts or not calls else None
    if calls:
        out["tool_calls"] = [c.as_openai() for c in calls]
    return out


@router.post("/v1/chat/completions/input_tokens")
@router.post("/chat/completions/input_tokens")
async def chat_input_tokens(request: Request) -> dict[str, Any]:
    """llama-server's count of the prompt tokens a chat request would use."""
    rt = runtime_of(request)
    req = await parse_body(request, ChatCompletionRequest)
    spec = replace(req.to_spec(), n=1)
    return {"input_tokens": len((await rt.prepare_async(spec, counting=True))[0].prompt)}


class ControlRequest(BaseModel):
    id: str = ""
    action: str = ""
    model: str | None = None  # routes it in router mode; ignored here


@router.post("/v1/chat/completions/control")
@router.post("/chat/completions/control")
async def control(request: Request) -> dict[str, Any]:
    """llama-server's control of a running completion: `reasoning_end` closes its thinking
    (the completion must have asked for `reasoning_control`)."""
    rt = runtime_of(request)
    req = await parse_body(request, ControlRequest)
    if not req.id:
        raise ApiError(400, "missing completion id", "id")
    if req.action != "reasoning_end":
        raise ApiError(400, "unknown control action", "action")
    ended = await rt.end_reasoning(req.id)
    if ended is None:
        return {"success": False, "message": "no active completion for this id"}
    return {"success": True}
