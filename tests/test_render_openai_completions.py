"""`/v1/completions` rendered from scripted answers: raw text, no channels. A whole answer and
its stream, reassembled, are the same; finish reasons; a failure mid-stream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.scripted_app import FAILING, FAILURE, Case, ScriptedApp, cases, scripted_app, sse_events

REASONS = {"eos": "stop", "word": "stop", "limit": "length", "calls": "stop"}


@pytest.fixture(scope="module")
def app() -> Iterator[ScriptedApp]:
    with scripted_app() as app:
        yield app


def body(case: Case, stream: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"prompt": "Say hello.", "stream": stream, "max_tokens": 200}
    if case.stop:
        out["stop"] = list(case.stop)
    if case.limit is not None:
        out["max_tokens"] = case.limit
    return out


@cases()
def test_whole_and_streamed_answers_agree(app: ScriptedApp, case: Case) -> None:
    (choice,) = app.post("/v1/completions", body(case, False), case.script).json()["choices"]
    events = sse_events(app.post("/v1/completions", body(case, True), case.script).text)
    assert events[-1] == (None, "[DONE]")
    chunks = [data["choices"][0] for _, data in events[:-1]]
    assert "".join(c["text"] for c in chunks) == choice["text"]
    reasons = [c["finish_reason"] for c in chunks if c["finish_reason"]]
    assert reasons == [choice["finish_reason"]] == [REASONS[case.ended]]
    if "<" not in case.script:  # markup is control tokens: a raw completion drops their text
        assert choice["text"] == case.content
    assert chunks[-1]["endmark"]["stop_type"] == choice["endmark"]["stop_type"]


def test_a_generation_failing_mid_stream_ends_with_openai_error(app: ScriptedApp) -> None:
    case = Case("failure", "")
    assert app.post("/v1/completions", body(case, False), FAILING).status_code == 500
    events = sse_events(app.post("/v1/completions", body(case, True), FAILING).text)
    assert "".join(d["choices"][0]["text"] for _, d in events[:-2]) == "Hello world"
    assert events[-2] == (None, {"error": {"message": FAILURE, "type": "server_error"}})
