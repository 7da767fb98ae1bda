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
from typing import Any

from fastapi import APIRouter, Request

from endmark.calls import Reasoning
from endmark.channels import ToolCall
from endmark.generation import Done, Failed, GenerationRequest, TokenEvent
from endmark.runtime import Runtime
from endmark.sampling import SamplingParams
from endmark.server.dialects.anthropic_protocol import CountTokensRequest, MessagesRequest
from endmark.server.dialects.results import Answer, Events, collect
from endmark.server.http.disconnect import unless_disconnected
from endmark.server.http.errors import ApiError, parse_body
from endmark.server.http.state import runtime_of
from endmark.server.http.stream import event_stream, sse

router = APIRouter()


def generation(rt: Runtime, req: MessagesRequest) -> GenerationRequest:
    try:
        messages, tools = req.template_messages(), req.tool_request()
    except ValueError as exc:
        raise ApiError(400, str(exc), "messages") from None
    defaults, given = rt.settings.sampling_defaults(), req.model_fields_set

    def pick(name: str, anthropic_default: Any) -> Any:
        """The request's knob, else the server's default (`--temp`...), else Anthropic's."""
        return getattr(req, name) if name in given else defaults.get(name, anthropic_default)

    sampling = SamplingParams(
        temperature=pick("temperature", 1.0), top_p=pick("top_p", 1.0), top_k=pick("top_k", 0),
        min_p=defaults.get("min_p", 0.0), repeat_penalty=defaults.get("repeat_penalty", 1.0),
        seed=req.seed if req.seed is not None else defaults.get("seed", -1),
    )  # fmt: skip
    budget = rt.settings.reasoning_budget
    if req.thinking is not None:
        budget = (req.thinking.budget_tokens if req.thinking.budget_tokens is not None else -1) \
            if req.thinking.type == "enabled" else 0  # fmt: skip
    return rt.chat_request(
        messages, sampling, tools=tools,
        reasoning=Reasoning(rt.settings.reasoning_format, budget),
        n_predict=req.max_tokens, stop=req.stop_sequences, label="POST /v1/messages",
        cache_prompt=rt.settings.cache_prompt,
    )  # fmt: skip


def stop_reason(done: Done) -> tuple[str, str | None]:
    f = done.finish
    if f.stop_type == "limit":
        return "max_tokens", None
    if done.calls:
        return "tool_use", None
    if f.stop_type == "word":
        return "stop_sequence", f.word
    return "end_turn", None


def tool_use(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id, "name": call.name,
            "input": json.loads(call.arguments)}  # fmt: skip


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
    blocks: list[dict[str, Any]] = []
    thinking = "".join(answer.reasoning)
    if thinking:
        blocks.append({"type": "thinking", "thinking": thinking, "signature": ""})
    if answer.content.strip() or not answer.calls:
        blocks.append({"type": "text", "text": answer.content})
    blocks += [tool_use(c) for c in answer.calls]
    reason, sequence = stop_reason(answer.done)
    out = message_head(rt, gen)
    out.update(content=blocks, stop_reason=reason, stop_sequence=sequence)
    out["usage"]["output_tokens"] = len(answer.done.tokens)
    return out


def sse_event(kind: str, data: dict[str, Any]) -> bytes:
    return sse({"type": kind, **data}, kind)


async def stream(rt: Runtime, gen: GenerationRequest, events: Events) -> AsyncIterator[bytes]:
    """Anthropic's events: a block opens when its kind of output starts (thinking, text, a
    tool call), takes deltas, and closes when another kind begins or the message ends."""
    yield sse_event("message_start", {"message": message_head(rt, gen)})
    index, open_kind = -1, None

    def switch(kind: str, start: dict[str, Any]) -> list[bytes]:
        nonlocal index, open_kind
        out = [sse_event("content_block_stop", {"index": index})] if open_kind else []
        index, open_kind = index + 1, kind
        return [*out, sse_event("content_block_start", {"index": index, "content_block": start})]

    try:
        async for _, event in events:
            if isinstance(event, Failed):
                yield sse_event("error", {"error": {"type": "api_error", "message": event.message}})
                return
            if isinstance(event, TokenEvent):
                parts = (event.reasoning, event.text, event.calls)
            elif isinstance(event, Done):
                parts = (event.reasoning_tail, event.finish.tail, event.tail_calls)
            else:
                continue
            thinking, text, calls = parts
            if thinking:
                if open_kind != "thinking":
                    for b in switch("thinking", {"type": "thinking", "thinking": ""}):
                        yield b
                delta = {"type": "thinking_delta", "thinking": thinking}
                yield sse_event("content_block_delta", {"index": index, "delta": delta})
            if text and (open_kind == "text" or text.strip()):
                if open_kind != "text":
                    for b in switch("text", {"type": "text", "text": ""}):
                        yield b
                delta = {"type": "text_delta", "text": text}
                yield sse_event("content_block_delta", {"index": index, "delta": delta})
            for call in calls:
                start = {**tool_use(call), "input": {}}
                for b in switch("tool_use", start):
                    yield b
                delta = {"type": "input_json_delta", "partial_json": call.arguments}
                yield sse_event("content_block_delta", {"index": index, "delta": delta})
            if isinstance(event, Done):
                if open_kind is None:
                    for b in switch("text", {"type": "text", "text": ""}):
                        yield b
                yield sse_event("content_block_stop", {"index": index})
                reason, sequence = stop_reason(event)
                yield sse_event("message_delta", {
                    "delta": {"stop_reason": reason, "stop_sequence": sequence},
                    "usage": {"output_tokens": len(event.tokens)},
                })  # fmt: skip
                yield sse_event("message_stop", {})
    finally:
        await events.aclose()


@router.post("/v1/messages")
async def messages(request: Request) -> Any:
    rt = runtime_of(request)
    req = await parse_body(request, MessagesRequest)
    gen = generation(rt, req)
    events = rt.stream_many([gen])
    if req.stream:
        return event_stream(stream(rt, gen, events))
    (answer,) = await unless_disconnected(request, collect(events, 1))
    return whole(rt, gen, answer)


@router.post("/v1/messages/count_tokens")
async def count_tokens(request: Request) -> dict[str, int]:
    rt = runtime_of(request)
    req = await parse_body(request, CountTokensRequest)
    return {"input_tokens": len(generation(rt, req.as_messages_request()).prompt)}
