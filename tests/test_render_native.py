"""llama.cpp's `/completion` rendered from scripted answers: a whole answer and its stream,
reassembled, are the same; how it ended (`stop_type`, the word); a failure mid-stream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.scripted_app import FAILING, FAILURE, Case, ScriptedApp, cases, scripted_app, sse_events

# What the last chunk and the whole answer both say about the end (timings aside).
ENDING = ("stop", "stop_type", "stopping_word", "stopping_token", "tokens_predicted",
          "truncated", "grammar_complete", "truncated_json_closed", "model")  # fmt: skip


@pytest.fixture(scope="module")
def app() -> Iterator[ScriptedApp]:
    with scripted_app() as app:
        yield app


def body(case: Case, stream: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"prompt": "Say hello.", "stream": stream}
    if case.stop:
        out["stop"] = list(case.stop)
    if case.limit is not None:
        out["n_predict"] = case.limit
    return out


@cases()
def test_whole_and_streamed_answers_agree(app: ScriptedApp, case: Case) -> None:
    whole = app.post("/completion", body(case, False), case.script).json()
    chunks = [d for _, d in sse_events(app.post("/completion", body(case, True), case.script).text)]
    assert "".join(c["content"] for c in chunks) == whole["content"]
    assert [c["stop"] for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert {k: chunks[-1][k] for k in ENDING} == {k: whole[k] for k in ENDING}
    assert whole["stop_type"] == ("eos" if case.ended == "calls" else case.ended)
    if "<" not in case.script:  # markup is control tokens: a raw completion drops their text
        assert whole["content"] == case.content
    assert whole["stopping_word"] == (case.stop[0] if case.ended == "word" else "")


def test_a_generation_failing_mid_stream_ends_with_llama_cpp_error(app: ScriptedApp) -> None:
    case = Case("failure", "")
    whole = app.post("/completion", body(case, False), FAILING)
    error = {"code": 500, "message": FAILURE, "type": "server_error"}
    assert whole.status_code == 500 and whole.json() == {"error": error}
    events = sse_events(app.post("/completion", body(case, True), FAILING).text)
    assert "".join(d["content"] for _, d in events[:-1]) == "Hello world"
    assert events[-1] == (None, {"error": error})
