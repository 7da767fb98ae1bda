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
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request

from endmark.calls import Reasoning
from endmark.channels import ToolCall
from endmark.generation import Done, Failed, GenerationRequest, TokenEvent
from endmark.runtime import Runtime
from endmark.server.dialects.openai_chat import chat_logprobs
from endmark.server.dialects.openai_shared import request_options, sampling_of
from endmark.server.dialects.responses_protocol import ResponsesRequest
from endmark.server.dialects.results import Events, collect, stop_detail
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
    """A response's output items, grown from the generation's pieces in order. Each call to
    `add` returns the stream events that say what changed; whitespace before a tool call is
    held back so that it does not become an empty message (a whole response drops it too)."""

    def __init__(self, logprobs: bool) -> None:
        self.items: list[dict[str, Any]] = []
        self.logprobs = logprobs
        self._open: dict[str, Any] | None = None
        self._space = ""
        self._probs: list[dict[str, Any]] = []

    @property
    def _at(self) -> dict[str, Any]:
        return {"output_index": len(self.items) - 1}

    def _start(self, item: dict[str, Any]) -> list[Ev]:
        out = self._close()
        self.items.append(item)
        self._open = item
        out.append(("response.output_item.added", {**self._at, "item": copy.deepcopy(item)}))
        if item["type"] == "message":
            part = {"item_id": item["id"], **self._at, "content_index": 0}
            out.append(("response.content_part.added", {**part, "part": item["content"][0]}))
            item["content"][0] = copy.deepcopy(item["content"][0])
        return out

    def _close(self, status: str = "completed") -> list[Ev]:
        item, self._open = self._open, None
        if item is None:
            return []
        out: list[Ev] = []
        head = {"item_id": item["id"], **self._at}
        if item["type"] == "reasoning":
            text = item["content"][0]["text"]
            out.append(("response.reasoning_text.done", {**head, "content_index": 0, "text": text}))
        elif item["type"] == "message":
            part = item["content"][0]
            done = {**head, "content_index": 0, "text": part["text"], "logprobs": part["logprobs"]}
            out.append(("response.output_text.done", done))
            out.append(("response.content_part.done", {**head, "content_index": 0, "part": part}))
        item["status"] = status
        out.append(("response.output_item.done", {**self._at, "item": copy.deepcopy(item)}))
        return out

    def add(
        self,
        thinking: str,
        text: str,
        calls: tuple[ToolCall, ...],
        probs: list[dict[str, Any]] | None = None,
    ) -> list[Ev]:
        out: list[Ev] = []
        self._probs += probs or []
        if thinking:
            if self._kind != "reasoning":
                part = {"type": "reasoning_text", "text": ""}
                out += self._start({"id": new_id("rs"), "type": "reasoning", "summary": [],
                                    "content": [part]})  # fmt: skip
            item = self._open
            assert item is not None
            item["content"][0]["text"] += thinking
            delta = {"item_id": item["id"], **self._at, "content_index": 0, "delta": thinking}
            out.append(("response.reasoning_text.delta", delta))
        if text:
            out += self._text(text)
        for call in calls:
            self._space = ""
            item = {"id": new_id("fc"), "type": "function_call", "status": "in_progress",
                    "call_id": call.id, "name": call.name, "arguments": ""}  # fmt: skip
            out += self._start(item)
            item["arguments"] = call.arguments
            head = {"item_id": item["id"], **self._at}
            delta = {**head, "delta": call.arguments}
            done = {**head, "name": call.name, "arguments": call.arguments}
            out.append(("response.function_call_arguments.delta", delta))
            out.append(("response.function_call_arguments.done", done))
            out += self._close()
        return out

    @property
    def _kind(self) -> str | None:
        return self._open["type"] if self._open else None

    def _text(self, text: str, force: bool = False) -> list[Ev]:
        if self._kind != "message" and not (self._space + text).strip() and not force:
            self._space += text
            return []
        out: list[Ev] = []
        if self._kind != "message":
            text, self._space = self._space + text, ""
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            item = {"id": new_id("msg"), "type": "message", "status": "in_progress",
                    "role": "assistant", "content": [part]}  # fmt: skip
            out += self._start(item)
        part = self._open["content"][0]  # type: ignore[index]
        probs, self._probs = (self._probs if self.logprobs else []), []
        part["text"] += text
        part["logprobs"] += probs
        head = {"item_id": self._open["id"], **self._at, "content_index": 0}  # type: ignore[index]
        if text:
            out.append(("response.output_text.delta", {**head, "delta": text, "logprobs": probs}))
        return out

    def finish(self, incomplete: bool) -> list[Ev]:
        """Close the last item; an answer that made nothing else gets its message, even if
        empty or blank. Blank text after a tool call is dropped."""
        out = self._text("", force=True) if not self.items else []
        return out + self._close("incomplete" if incomplete else "completed")


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
        self.gen = self._generation()
        self.wants_logprobs = req.top_logprobs is not None or LOGPROBS in req.include_list
        self.output = OutputItems(self.wants_logprobs)
        self._reasoning_tokens = 0

    def _generation(self) -> GenerationRequest:
        rt, req = self.rt, self.req
        messages = list(self.history)
        if req.instructions:
            messages.insert(0, {"role": "system", "content": req.instructions})
        budget = rt.settings.reasoning_budget
        if req.reasoning is not None and req.reasoning.effort in ("none", "minimal"):
            budget = 0
        top_n = req.top_logprobs or 0
        return rt.chat_request(
            messages,
            sampling_of(rt, req, top_n, top_n > 0 or LOGPROBS in req.include_list),
            tools=req.tool_request(),
            reasoning=Reasoning(rt.settings.reasoning_format, budget),
            **request_options(rt, req, req.n_predict, "POST /v1/responses"),
        )

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

    def count(self, event: TokenEvent) -> None:
        if event.reasoning:
            self._reasoning_tokens += 1

    def finished(self, done: Done) -> tuple[list[Ev], dict[str, Any]]:
        """The events that close the output, and the final body, kept for what follows."""
        incomplete = done.finish.stop_type == "limit"
        events = self.output.finish(incomplete)
        body = self.body("incomplete" if incomplete else "completed", done)
        if self.req.store:
            said = [assistant_message(self.output.items)]
            self.store.put(self.id, Stored(body, [*self.history, *said]))
        return events, body


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
    yield sse_event("response.created", {"response": resp.body("in_progress")}, seq)
    yield sse_event("response.in_progress", {"response": resp.body("in_progress")}, seq)
    try:
        async for _, event in events:
            if isinstance(event, Failed):
                body = resp.body("failed", error=event.message)
                yield sse_event("response.failed", {"response": body}, seq)
                return
            if isinstance(event, TokenEvent):
                resp.count(event)
                probs = resp.probs([event])
                found = resp.output.add(event.reasoning, event.text, event.calls, probs)
            elif isinstance(event, Done):
                found = resp.output.add(event.reasoning_tail, event.finish.tail, event.tail_calls)
                closing, body = resp.finished(event)
                found += closing
                found.append((f"response.{body['status']}", {"response": body}))
            else:
                continue
            for kind, data in found:
                yield sse_event(kind, data, seq)
    finally:
        await events.aclose()


@router.post("/v1/responses")
async def create(request: Request) -> Any:
    rt = runtime_of(request)
    req = await parse_body(request, ResponsesRequest)
    resp = Response(rt, req, store_of(request))
    events = rt.stream_many([resp.gen])
    if req.stream:
        return event_stream(stream(resp, events))
    (answer,) = await unless_disconnected(request, collect(events, 1))
    assert answer.done is not None
    for e in answer.tokens:
        resp.count(e)
    probs = resp.probs(answer.tokens)
    resp.output.add("".join(answer.reasoning), answer.content, answer.calls, probs)
    return resp.finished(answer.done)[1]


@router.get("/v1/responses/{response_id}")
async def retrieve(request: Request, response_id: str) -> dict[str, Any]:
    return store_of(request).get(response_id).body


@router.delete("/v1/responses/{response_id}")
async def delete(request: Request, response_id: str) -> dict[str, Any]:
    store_of(request).delete(response_id)
    return {"id": response_id, "object": "response.deleted", "deleted": True}
