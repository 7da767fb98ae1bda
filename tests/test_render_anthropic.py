"""Anthropic's `/v1/messages` rendered from scripted answers: a whole message and its event
stream, reassembled, are the same blocks; thinking, text and tool_use land right; each
`stop_reason`; a failure mid-stream is Anthropic's error event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.scripted_app import (
    FAILING,
    FAILURE,
    TOOLS,
    Case,
    ScriptedApp,
    cases,
    scripted_app,
    sse_events,
)

REASONS = {"eos": "end_turn", "word": "stop_sequence", "limit": "max_tokens", "calls": "tool_use"}
ANTHROPIC_TOOLS = [{"name": t["function"]["name"], "description": t["function"]["description"],
                    "input_schema": t["function"]["parameters"]} for t in TOOLS]  # fmt: skip


@pytest.fixture(scope="module")
def app() -> Iterator[ScriptedApp]:
    with scripted_app() as app:
        yield app


def body(case: Case, stream: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"model": "scripted", "max_tokens": case.limit or 200,
                           "messages": [{"role": "user", "content": "Hi"}],
                           "tools": ANTHROPIC_TOOLS, "stream": stream}  # fmt: skip
    if case.stop:
        out["stop_sequences"] = list(case.stop)
    return out


def reassembled(events: list[tuple[str | None, Any]]) -> dict[str, Any]:
    """The message a client rebuilds from the events."""
    message: dict[str, Any] = {}
    partial: dict[int, str] = {}
    for name, data in events:
        assert name == data["type"]
        if name == "message_start":
            message = data["message"]
        elif name == "content_block_start":
            assert data["index"] == len(message["content"])
            message["content"].append(data["content_block"])
        elif name == "content_block_delta":
            block, delta = message["content"][data["index"]], data["delta"]
            if delta["type"] == "input_json_delta":
                partial[data["index"]] = partial.get(data["index"], "") + delta["partial_json"]
            else:
                key = {"text_delta": "text", "thinking_delta": "thinking"}[delta["type"]]
                block[key] += delta[key]
        elif name == "content_block_stop" and data["index"] in partial:
            message["content"][data["index"]]["input"] = json.loads(partial[data["index"]])
        elif name == "message_delta":
            message.update(data["delta"])
            message["usage"].update(data["usage"])
    assert events[-1][0] == "message_stop"
    return message


def without_ids(message: dict[str, Any]) -> dict[str, Any]:
    blocks = [{k: v for k, v in b.items() if k != "id"} for b in message["content"]]
    return {**{k: v for k, v in message.items() if k != "id"}, "content": blocks}


@cases()
def test_whole_and_streamed_answers_agree(app: ScriptedApp, case: Case) -> None:
    whole = app.post("/v1/messages", body(case, False), case.script).json()
    stream = reassembled(sse_events(app.post("/v1/messages", body(case, True), case.script).text))
    assert without_ids(stream) == without_ids(whole)
    assert whole["stop_reason"] == REASONS[case.ended]
    assert whole["stop_sequence"] == (case.stop[0] if case.ended == "word" else None)
    expected: list[dict[str, Any]] = []
    if case.reasoning:
        expected.append({"type": "thinking", "thinking": case.reasoning, "signature": ""})
    if case.content:
        expected.append({"type": "text", "text": case.content})
    expected += [{"type": "tool_use", "name": name, "input": arguments}
                 for name, arguments in case.calls]  # fmt: skip
    assert without_ids(whole)["content"] == expected


def test_a_generation_failing_mid_stream_ends_with_anthropic_error(app: ScriptedApp) -> None:
    case = Case("failure", "")
    error = {"type": "error", "error": {"type": "api_error", "message": FAILURE}}
    whole = app.post("/v1/messages", body(case, False), FAILING)
    assert whole.status_code == 500 and whole.json() == error
    events = sse_events(app.post("/v1/messages", body(case, True), FAILING).text)
    said = [d["delta"]["text"] for n, d in events if n == "content_block_delta"]
    assert "".join(said) == "Hello world"
    assert events[-1] == ("error", error)
