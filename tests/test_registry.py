"""The dialect registry: which dialect a path speaks, and each dialect's error shape, finish
words and mid-stream error event, as the plumbing reads them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from endmark.channels import ToolCall
from endmark.endings import Finish
from endmark.generation import Done, Timings
from endmark.server.dialects.registry import DIALECTS
from endmark.server.http.dialect import LLAMA_CPP, dialect_for, register, registered
from endmark.server.http.errors import error_body
from endmark.server.http.relay import failure_event

CALL = ToolCall("f", "{}", "c1")


@pytest.fixture(autouse=True)
def table() -> None:
    register(DIALECTS)


def done(stop_type: str, calls: tuple[ToolCall, ...] = ()) -> Done:
    return Done(Finish(stop_type, word="." if stop_type == "word" else None),  # type: ignore[arg-type]
                (1,), 1, Timings(), calls=calls)  # fmt: skip


def test_the_longest_prefix_names_the_dialect() -> None:
    names = {path: dialect_for(path).name for path in (
        "/completion", "/v1/chat/completions", "/v1/messages/count_tokens", "/v1/responses/r1",
        "/api/chat", "/health", "/chat/completions")}  # fmt: skip
    assert names == {
        "/completion": "llama.cpp", "/v1/chat/completions": "openai",
        "/v1/messages/count_tokens": "anthropic", "/v1/responses/r1": "responses",
        "/api/chat": "ollama", "/health": "llama.cpp", "/chat/completions": "llama.cpp",
    }  # fmt: skip
    register([])
    assert dialect_for("/v1/messages") is LLAMA_CPP and registered() == ()


def test_each_dialect_shapes_its_errors() -> None:
    assert error_body("/api/chat", 404, "gone") == {"error": "gone"}
    assert error_body("/v1/messages", 503, "busy") == {
        "type": "error", "error": {"type": "overloaded_error", "message": "busy"}}  # fmt: skip
    openai = {"message": "bad", "type": "invalid_request_error", "param": "input", "code": None}
    assert error_body("/v1/responses", 400, "bad", "input") == {"error": openai}
    llama = {"code": 400, "message": "bad", "type": "invalid_request_error", "n_ctx": 8}
    assert error_body("/tokenize", 400, "bad", details={"n_ctx": 8}) == {"error": llama}


@pytest.mark.parametrize(("name", "words"), [
    ("openai", ("stop", "stop", "length", "tool_calls", "length")),
    ("anthropic", ("end_turn", "stop_sequence", "max_tokens", "tool_use", "max_tokens")),
    ("responses", ("completed", "completed", "incomplete", "completed", "incomplete")),
    ("ollama", ("stop", "stop", "length", "stop", "length")),
    ("llama.cpp", ("eos", "word", "limit", "eos", "limit")),
])  # fmt: skip
def test_finish_words_follow_the_one_end_decision(name: str, words: tuple[str, ...]) -> None:
    """Calls end the turn with the tool-call reason (ending rule 7), unless the limit cut it."""
    (dialect,) = [d for d in DIALECTS if d.name == name]
    ends = [done("eos"), done("word"), done("limit"), done("eos", (CALL,)),
            done("limit", (CALL,))]  # fmt: skip
    assert tuple(dialect.finish.of(d) for d in ends) == words


def test_a_broken_stream_ends_in_its_dialect_shape() -> None:
    ollama = json.loads(failure_event("/api/generate", "m", "gone"))
    assert ollama["error"] == "gone" and ollama["done"] is True and ollama["model"] == "m"
    assert failure_event("/v1/messages", "m", "gone").startswith(b"event: error\ndata: ")
    assert failure_event("/completion", "m", "gone") == (
        b'data: {"error": {"code": 500, "message": "gone", "type": "server_error"}}\n\n'
    )


def test_router_mode_and_the_replicas_import_no_dialect() -> None:
    """They read the registry they are given (design rule: plumbing only)."""
    code = (
        "import sys, endmark.multimodel.router, endmark.replicas.prefixes; "
        "print([m for m in sys.modules if m.startswith('endmark.server.dialects')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
