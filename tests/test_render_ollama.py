"""Ollama's `/api/chat` and `/api/generate` rendered from scripted answers: a whole answer and
its NDJSON lines, joined, are the same; content, thinking and tool_calls land right; each
`done_reason`; a failure mid-stream is Ollama's error line."""

from __future__ import annotations

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
    ndjson_lines,
    scripted_app,
)

REASONS = {"eos": "stop", "word": "stop", "limit": "length", "calls": "stop"}
# timings, and the prompt tokens evaluated (the second request finds the prompt cached)
VARYING = ("created_at", "total_duration", "prompt_eval_count", "prompt_eval_duration",
           "eval_duration")  # fmt: skip


@pytest.fixture(scope="module")
def app() -> Iterator[ScriptedApp]:
    with scripted_app() as app:
        yield app


def body(case: Case, stream: bool, chat: bool = True) -> dict[str, Any]:
    asked: dict[str, Any] = {"messages": [{"role": "user", "content": "Hi"}], "tools": TOOLS} \
        if chat else {"prompt": "Hi"}  # fmt: skip
    options: dict[str, Any] = {}
    if case.stop:
        options["stop"] = list(case.stop)
    if case.limit is not None:
        options["num_predict"] = case.limit
    return {"model": "scripted", **asked, "stream": stream, "options": options}


def joined(lines: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The answer a client rebuilds from the lines: text, thinking and calls joined, with the
    last line's counts."""
    parts = [line["message"] for line in lines] if key == "message" else lines
    text_key = "content" if key == "message" else "response"
    out: dict[str, Any] = {text_key: "".join(p[text_key] for p in parts)}
    thinking = "".join(p.get("thinking", "") for p in parts)
    if thinking:
        out["thinking"] = thinking
    calls = [c for p in parts for c in p.get("tool_calls", [])]
    if calls:
        out["tool_calls"] = calls
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    last = {k: v for k, v in lines[-1].items() if k not in (key, *VARYING)}
    return {**last, **({"message": {"role": "assistant", **out}} if key == "message" else out)}


def without_varying(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k not in VARYING}


@cases()
def test_whole_and_streamed_chats_agree(app: ScriptedApp, case: Case) -> None:
    whole = app.post("/api/chat", body(case, False), case.script).json()
    lines = ndjson_lines(app.post("/api/chat", body(case, True), case.script).text)
    assert joined(lines, "message") == without_varying(whole)
    assert whole["done_reason"] == REASONS[case.ended]
    message = whole["message"]
    assert message["content"] == case.content
    assert message.get("thinking", "") == case.reasoning
    calls = [(c["function"]["name"], c["function"]["arguments"])
             for c in message.get("tool_calls", [])]  # fmt: skip
    assert calls == list(case.calls)


@cases()
def test_whole_and_streamed_generations_agree(app: ScriptedApp, case: Case) -> None:
    whole = app.post("/api/generate", body(case, False, chat=False), case.script).json()
    lines = ndjson_lines(app.post("/api/generate", body(case, True, chat=False), case.script).text)
    assert joined(lines, "response") == without_varying(whole)
    assert whole["done_reason"] == ("length" if case.ended == "limit" else "stop")


def test_a_generation_failing_mid_stream_ends_with_ollama_error(app: ScriptedApp) -> None:
    case = Case("failure", "")
    whole = app.post("/api/chat", body(case, False), FAILING)
    assert whole.status_code == 500 and whole.json() == {"error": FAILURE}
    lines = ndjson_lines(app.post("/api/chat", body(case, True), FAILING).text)
    assert "".join(line["message"]["content"] for line in lines[:-1]) == "Hello world"
    last = lines[-1]
    assert {k: v for k, v in last.items() if k != "created_at"} == {
        "model": "scripted", "error": FAILURE, "done": True}  # fmt: skip
