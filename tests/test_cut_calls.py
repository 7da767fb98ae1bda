"""Tool calls cut by the token limit, through the real scheduler, generation and routes on the
scripted engine: at every budget, a forced call comes back closed so that it parses, the
answer says `length` and `truncated_json_closed`, and a stream says the same as a whole answer.
Hermes's format (JSON in tags, markers that are control tokens) and Qwen3-Coder's (tagged
arguments); the cut falls after the open marker, in the name, in a key, in a value."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from endmark.settings import Settings
from tests.gguf_factory import TEMPLATES
from tests.scripted_app import ScriptedApp, scripted_app, sse_events
from tests.scripted_engine import ScriptedEngine

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"},
          "days": {"type": "integer"}}, "required": ["city", "days"]}  # fmt: skip
TOOLS = [
    {"type": "function", "function": {"name": "forecast", "parameters": SCHEMA}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]  # fmt: skip
HERMES_CALL = ('<tool_call>\n{"name": "forecast", "arguments": {"city": "Paris", "days": 3}}'
               "\n</tool_call>")  # fmt: skip
QWEN_CALL = ("<tool_call>\n<function=forecast>\n<parameter=city>\nParis\n</parameter>\n"
             "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>")  # fmt: skip
FORMATS = {"hermes": (None, HERMES_CALL), "qwen3_coder": ("Qwen3-Coder.jinja", QWEN_CALL)}


@pytest.fixture(scope="module", params=list(FORMATS))
def app(request: pytest.FixtureRequest) -> Iterator[tuple[ScriptedApp, str]]:
    template, script = FORMATS[request.param]
    settings = Settings(chat_template_file=str(TEMPLATES / template)) if template else None
    engine = ScriptedEngine(n_ctx=16384)  # Qwen3-Coder's prompt, in the bytes it tokenizes to
    with scripted_app(settings, engine) as scripted:
        yield scripted, script


def ask(app: ScriptedApp, script: str, limit: int, stream: bool = False, **kw: Any) -> Any:
    body = {"messages": [{"role": "user", "content": "Weather?"}], "tools": TOOLS,
            "tool_choice": "required", "max_tokens": limit, "stream": stream} | kw  # fmt: skip
    return app.post("/v1/chat/completions", body, script)


@pytest.mark.parametrize(("tool_choice", "stop"), [("required", []), ("auto", []),
                                                  ("auto", ["<|eot|>"])])  # fmt: skip
def test_a_call_parses_at_every_budget(
    app: tuple[ScriptedApp, str], tool_choice: str, stop: list[str]
) -> None:
    """`required`: constrained from the first token; `auto`: from the start marker on, and
    the closing is written past the grammar (a `null` it would refuse). A stop string that
    holds back a `<` (muse-glimmer's end of turn, issue 24) holds back no part of the call:
    its grammar and its closing begin after it."""
    scripted, script = app
    n = len(scripted.engine.tokenize(script, False, True))
    step = 1 if tool_choice == "required" else 3
    for limit in [*range(1, n + 1, step), n + 8]:  # room to close: `null` is 4 tokens here
        answer = ask(scripted, script, limit, tool_choice=tool_choice, stop=stop)
        choice = answer.json()["choices"][0]
        (call,) = choice["message"]["tool_calls"]
        args = json.loads(call["function"]["arguments"])
        assert call["function"]["name"] == "forecast" and not choice["message"]["content"]
        if limit > n:  # room for the whole call
            assert choice["finish_reason"] == "tool_calls" and args == {"city": "Paris", "days": 3}
            assert "tool_call_errors" not in choice["endmark"]
            continue
        assert choice["finish_reason"] == "length", limit
        assert choice["endmark"]["truncated_json_closed"], limit
        errors = choice["endmark"].get("tool_call_errors", [])
        if not {"city", "days"} <= set(args):  # said, with the call's id
            assert [e["id"] for e in errors] == [call["id"]] and "missing" in errors[0]["error"]


def test_no_second_call_starts_where_it_cannot_fit(app: tuple[ScriptedApp, str]) -> None:
    """Two calls scripted: at a budget that leaves after the first less than a whole call of
    the largest tool (`forecast` and its two arguments, not `get_time` without any: the model
    names the tool after it began), the second never starts, instead of being cut before its
    arguments: the turn ends there, as the limit's."""
    scripted, script = app
    n = len(scripted.engine.tokenize(script, False, True))
    for limit in range(n + 6, n + 18, 3):  # (closer, the first call is closed: tested above)
        choice = ask(scripted, script + "\n" + script, limit).json()["choices"][0]
        calls = choice["message"]["tool_calls"]
        assert "tool_call_errors" not in choice["endmark"], (limit, choice)
        assert len(calls) == 1 or choice["finish_reason"] == "tool_calls", (limit, choice)
        assert all(json.loads(c["function"]["arguments"]) == {"city": "Paris", "days": 3}
                   for c in calls)  # fmt: skip


def test_another_call_needs_room_for_the_largest_tool() -> None:
    """A short call (`get_time`, no arguments), then `forecast`: the room a second call needs
    is that of the tool with the largest valid call, since the model names the tool only
    once it has begun. At no limit is the second call begun and cut invalid."""
    short = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
    with scripted_app(None, ScriptedEngine(n_ctx=16384)) as scripted:
        n = len(scripted.engine.tokenize(short, False, True))
        m = len(scripted.engine.tokenize(HERMES_CALL, False, True))
        for limit in range(n + 4, n + m + 8, 2):
            choice = ask(scripted, short + "\n" + HERMES_CALL, limit).json()["choices"][0]
            assert "tool_call_errors" not in choice["endmark"], (limit, choice)
            names = [c["function"]["name"] for c in choice["message"]["tool_calls"]]
            assert names in (["get_time"], ["get_time", "forecast"]), (limit, names)


def test_a_looping_string_leaves_room_for_the_required_argument(
    app: tuple[ScriptedApp, str],
) -> None:
    """The model loops inside `city` and would run out of budget before `days` (required):
    near the limit, endmark ends the string and names `days`, and the model writes its value,
    so the cut call validates. (JSON formats; a tagged format's call is closed as it is.)"""
    scripted, script = app
    if script != HERMES_CALL:
        pytest.skip("reaching a missing argument is for the JSON formats")
    looping = script.replace('"Paris"', '"Paris' + " and Paris" * 40 + '"')
    for limit in range(34, 90, 5):
        choice = ask(scripted, looping, limit).json()["choices"][0]
        (call,) = choice["message"]["tool_calls"]
        args = json.loads(call["function"]["arguments"])
        errors = choice["endmark"].get("tool_call_errors", [])
        if choice["finish_reason"] != "length":  # the model ended the call itself in time
            assert choice["finish_reason"] == "tool_calls" and not errors, (limit, choice)
        # (cut with the call whole but for its end marker, nothing was closed: no error either)
        assert choice["endmark"]["truncated_json_closed"] or not errors, (limit, choice)
        if limit < 44:  # no room for `, "days": ` and a value past the name and `{"city": "`
            assert "'days' is missing" in errors[0]["error"], (limit, args)
            continue
        assert set(args) == {"city", "days"} and isinstance(args["days"], int), (limit, args)
        assert args["city"].startswith("Paris") and not errors, (limit, choice)


def test_a_value_the_model_names_itself_is_not_forced() -> None:
    """At the one budget where endmark would end `city` and name `days` (the bet above), the
    model's own next token already does it and writes the value and the close: its pick
    stands, and the call is the model's (before, the forced key put the model off its value)."""
    word = b'", "days": 3}}'
    with scripted_app(None, ScriptedEngine(n_ctx=16384, words=[word])) as scripted:
        head = '<tool_call>\n{"name": "forecast", "arguments": {"city": "Paris'
        tokenize = scripted.engine.tokenize
        script = [*tokenize(head, False, True), word, *tokenize("\n</tool_call>", False, True)]
        for limit in range(len(script) + 6, len(script) + 18):
            choice = ask(scripted, script, limit).json()["choices"][0]
            args = json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"])
            if args.get("city") == "Paris":  # (else the bet came before the model's value)
                assert args == {"city": "Paris", "days": 3}, (limit, args)
                assert choice["finish_reason"] == "tool_calls", (limit, choice)


def test_a_cut_call_streams_as_it_comes_whole(app: tuple[ScriptedApp, str]) -> None:
    scripted, script = app
    for limit in (3, 9, 16):
        whole = ask(scripted, script, limit).json()["choices"][0]
        events = sse_events(ask(scripted, script, limit, stream=True).text)
        chunks = [d["choices"][0] for _, d in events[:-1] if d["choices"]]
        calls = [c for ch in chunks for c in ch["delta"].get("tool_calls") or []]
        assert [c["function"] for c in calls] == [
            c["function"] for c in whole["message"]["tool_calls"]]  # fmt: skip
        assert chunks[-1]["finish_reason"] == whole["finish_reason"] == "length"
        assert chunks[-1]["endmark"]["truncated_json_closed"]


def test_every_dialect_shows_the_cut_call(app: tuple[ScriptedApp, str]) -> None:
    scripted, script = app
    say = {"role": "user", "content": "Weather?"}
    anthropic_tools = [{"name": t["function"]["name"], "input_schema":
                        t["function"]["parameters"]} for t in TOOLS]  # fmt: skip
    anthropic = scripted.post("/v1/messages", {
        "model": "m", "max_tokens": 9, "messages": [say], "tools": anthropic_tools,
        "tool_choice": {"type": "any"}}, script).json()  # fmt: skip
    assert anthropic["stop_reason"] == "max_tokens"
    assert anthropic["endmark"]["truncated_json_closed"]
    assert [b["type"] for b in anthropic["content"]] == ["tool_use"]
    functions = [{"type": "function", **t["function"]} for t in TOOLS]
    responses = scripted.post("/v1/responses", {
        "input": "Weather?", "max_output_tokens": 9, "tool_choice": "required",
        "tools": functions}, script).json()  # fmt: skip
    (item,) = responses["output"]
    assert (item["type"], item["status"], responses["status"]) == (
        "function_call", "incomplete", "incomplete")  # fmt: skip
    assert responses["endmark"]["truncated_json_closed"]
    ollama = scripted.post("/api/chat", {
        "model": "m", "messages": [say], "tools": TOOLS, "stream": False,
        "options": {"num_predict": 9}}, script).json()  # `auto`: the model began it  # fmt: skip
    assert ollama["done_reason"] == "length" and ollama["message"]["tool_calls"]
    assert ollama["endmark"]["truncated_json_closed"]
    assert not ollama["message"]["content"]


def test_a_call_written_inside_reasoning_is_reasoning() -> None:
    """Ending rule 7: not executed, not returned as a call; the answer after it is content
    (ChatML with tools and thinking, as Qwen3's; its call markers are control tokens)."""
    thought = f"<think>\nI could write {HERMES_CALL} now.\n</think>\n\nNo call needed."
    body = {"messages": [{"role": "user", "content": "Hi"}], "tools": TOOLS, "max_tokens": 400}
    with scripted_app() as scripted:
        choice = scripted.post("/v1/chat/completions", body, thought).json()["choices"][0]
    message = choice["message"]
    assert '"city": "Paris"' in message["reasoning_content"] and "tool_calls" not in message
    assert message["content"] == "\n\nNo call needed." and choice["finish_reason"] == "stop"


def test_no_call_starts_inside_a_section_where_it_cannot_fit() -> None:
    """Kimi K2 writes all its calls in one section: between two whole calls, with less room
    than the smallest call, the section's end is written instead of a call that the limit
    would cut before its arguments (which came back `{}`)."""
    one = ("<|tool_call_begin|>functions.forecast:{i}<|tool_call_argument_begin|>"
           '{{"city": "Paris", "days": 3}}<|tool_call_end|>')  # fmt: skip
    begin, end = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"
    script = begin + one.format(i=0) + one.format(i=1) + end
    settings = Settings(chat_template_file=str(TEMPLATES / "Kimi-K2-Instruct.jinja"))
    with scripted_app(settings, ScriptedEngine(n_ctx=16384)) as scripted:
        n = len(scripted.engine.tokenize(begin + one.format(i=0) + end, False, True))
        for limit in (n + 6, n + 40):  # room for the first call, not the second
            choice = ask(scripted, script, limit).json()["choices"][0]
            calls = choice["message"]["tool_calls"]
            assert "tool_call_errors" not in choice["endmark"] and len(calls) == 1, (limit, choice)
            assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris", "days": 3}
