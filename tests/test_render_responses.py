"""The Responses API rendered from scripted answers: a whole response and its event stream,
reassembled, hold the same output items; reasoning, message and function_call items land
right; `completed` or `incomplete`; a failure mid-stream."""

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

STATUS = {"eos": "completed", "word": "completed", "limit": "incomplete", "calls": "completed"}
FUNCTIONS = [{"type": "function", **t["function"]} for t in TOOLS]
VARYING = ("id", "created_at", "timings", "usage", "endmark", "call_id")


@pytest.fixture(scope="module")
def app() -> Iterator[ScriptedApp]:
    with scripted_app() as app:
        yield app


def body(case: Case, stream: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"model": "scripted", "input": "Hi", "tools": FUNCTIONS,
                           "stream": stream, "store": False}  # fmt: skip
    if case.stop:
        out["stop"] = list(case.stop)
    if case.limit is not None:
        out["max_output_tokens"] = case.limit
    return out


def reassembled(events: list[tuple[str | None, Any]]) -> dict[str, Any]:
    """The response a client rebuilds from the events: each item as added, grown by the
    deltas, checked against its own `done` event; the final event's status and fields."""
    items: list[dict[str, Any]] = []
    for name, data in events:
        assert name == data["type"] and data["sequence_number"] == events.index((name, data))
        if name == "response.output_item.added":
            assert data["output_index"] == len(items)
            items.append(data["item"])
        elif name in ("response.output_text.delta", "response.reasoning_text.delta"):
            items[data["output_index"]]["content"][0]["text"] += data["delta"]
        elif name == "response.function_call_arguments.delta":
            items[data["output_index"]]["arguments"] += data["delta"]
        elif name == "response.output_item.done":
            item = items[data["output_index"]]
            item["status"] = data["item"]["status"]
            assert item == data["item"]
    final = events[-1][1]["response"]
    return {**final, "output": items}


def without_varying(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_varying(v) for k, v in value.items() if k not in VARYING}
    if isinstance(value, list):
        return [without_varying(v) for v in value]
    return value


@cases()
def test_whole_and_streamed_answers_agree(app: ScriptedApp, case: Case) -> None:
    whole = app.post("/v1/responses", body(case, False), case.script).json()
    events = sse_events(app.post("/v1/responses", body(case, True), case.script).text)
    assert without_varying(reassembled(events)) == without_varying(whole)
    assert events[-1][0] == f"response.{whole['status']}"
    assert whole["status"] == STATUS[case.ended]
    kinds = {i["type"]: i for i in whole["output"]}
    if case.reasoning:
        assert kinds["reasoning"]["content"][0]["text"] == case.reasoning
    assert ("message" in kinds) == bool(case.content)
    if case.content:
        assert kinds["message"]["content"][0]["text"] == case.content
    calls = [(i["name"], json.loads(i["arguments"])) for i in whole["output"]
             if i["type"] == "function_call"]  # fmt: skip
    assert calls == list(case.calls)
    incomplete = {"reason": "max_output_tokens"} if case.ended == "limit" else None
    assert whole["incomplete_details"] == incomplete
    assert whole["output"][-1]["status"] == whole["status"]


def test_a_generation_failing_mid_stream_ends_with_responses_error(app: ScriptedApp) -> None:
    case = Case("failure", "")
    whole = app.post("/v1/responses", body(case, False), FAILING)
    assert whole.status_code == 500 and whole.json()["error"]["message"] == FAILURE
    events = sse_events(app.post("/v1/responses", body(case, True), FAILING).text)
    said = [d["delta"] for n, d in events if n == "response.output_text.delta"]
    assert "".join(said) == "Hello world"
    error = {"type": "error", "code": "server_error", "message": FAILURE, "param": None}
    assert events[-2] == ("error", error)
    name, failed = events[-1]
    assert name == "response.failed" and failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": "server_error", "message": FAILURE}
