"""Anthropic's Messages API: `POST /v1/messages` (whole or streamed) and
`POST /v1/messages/count_tokens`, for the `anthropic` SDK and the coding agents built on it.

Thinking, text and tool calls come out as `thinking`, `text` and `tool_use` blocks, and
`stop_reason` says why in Anthropic's words: `end_turn`, `max_tokens`, `stop_sequence` (with
the sequence) or `tool_use`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request

from endmark.channels import ToolCall
from endmark.generation import Done, Failed, GenerationRequest
from endmark.runtime import Runtime
from endmark.server.dialects.anthropic_protocol import (
    ANTHROPIC,
    CountTokensRequest,
    MessagesRequest,
)
from endmark.server.dialects.blocks import Block, BlockTracker, Change
from endmark.server.dialects.results import Answer, Events, Follow, collect, cut_detail
from endmark.server.http.disconnect import unless_disconnected
from endmark.server.http.errors import parse_body
from endmark.server.http.state import runtime_of
from endmark.server.http.stream import event_stream, sse

router = APIRouter()


async def generation(rt: Runtime, req: MessagesRequest) -> GenerationRequest:
    return (await rt.prepare_async(req.to_spec()))[0]


def stop_reason(done: Done) -> tuple[str, str | None]:
    """Anthropic's `stop_reason`, and the stop sequence that ended it."""
    reason = ANTHROPIC.finish.of(done)
    return reason, done.finish.word if reason == "stop_sequence" else None


def tool_use(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id, "name": call.name,
            "input": json.loads(call.arguments)}  # fmt: skip


def content_block(block: Block) -> dict[str, Any]:
    """A block of a whole message."""
    if block.call is not None:
        return tool_use(block.call)
    if block.kind == "reasoning":
        return {"type": "thinking", "thinking": block.text, "signature": ""}
    return {"type": "text", "text": block.text}


# Each kind of block's delta: its type, and the field that carries the new text.
DELTAS = {"reasoning": ("thinking_delta", "thinking"), "text": ("text_delta", "text"),
          "call": ("input_json_delta", "partial_json")}  # fmt: skip


def block_events(changes: list[Change]) -> list[bytes]:
    """A stream's events for the blocks that opened, grew and closed."""
    out = []
    for change in changes:
        block, index = change.block, change.block.index
        if change.what == "open":  # a block starts empty: its text comes as deltas
            start = content_block(replace(block, text="")) if block.call is None \
                else {**tool_use(block.call), "input": {}}  # fmt: skip
            out.append(sse_event("content_block_start", {"index": index, "content_block": start}))
        elif change.what == "grow":
            kind, key = DELTAS[block.kind]
            delta = {"type": kind, key: change.text}
            out.append(sse_event("content_block_delta", {"index": index, "delta": delta}))
        else:
            out.append(sse_event("content_block_stop", {"index": index}))
    return out


def message_head(rt: Runtime, gen: GenerationRequest) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": rt.alias,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": len(gen.prompt), "output_tokens": 0},
    }


def whole(rt: Runtime, gen: GenerationRequest, answer: Answer) -> dict[str, Any]:
    assert answer.done is not None
    reason, sequence = stop_reason(answer.done)
    out = message_head(rt, gen)
    out.update(content=[content_block(b) for b in answer.blocks()], stop_reason=reason,
               stop_sequence=sequence)  # fmt: skip
    out["usage"]["output_tokens"] = len(answer.done.tokens)
    return {**out, **cut_detail(answer.done)}


def sse_event(kind: str, data: dict[str, Any]) -> bytes:
    return sse({"type": kind, **data}, kind)


async def stream(rt: Runtime, gen: GenerationRequest, events: Events) -> AsyncIterator[bytes]:
    """Anthropic's events: a block opens when its kind of output starts (thinking, text, a
    tool call), takes deltas, and closes when another kind begins or the message ends."""
    tracker = BlockTracker()
    async with aclosing(Follow(events, 1)) as steps:
        yield sse_event("message_start", {"message": message_head(rt, gen)})
        async for _, event, delta in steps:
            if isinstance(event, Failed):
                yield ANTHROPIC.failure(rt.alias, event.message)
                return
            for chunk in block_events(tracker.add(delta)):
                yield chunk
            if isinstance(event, Done):
                for chunk in block_events(tracker.finish()):
                    yield chunk
                reason, sequence = stop_reason(event)
                yield sse_event("message_delta", {
                    "delta": {"stop_reason": reason, "stop_sequence": sequence,
                              **cut_detail(event)},
                    "usage": {"output_tokens": len(event.tokens)},
                })  # fmt: skip
                yield sse_event("message_stop", {})


@router.post("/v1/messages")
async def messages(request: Request) -> Any:
    rt = runtime_of(request)
    req = await parse_body(request, MessagesRequest)
    gen = await generation(rt, req)
    events = rt.stream_many([gen], whole=not req.stream)
    if req.stream:
        return event_stream(stream(rt, gen, events))
    (answer,) = await unless_disconnected(request, collect(events, 1))
    return whole(rt, gen, answer)


@router.post("/v1/messages/count_tokens")
async def count_tokens(request: Request) -> dict[str, int]:
    rt = runtime_of(request)
    req = await parse_body(request, CountTokensRequest)
    spec = req.as_messages_request().to_spec()
    return {"input_tokens": len((await rt.prepare_async(spec, counting=True))[0].prompt)}
