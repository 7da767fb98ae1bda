"""`/v1/chat/completions` rendered from scripted answers: a whole message and its stream,
reassembled, are the same; content, reasoning and calls land in their fields; finish reasons."""

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

REASONS = {"eos": "stop", "word": "stop", "limit": "length", "calls": "tool_calls"}


@pytest.fixture(scope="module")
def app() -> Iterator[ScriptedApp]:
    with scripted_app() as app:
        yield app


def body(case: Case, stream: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"messages": [{"role": "user", "content": "Hi"}], "tools": TOOLS,
                           "stream": stream}  # fmt: skip
    if case.stop:
        out["stop"] = list(case.stop)
    if case.limit is not None:
        out["max_tokens"] = case.limit
    return out


def reassembled(events: list[tuple[str | None, Any]]) -> tuple[dict[str, Any], str]:
    """The message a client rebuilds from the chunks, and the finish reason."""
    message: dict[str, Any] = {"role": "assistant"}
    content, reasoning, calls, reason = [], [], {}, None
    for _, data in events[:-1]:
        (choice,) = data["choices"]
        delta = choice["delta"]
        content += [delta["content"]] if delta.get("content") else []
        reasoning += [delta["reasoning_content"]] if "reasoning_content" in delta else []
        for call in delta.get("tool_calls", []):
            calls[call.pop("index")] = call
        reason = choice["finish_reason"] or reason
    assert events[-1] == (None, "[DONE]")
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    message["content"] = "".join(content) if content or not calls else None
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    assert reason is not None
    return message, reason


def without_ids(message: dict[str, Any]) -> dict[str, Any]:
    calls = [{k: v for k, v in c.items() if k != "id"} for c in message.get("tool_calls", [])]
    return {**message, **({"tool_calls": calls} if calls else {})}


@cases()
def test_whole_and_streamed_answers_agree(app: ScriptedApp, case: Case) -> None:
    whole = app.post("/v1/chat/completions", body(case, False), case.script).json()
    (choice,) = whole["choices"]
    stream = app.post("/v1/chat/completions", body(case, True), case.script)
    message, reason = reassembled(sse_events(stream.text))
    assert without_ids(message) == without_ids(choice["message"])
    assert reason == choice["finish_reason"] == REASONS[case.ended]
    got = choice["message"]
    assert (got["content"] or "") == case.content
    assert got.get("reasoning_content", "") == case.reasoning
    calls = [(c["function"]["name"], json.loads(c["function"]["arguments"]))
             for c in got.get("tool_calls", [])]  # fmt: skip
    assert calls == list(case.calls)
    assert choice["endmark"]["stop_type"] == ("eos" if case.ended == "calls" else case.ended)
    if case.ended == "word":
        assert choice["endmark"]["stopping_word"] == case.stop[0]


def test_a_generation_failing_mid_stream_ends_with_openai_error(app: ScriptedApp) -> None:
    case = Case("failure", "")
    whole = app.post("/v1/chat/completions", body(case, False), FAILING)
    assert whole.status_code == 500
    assert whole.json()["error"] == {"message": FAILURE, "type": "server_error", "param": None,
                                     "code": None}  # fmt: skip
    events = sse_events(app.post("/v1/chat/completions", body(case, True), FAILING).text)
    said = "".join(d["choices"][0]["delta"].get("content") or "" for _, d in events[1:-2])
    assert said == "Hello world"
    assert events[-2] == (None, {"error": {"message": FAILURE, "type": "server_error"}})
    assert events[-1] == (None, "[DONE]")
