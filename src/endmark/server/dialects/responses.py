"""OpenAI's Responses API: `POST /v1/responses` (whole or streamed), `GET` and `DELETE
/v1/responses/{id}`, for the OpenAI Agents SDK's default model and other Responses clients.

Thinking, text and tool calls come out as `reasoning`, `message` and `function_call` output
items, built by one `OutputItems` for both a whole response and a stream, so the two cannot
differ. A length stop is `status: "incomplete"` with `incomplete_details`. Responses are kept
in a bounded in-memory store for `previous_response_id`; once one is gone, that is a 404.
"""

from __future__ import annotations

import copy
import itertools
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request

from endmark.delta import Delta
from endmark.generation import Done, Event, Failed, GenerationRequest, TokenEvent
from endmark.runtime import Runtime
from endmark.server.dialects.blocks import Block, BlockTracker, Change
from endmark.server.dialects.openai_chat import chat_logprobs
from endmark.server.dialects.responses_protocol import RESPONSES, ResponsesRequest
from endmark.server.dialects.results import Events, Follow, collect, stop_detail
from endmark.server.http.disconnect import unless_disconnected
from endmark.server.http.errors import ApiError, parse_body
from endmark.server.http.state import runtime_of
from endmark.server.http.stream import event_stream, sse

router = APIRouter()

STORED_RESPONSES = 512  # how many responses `previous_response_id` can reach back to
LOGPROBS = "message.output_text.logprobs"

Ev = tuple[str, dict[str, Any]]


@dataclass
class Stored:
    body: dict[str, Any]
    history: list[dict[str, Any]]  # the conversation so far, as chat-template messages


class ResponseStore:
    """The last `size` responses, oldest dropped first: enough for an agent's loop, and a
    server's memory cannot grow without bound."""

    def __init__(self, size: int = STORED_RESPONSES) -> None:
        self.size = size
        self._kept: OrderedDict[str, Stored] = OrderedDict()

    def put(self, rid: str, stored: Stored) -> None:
        self._kept[rid] = stored
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)

    def get(self, rid: str, param: str | None = None) -> Stored:
        if rid not in self._kept:
            raise ApiError(404, f"Response with id '{rid}' not found.", param)
        return self._kept[rid]

    def delete(self, rid: str) -> None:
        self.get(rid)
        del self._kept[rid]


def store_of(request: Request) -> ResponseStore:
    return request.app.state.responses  # type: ignore[no-any-return]


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class OutputItems:
    """A response's output items, one per block of the answer (`BlockTracker`). Each call to
    `add` returns the stream events that say what changed; a whole response is built by the
    same calls, its events dropped, so the two cannot differ."""

    def __init__(self, logprobs: bool) -> None:
        self.items: list[dict[str, Any]] = []
        self.logprobs = logprobs
        self.blocks = BlockTracker()
        self._probs: list[dict[str, Any]] = []

    def add(self, delta: Delta, probs: list[dict[str, Any]] | None = None) -> list[Ev]:
        self._probs += probs or []
        return self._render(self.blocks.add(delta), "completed")

    def finish(self, incomplete: bool) -> list[Ev]:
        """Close the last item (`incomplete` if the limit cut it); an answer that made no text
        and no call gets its message, even if empty or blank."""
        return self._render(self.blocks.finish(), "incomplete" if incomplete else "completed")

    def _render(self, changes: list[Change], last_status: str) -> list[Ev]:
        out: list[Ev] = []
        for change in changes:
            block = change.block
            if change.what == "open":
                out += self._start(block)
            elif change.what == "grow":
                out += self._grow(block, change.text)
            else:
                last = block.index == len(self.items) - 1
                out += self._close(block, last_status if last else "completed")
        return out

    def _start(self, block: Block) -> list[Ev]:
        if block.call is not None:
            item = {"id": new_id("fc"), "type": "function_call", "status": "in_progress",
                    "call_id": block.call.id, "name": block.call.name, "arguments": ""}  # fmt: skip
        elif block.kind == "reasoning":
            item = {"id": new_id("rs"), "type": "reasoning", "summary": [],
                    "content": [{"type": "reasoning_text", "text": ""}]}  # fmt: skip
        else:
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            item = {"id": new_id("msg"), "type": "message", "status": "in_progress",
                    "role": "assistant", "content": [part]}  # fmt: skip
        self.items.append(item)
        at = {"output_index": block.index}
        out: list[Ev] = [("response.output_item.added", {**at, "item": copy.deepcopy(item)})]
        if item["type"] == "message":
            part = {"item_id": item["id"], **at, "content_index": 0}
            out.append(("response.content_part.added", {**part, "part": item["content"][0]}))
            item["content"][0] = copy.deepcopy(item["content"][0])
        return out

    def _grow(self, block: Block, text: str) -> list[Ev]:
        item = self.items[block.index]
        head = {"item_id": item["id"], "output_index": block.index}
        if block.call is not None:
            item["arguments"] = text
            done = {**head, "name": block.call.name, "arguments": text}
            return [("response.function_call_arguments.delta", {**head, "delta": text}),
                    ("response.function_call_arguments.done", done)]  # fmt: skip
        part = item["content"][0]
        part["text"] += text
        if block.kind == "reasoning":
            delta = {**head, "content_index": 0, "delta": text}
            return [("response.reasoning_text.delta", delta)]
        probs, self._probs = (self._probs if self.logprobs else []), []
        part["logprobs"] += probs
        delta = {**head, "content_index": 0, "delta": text, "logprobs": probs}
        return [("response.output_text.delta", delta)]

    def _close(self, block: Block, status: str) -> list[Ev]:
        item = self.items[block.index]
        out: list[Ev] = []
        head = {"item_id": item["id"], "output_index": block.index, "content_index": 0}
        if item["type"] == "reasoning":
            out.append(("response.reasoning_text.done", {**head, "text": block.text}))
        elif item["type"] == "message":
            part = item["content"][0]
            done = {**head, "text": part["text"], "logprobs": part["logprobs"]}
            out.append(("response.output_text.done", done))
            out.append(("response.content_part.done", {**head, "part": part}))
        item["status"] = "incomplete" if block.call is not None and block.call.cut else status
        at = {"output_index": block.index}
        out.append(("response.output_item.done", {**at, "item": copy.deepcopy(item)}))
        return out


class Response:
    """One response being made: its request, its generation, and how it is written out."""

    def __init__(self, rt: Runtime, req: ResponsesRequest, store: ResponseStore) -> None:
        self.rt, self.req, self.store = rt, req, store
        self.id = new_id("resp")
        self.created_at = int(time.time())
        prior = store.get(req.previous_response_id, "previous_response_id").history \
            if req.previous_response_id else []  # fmt: skip
        try:
            self.history = [*prior, *req.input_messages()]
        except ValueError as exc:
            raise ApiError(400, str(exc), "input") from None
        self.gen: GenerationRequest  # made by `prepare`
        self.wants_logprobs = req.top_logprobs is not None or LOGPROBS in req.include_list
        self.output = OutputItems(self.wants_logprobs)
        self._reasoning_tokens = 0

    async def prepare(self) -> None:
        """Its generation, prepared off the event loop (a constraint may take a while)."""
        self.gen = (await self.rt.prepare_async(self.req.to_spec(self.history)))[0]

    def probs(self, tokens: list[TokenEvent]) -> list[dict[str, Any]]:
        if not self.wants_logprobs:
            return []
        return chat_logprobs(self.rt, tokens, self.req.top_logprobs or 0)["content"]  # type: ignore[no-any-return]

    def body(
        self, status: str, done: Done | None = None, error: str | None = None
    ) -> dict[str, Any]:
        """The response object: OpenAI's fields, the output so far, and once it is done the
        usage and endmark's account of the end."""
        req = self.req
        fmt = req.text.format if req.text and req.text.format else None
        choice = req.tool_choice or "auto"
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        out: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": {"code": "server_error", "message": error} if error else None,
            "incomplete_details": incomplete,
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "model": self.rt.alias,
            "output": copy.deepcopy(self.output.items),
            "parallel_tool_calls": req.parallel_tool_calls,
            "previous_response_id": req.previous_response_id,
            "reasoning": req.reasoning.model_dump() if req.reasoning else {"effort": None},
            "store": req.store,
            "temperature": req.temperature,
            "text": {"format": fmt.model_dump(by_alias=True, exclude_none=True)
                     if fmt else {"type": "text"}},
            "tool_choice": choice if isinstance(choice, str) else choice.model_dump(),
            "tools": [t.model_dump() for t in req.tools or []],
            "top_p": req.top_p,
            "truncation": "disabled",
            "usage": None,
            "user": req.user,
            "metadata": req.metadata or {},
        }  # fmt: skip
        if done is not None:
            out["usage"] = usage(self.gen, done, self._reasoning_tokens)
            out["endmark"] = stop_detail(done)
        return out

    def take(self, event: Event, delta: Delta) -> list[Ev]:
        """What one event adds to the output, as stream events; a whole response takes the
        same events and keeps only the last one's body."""
        if isinstance(event, TokenEvent):
            self._reasoning_tokens += bool(event.reasoning)
            return self.output.add(delta, self.probs([event]))
        if not isinstance(event, Done):
            return []
        found = self.output.add(delta)
        status = RESPONSES.finish.of(event)
        found += self.output.finish(incomplete=status == "incomplete")
        body = self.body(status, event)
        if self.req.store:
            said = [assistant_message(self.output.items)]
            self.store.put(self.id, Stored(body, [*self.history, *said]))
        return [*found, (f"response.{status}", {"response": body})]


def usage(gen: GenerationRequest, done: Done, reasoning: int) -> dict[str, Any]:
    output = len(done.tokens)
    return {
        "input_tokens": len(gen.prompt),
        "input_tokens_details": {"cached_tokens": done.timings.cached_n},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": len(gen.prompt) + output,
    }


def assistant_message(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The output as the assistant's turn in the history `previous_response_id` continues."""
    text = "".join(i["content"][0]["text"] for i in items if i["type"] == "message")
    calls = [
        {"id": i["call_id"], "type": "function",
         "function": {"name": i["name"], "arguments": json.loads(i["arguments"])}}
        for i in items if i["type"] == "function_call"
    ]  # fmt: skip
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = calls
    return message


def sse_event(kind: str, data: dict[str, Any], seq: itertools.count[int]) -> bytes:
    return sse({"type": kind, "sequence_number": next(seq), **data}, kind)


async def stream(resp: Response, events: Events) -> AsyncIterator[bytes]:
    seq = itertools.count()
    async with aclosing(Follow(events, 1)) as steps:
        yield sse_event("response.created", {"response": resp.body("in_progress")}, seq)
        yield sse_event("response.in_progress", {"response": resp.body("in_progress")}, seq)
        async for _, event, delta in steps:
            if isinstance(event, Failed):
                yield RESPONSES.failure(resp.rt.alias, event.message)
                body = resp.body("failed", error=event.message)
                yield sse_event("response.failed", {"response": body}, seq)
                return
            for kind, data in resp.take(event, delta):
                yield sse_event(kind, data, seq)


@router.post("/v1/responses")
async def create(request: Request) -> Any:
    rt = runtime_of(request)
    req = await parse_body(request, ResponsesRequest)
    resp = Response(rt, req, store_of(request))
    await resp.prepare()
    events = rt.stream_many([resp.gen], whole=not req.stream)
    if req.stream:
        return event_stream(stream(resp, events))
    (answer,) = await unless_disconnected(request, collect(events, 1))
    assert answer.done is not None
    for token in answer.tokens:
        resp.take(token, token.delta)
    return resp.take(answer.done, answer.done.delta)[-1][1]["response"]


@router.post("/v1/responses/input_tokens")
async def input_tokens(request: Request) -> dict[str, Any]:
    """OpenAI's input-token count: the request prepared as `/v1/responses` prepares it, its
    prompt counted, nothing generated."""
    rt = runtime_of(request)
    req = await parse_body(request, ResponsesRequest)
    resp = Response(rt, req, store_of(request))
    (prepared,) = await rt.prepare_async(req.to_spec(resp.history), counting=True)
    return {"object": "response.input_tokens", "input_tokens": len(prepared.prompt)}


@router.get("/v1/responses/{response_id}")
async def retrieve(request: Request, response_id: str) -> dict[str, Any]:
    return store_of(request).get(response_id).body


@router.delete("/v1/responses/{response_id}")
async def delete(request: Request, response_id: str) -> dict[str, Any]:
    store_of(request).delete(response_id)
    return {"id": response_id, "object": "response.deleted", "deleted": True}
