"""Every generating dialect, read back to one shape: a request asked the same way in each, and
a reader of its whole answer and of its stream, each giving the text, reasoning, calls and
finish they carry (`Reading`). A streamed answer and a whole one of the same seed must read
the same (issue 29, item 6).

The stream readers accumulate what a client would: deltas, joined; a stream's own summary (a
final response, a `done` item) is checked against its deltas on the way. Calls are compared by
name and parsed arguments; their ids are read too but not compared, since endmark makes a
call's id afresh for each response, as OpenAI does (a stream reader checks that each call
keeps one id throughout its stream).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.scripted_app import TOOLS, ndjson_lines, sse_events

Call = tuple[str, Any]  # a call's name and its arguments, parsed
# endmark's account of the end, less what differs between two runs of one answer
VARYING = ("timings", "tokens_cached")


@dataclass(frozen=True)
class Ask:
    """One request, as every dialect can ask it: `text` is the user's message (a chat
    dialect) or the prompt (a completion dialect); `tools` offers `TOOLS` with
    `tool_choice` (auto or required)."""

    text: str
    tools: bool = False
    tool_choice: str = "auto"
    stop: tuple[str, ...] = ()
    max_tokens: int | None = None
    seed: int = 0
    temperature: float = 0.8
    extra: Mapping[str, Any] = field(default_factory=dict)  # more fields, as they are


@dataclass(frozen=True)
class Reading:
    """What an answer carries: its text, reasoning, calls, and how it finished (the
    dialect's own words and endmark's stop detail, where the dialect has them). `ids`: the
    calls' ids, random per response (not compared)."""

    text: str
    reasoning: str
    calls: tuple[Call, ...]
    finish: Mapping[str, Any]
    ids: tuple[str, ...] = field(default=(), compare=False)


def detail(endmark: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """endmark's stop detail, less what two runs of one answer may differ in."""
    if endmark is None:
        return None
    out = {k: v for k, v in endmark.items() if k not in VARYING}
    if "tool_call_errors" in out:  # each names its call by id, new in every answer
        out["tool_call_errors"] = [{**e, "id": None} for e in out["tool_call_errors"]]
    return out


def arguments(text: str) -> Any:
    return json.loads(text)


# -- native: /completion ---------------------------------------------------------------------

NATIVE_ENDING = ("stop_type", "stopping_word", "stopping_token", "tokens_predicted",
                 "truncated", "grammar_complete", "truncated_json_closed")  # fmt: skip


def native_body(ask: Ask, stream: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"prompt": ask.text, "stream": stream, "seed": ask.seed,
                           "temperature": ask.temperature, "stop": list(ask.stop),
                           **ask.extra}  # fmt: skip
    if ask.max_tokens is not None:
        out["n_predict"] = ask.max_tokens
    return out


def native_whole(body: dict[str, Any]) -> Reading:
    return Reading(body["content"], "", (), {k: body[k] for k in NATIVE_ENDING})


def native_stream(wire: str) -> Reading:
    chunks = [data for _, data in sse_events(wire)]
    assert [c["stop"] for c in chunks] == [False] * (len(chunks) - 1) + [True]
    text = "".join(c["content"] for c in chunks)
    return Reading(text, "", (), {k: chunks[-1][k] for k in NATIVE_ENDING})


# -- OpenAI: /v1/chat/completions, /v1/completions -------------------------------------------


def openai_fields(ask: Ask, stream: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"model": "any", "stream": stream, "seed": ask.seed,
                           "temperature": ask.temperature, **ask.extra}  # fmt: skip
    if ask.stop:
        out["stop"] = list(ask.stop)
    if ask.max_tokens is not None:
        out["max_tokens"] = ask.max_tokens
    return out


def chat_body(ask: Ask, stream: bool) -> dict[str, Any]:
    out = {**openai_fields(ask, stream), "messages": [{"role": "user", "content": ask.text}]}
    if ask.tools:
        out.update(tools=TOOLS, tool_choice=ask.tool_choice)
    return out


def openai_finish(choice: Mapping[str, Any]) -> dict[str, Any]:
    return {"finish_reason": choice["finish_reason"], "endmark": detail(choice.get("endmark"))}


def chat_whole(body: dict[str, Any]) -> Reading:
    (choice,) = body["choices"]
    message = choice["message"]
    calls = message.get("tool_calls") or []
    return Reading(
        message["content"] or "",
        message.get("reasoning_content") or "",
        tuple((c["function"]["name"], arguments(c["function"]["arguments"])) for c in calls),
        openai_finish(choice),
        tuple(c["id"] for c in calls),
    )


def chat_stream(wire: str) -> Reading:
    events = sse_events(wire)
    assert events[-1] == (None, "[DONE]")
    text, reasoning, finish = [], [], None
    calls: dict[int, dict[str, str]] = {}
    for _, data in events[:-1]:
        for choice in data["choices"]:
            delta = choice["delta"]
            text.append(delta.get("content") or "")
            reasoning.append(delta.get("reasoning_content") or "")
            for part in delta.get("tool_calls") or []:
                call = calls.setdefault(part["index"], {"id": "", "name": "", "arguments": ""})
                if part.get("id"):
                    assert call["id"] in ("", part["id"]), "a call changed its id mid-stream"
                    call["id"] = part["id"]
                function = part.get("function") or {}
                call["name"] += function.get("name") or ""
                call["arguments"] += function.get("arguments") or ""
            if choice["finish_reason"] is not None:
                assert finish is None, "two chunks finished the choice"
                finish = openai_finish(choice)
    assert finish is not None, "no chunk finished the choice"
    found = [calls[i] for i in sorted(calls)]
    return Reading(
        "".join(text),
        "".join(reasoning),
        tuple((c["name"], arguments(c["arguments"])) for c in found),
        finish,
        tuple(c["id"] for c in found),
    )


def completions_body(ask: Ask, stream: bool) -> dict[str, Any]:
    return {**openai_fields(ask, stream), "prompt": ask.text}


def completions_whole(body: dict[str, Any]) -> Reading:
    (choice,) = body["choices"]
    return Reading(choice["text"], "", (), openai_finish(choice))


def completions_stream(wire: str) -> Reading:
    events = sse_events(wire)
    assert events[-1] == (None, "[DONE]")
    choices = [c for _, data in events[:-1] for c in data["choices"]]
    finishing = [c for c in choices if c["finish_reason"] is not None]
    assert len(finishing) == 1 and finishing[0] is choices[-1]
    return Reading("".join(c["text"] for c in choices), "", (), openai_finish(choices[-1]))


# -- OpenAI Responses: /v1/responses ---------------------------------------------------------


def responses_body(ask: Ask, stream: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"model": "any", "input": ask.text, "stream": stream, "store": False,
                           "seed": ask.seed, "temperature": ask.temperature,
                           **ask.extra}  # fmt: skip
    if ask.stop:
        out["stop"] = list(ask.stop)
    if ask.max_tokens is not None:
        out["max_output_tokens"] = ask.max_tokens
    if ask.tools:
        out["tools"] = [{"type": "function", **t["function"]} for t in TOOLS]
        out["tool_choice"] = ask.tool_choice
    return out


def responses_reading(response: Mapping[str, Any], items: list[dict[str, Any]]) -> Reading:
    """A response's output items read; its finish is its status, the reason it is incomplete,
    each item's status, and endmark's detail."""
    messages = [i for i in items if i["type"] == "message"]
    thoughts = [i for i in items if i["type"] == "reasoning"]
    calls = [i for i in items if i["type"] == "function_call"]
    finish = {
        "status": response["status"],
        "incomplete_details": response["incomplete_details"],
        "items": [(i["type"], i.get("status")) for i in items],
        "output_tokens": response["usage"]["output_tokens"],
        "endmark": detail(response.get("endmark")),
    }
    return Reading(
        "".join(part["text"] for m in messages for part in m["content"]),
        "".join(part["text"] for t in thoughts for part in t["content"]),
        tuple((c["name"], arguments(c["arguments"])) for c in calls),
        finish,
        tuple(c["call_id"] for c in calls),
    )


def responses_whole(body: dict[str, Any]) -> Reading:
    return responses_reading(body, body["output"])


def responses_stream(wire: str) -> Reading:
    """Each item as added, grown by its deltas, and checked against its `done` event; the
    last event's response must hold the same items."""
    events = sse_events(wire)
    items: list[dict[str, Any]] = []
    for number, (name, data) in enumerate(events):
        assert name == data["type"] and data["sequence_number"] == number
        if name == "response.output_item.added":
            assert data["output_index"] == len(items)
            items.append(json.loads(json.dumps(data["item"])))
        elif name in ("response.output_text.delta", "response.reasoning_text.delta"):
            items[data["output_index"]]["content"][0]["text"] += data["delta"]
        elif name == "response.function_call_arguments.delta":
            items[data["output_index"]]["arguments"] += data["delta"]
        elif name == "response.output_item.done":
            item = items[data["output_index"]]
            item["status"] = data["item"]["status"]
            assert item == data["item"], "an item's deltas do not add up to its done event"
    name, last = events[-1]
    response = last["response"]
    assert name == f"response.{response['status']}"
    assert response["output"] == items, "the final response's output is not its deltas'"
    return responses_reading(response, items)


# -- Anthropic: /v1/messages -----------------------------------------------------------------


def messages_body(ask: Ask, stream: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"model": "any", "max_tokens": ask.max_tokens or 4096,
                           "messages": [{"role": "user", "content": ask.text}],
                           "stream": stream, "seed": ask.seed,
                           "temperature": min(ask.temperature, 1.0), **ask.extra}  # fmt: skip
    if ask.stop:
        out["stop_sequences"] = list(ask.stop)
    if ask.tools:
        out["tools"] = [{"name": t["function"]["name"], "input_schema": t["function"]["parameters"],
                         "description": t["function"]["description"]} for t in TOOLS]  # fmt: skip
        out["tool_choice"] = {"type": "any" if ask.tool_choice == "required" else "auto"}
    return out


def messages_reading(message: Mapping[str, Any]) -> Reading:
    blocks = message["content"]
    calls = [b for b in blocks if b["type"] == "tool_use"]
    return Reading(
        "".join(b["text"] for b in blocks if b["type"] == "text"),
        "".join(b["thinking"] for b in blocks if b["type"] == "thinking"),
        tuple((c["name"], c["input"]) for c in calls),
        {
            "stop_reason": message["stop_reason"],
            "stop_sequence": message["stop_sequence"],
            "blocks": [b["type"] for b in blocks],
        },  # fmt: skip
        tuple(c["id"] for c in calls),
    )


def messages_whole(body: dict[str, Any]) -> Reading:
    return messages_reading(body)


def messages_stream(wire: str) -> Reading:
    events = sse_events(wire)
    message: dict[str, Any] = {}
    partial: dict[int, str] = {}
    open_block: int | None = None
    for name, data in events:
        assert name == data["type"]
        if name == "message_start":
            message = data["message"]
        elif name == "content_block_start":
            assert open_block is None and data["index"] == len(message["content"])
            open_block = data["index"]
            message["content"].append(data["content_block"])
        elif name == "content_block_delta":
            assert data["index"] == open_block
            block, delta = message["content"][data["index"]], data["delta"]
            if delta["type"] == "input_json_delta":
                partial[data["index"]] = partial.get(data["index"], "") + delta["partial_json"]
            else:
                key = {"text_delta": "text", "thinking_delta": "thinking"}[delta["type"]]
                block[key] += delta[key]
        elif name == "content_block_stop":
            assert data["index"] == open_block
            open_block = None
            if data["index"] in partial:
                message["content"][data["index"]]["input"] = arguments(partial[data["index"]])
        elif name == "message_delta":
            message.update(data["delta"])
            message["usage"].update(data["usage"])
    assert events[-1][0] == "message_stop" and open_block is None
    return messages_reading(message)


# -- Ollama: /api/chat, /api/generate --------------------------------------------------------


def ollama_options(ask: Ask) -> dict[str, Any]:
    options: dict[str, Any] = {"seed": ask.seed, "temperature": ask.temperature}
    if ask.stop:
        options["stop"] = list(ask.stop)
    if ask.max_tokens is not None:
        options["num_predict"] = ask.max_tokens
    return options


def ollama_chat_body(ask: Ask, stream: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"model": "any", "messages": [{"role": "user", "content": ask.text}],
                           "stream": stream, "options": ollama_options(ask),
                           **ask.extra}  # fmt: skip
    if ask.tools:
        out["tools"] = TOOLS
    return out


def ollama_generate_body(ask: Ask, stream: bool) -> dict[str, Any]:
    return {"model": "any", "prompt": ask.text, "stream": stream,
            "options": ollama_options(ask), **ask.extra}  # fmt: skip


def ollama_reading(parts: list[Mapping[str, Any]], last: Mapping[str, Any], key: str) -> Reading:
    calls = [c["function"] for p in parts for c in p.get("tool_calls") or []]
    return Reading(
        "".join(p[key] for p in parts),
        "".join(p.get("thinking") or "" for p in parts),
        tuple((c["name"], c["arguments"]) for c in calls),
        {"done_reason": last["done_reason"], "eval_count": last["eval_count"]},
    )


def ollama_chat_whole(body: dict[str, Any]) -> Reading:
    return ollama_reading([body["message"]], body, "content")


def ollama_chat_stream(wire: str) -> Reading:
    lines = ndjson_lines(wire)
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    return ollama_reading([line["message"] for line in lines], lines[-1], "content")


def ollama_generate_whole(body: dict[str, Any]) -> Reading:
    return ollama_reading([body], body, "response")


def ollama_generate_stream(wire: str) -> Reading:
    lines = ndjson_lines(wire)
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    return ollama_reading(lines, lines[-1], "response")


# -- the table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DialectReader:
    """How one dialect is asked (`body(ask, stream)` for `path`) and read back. `chat`: it
    takes messages (a chat template, thinking); `calls`: it can offer tools. `reason` is the
    finish's key that says why it ended, `words` how it says each end (`eos`, `word`,
    `limit`, `calls`)."""

    name: str
    path: str
    body: Callable[[Ask, bool], dict[str, Any]]
    whole: Callable[[dict[str, Any]], Reading]
    stream: Callable[[str], Reading]
    chat: bool
    calls: bool
    reason: str
    words: Mapping[str, str]


def ends(eos: str, word: str, limit: str, calls: str) -> dict[str, str]:
    return {"eos": eos, "word": word, "limit": limit, "calls": calls}


OPENAI_ENDS = ends("stop", "stop", "length", "tool_calls")
OLLAMA_ENDS = ends("stop", "stop", "length", "stop")
DIALECTS = (
    DialectReader("native", "/completion", native_body, native_whole, native_stream,
                  chat=False, calls=False, reason="stop_type",
                  words=ends("eos", "word", "limit", "eos")),
    DialectReader("openai-chat", "/v1/chat/completions", chat_body, chat_whole, chat_stream,
                  chat=True, calls=True, reason="finish_reason", words=OPENAI_ENDS),
    DialectReader("openai-completions", "/v1/completions", completions_body, completions_whole,
                  completions_stream, chat=False, calls=False, reason="finish_reason",
                  words=OPENAI_ENDS),
    DialectReader("responses", "/v1/responses", responses_body, responses_whole,
                  responses_stream, chat=True, calls=True, reason="status",
                  words=ends("completed", "completed", "incomplete", "completed")),
    DialectReader("anthropic", "/v1/messages", messages_body, messages_whole, messages_stream,
                  chat=True, calls=True, reason="stop_reason",
                  words=ends("end_turn", "stop_sequence", "max_tokens", "tool_use")),
    DialectReader("ollama-chat", "/api/chat", ollama_chat_body, ollama_chat_whole,
                  ollama_chat_stream, chat=True, calls=True, reason="done_reason",
                  words=OLLAMA_ENDS),
    DialectReader("ollama-generate", "/api/generate", ollama_generate_body,
                  ollama_generate_whole, ollama_generate_stream, chat=True, calls=False,
                  reason="done_reason", words=OLLAMA_ENDS),
)  # fmt: skip
