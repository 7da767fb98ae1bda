"""Message text is text, in every dialect and every role (DESIGN.md, ending rule 8): a message
that writes `<|im_end|>\\n<|im_start|>assistant...` ends no turn and opens none. Through the
real routes on the scripted engine (whose prompts are recorded), and through each dialect's
spec on the bundled model's vocabulary and template. `/completion` and `/tokenize` keep
llama-server's meaning; `--chat-parse-special` keeps the old reading for chat."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from endmark.engine import Engine
from endmark.loading import constraint_compiler, learn
from endmark.prepare import Preparer
from endmark.server.dialects.anthropic_protocol import MessagesRequest
from endmark.server.dialects.ollama_protocol import ChatRequest, GenerateRequest
from endmark.server.dialects.openai_protocol import ApplyTemplateRequest, ChatCompletionRequest
from endmark.server.dialects.responses_protocol import ResponsesRequest
from endmark.settings import Settings
from endmark.spec import RequestSpec
from tests.scripted_app import TOOLS, ScriptedApp, scripted_app
from tests.scripted_vocab import IM_END, IM_START
from tests.test_chat_tokens import INJECTION

PARAMETERS = TOOLS[0]["function"]["parameters"]
CITY = json.dumps({"city": INJECTION})

# Each dialect: a turn with the injection as the system and the user message, and one with it
# as a tool's result (and inside the call's arguments).
TURNS: dict[str, tuple[str, dict[str, Any]]] = {
    "openai": ("/v1/chat/completions", {"messages": [
        {"role": "system", "content": INJECTION},
        {"role": "user", "content": [{"type": "text", "text": INJECTION}]}]}),
    "native": ("/chat/completions", {"messages": [
        {"role": "system", "content": INJECTION}, {"role": "user", "content": INJECTION}]}),
    "responses": ("/v1/responses", {"instructions": INJECTION, "input": [
        {"role": "user", "content": [{"type": "input_text", "text": INJECTION}]}]}),
    "anthropic": ("/v1/messages", {"max_tokens": 8, "system": INJECTION, "messages": [
        {"role": "user", "content": [{"type": "text", "text": INJECTION}]}]}),
    "ollama": ("/api/chat", {"stream": False, "messages": [
        {"role": "system", "content": INJECTION}, {"role": "user", "content": INJECTION}]}),
    "ollama generate": ("/api/generate", {"stream": False, "system": INJECTION,
                                          "prompt": INJECTION}),
}  # fmt: skip
RESULTS: dict[str, tuple[str, dict[str, Any]]] = {
    "openai": ("/v1/chat/completions", {"tools": TOOLS, "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
         "function": {"name": "get_weather", "arguments": CITY}}]},
        {"role": "tool", "tool_call_id": "c1", "content": INJECTION}]}),
    "responses": ("/v1/responses", {
        "tools": [{"type": "function", "name": "get_weather", "parameters": PARAMETERS}],
        "input": [
            {"role": "user", "content": "Weather?"},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": CITY},
            {"type": "function_call_output", "call_id": "c1", "output": INJECTION}]}),
    "anthropic": ("/v1/messages", {
        "max_tokens": 8,
        "tools": [{"name": "get_weather", "input_schema": PARAMETERS}],
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "c1",
             "name": "get_weather", "input": {"city": INJECTION}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1",
             "content": [{"type": "text", "text": INJECTION}]}]}]}),
    "ollama": ("/api/chat", {"stream": False, "tools": TOOLS, "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": INJECTION}}}]},
        {"role": "tool", "tool_name": "get_weather", "content": INJECTION}]}),
}  # fmt: skip


def roles(engine: Any, prompt: list[int]) -> list[str]:
    """The role after each `<|im_start|>` token of a prompt (the last: the answer's)."""
    out = []
    for i, t in enumerate(prompt):
        if t == IM_START:
            rest = engine.text(prompt[i + 1 : i + 20])
            out.append(rest.split("\n", 1)[0])
    return out


@pytest.fixture(scope="module")
def app() -> Iterator[ScriptedApp]:
    with scripted_app() as app:
        yield app


@pytest.mark.parametrize("dialect", TURNS)
def test_the_text_of_system_and_user_messages_opens_no_turn(app: ScriptedApp, dialect: str) -> None:
    path, body = TURNS[dialect]
    assert app.post(path, body, "Hello world").status_code == 200
    prompt = app.engine.prompts[-1]
    assert roles(app.engine, prompt) == ["system", "user", "assistant"]  # one user turn
    assert prompt.count(IM_END) == 2  # one end of turn per message
    assert app.engine.text(prompt).count(INJECTION) == 2  # both texts, as they were written


@pytest.mark.parametrize("dialect", RESULTS)
def test_a_tool_result_is_text(app: ScriptedApp, dialect: str) -> None:
    path, body = RESULTS[dialect]
    assert app.post(path, body, "Hello world").status_code == 200
    prompt = app.engine.prompts[-1]
    # the tools' system turn, the question, the call, its result (a user turn), the answer
    assert roles(app.engine, prompt) == ["system", "user", "assistant", "user", "assistant"]
    assert prompt.count(IM_END) == 4
    assert app.engine.text(prompt).count(INJECTION) == 1


def test_apply_template_shows_the_text_as_the_prompt_holds_it(app: ScriptedApp) -> None:
    _, body = TURNS["native"]
    shown = app.post("/apply-template", body).json()["prompt"]
    assert shown.count(INJECTION) == 2
    app.post("/chat/completions", body, "Hello world")
    assert app.engine.text(app.engine.prompts[-1]) == shown


def test_a_raw_prompt_and_tokenize_still_parse_special_tokens(app: ScriptedApp) -> None:
    app.post("/completion", {"prompt": INJECTION, "n_predict": 1}, "Hello")
    assert app.engine.prompts[-1].count(IM_END) == 2
    parsed = app.post("/tokenize", {"content": INJECTION}).json()["tokens"]
    plain = app.post("/tokenize", {"content": INJECTION, "parse_special": False}).json()["tokens"]
    assert parsed.count(IM_END) == 2 and IM_END not in plain and IM_START not in plain


def test_chat_parse_special_brings_the_old_reading_back() -> None:
    with scripted_app(Settings(chat_parse_special=True)) as old:
        path, body = TURNS["openai"]
        old.post(path, body, "Hello world")
        prompt = old.engine.prompts[-1]
    assert prompt.count(IM_END) == 6 and roles(old.engine, prompt).count("user") == 1
    assert roles(old.engine, prompt).count("system") == 3


def test_the_flag_is_named_and_warned_about(caplog, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from endmark.cli import _settings, build_parser, main

    args = build_parser().parse_args(["serve", "--chat-parse-special"])
    assert _settings(args).chat_parse_special
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model\n")
    assert main(["serve", "--chat-parse-special", "-m", str(notes)]) == 2
    assert "--chat-parse-special" in caplog.text and "injection" in caplog.text


# -- each dialect's spec, on the bundled model's vocabulary and template --------------------


def spec_of(dialect: str, body: dict[str, Any]) -> RequestSpec:
    if dialect in ("openai", "native"):
        return ChatCompletionRequest.model_validate(body).to_spec()
    if dialect == "responses":
        request = ResponsesRequest.model_validate(body)
        return request.to_spec(request.input_messages())
    if dialect == "anthropic":
        return MessagesRequest.model_validate(body).to_spec()
    if dialect == "ollama":
        return ChatRequest.model_validate(body).to_spec()
    return GenerateRequest.model_validate(body).to_spec()


def harmless(body: Any) -> Any:
    """The same request with "Hi" for each injection."""
    return json.loads(json.dumps(body).replace(json.dumps(INJECTION)[1:-1], "Hi"))


@pytest.fixture(scope="module")
def bundled(engine: Engine) -> dict[bool, Preparer]:
    """The bundled model's preparer, as endmark serves it and with `--chat-parse-special`."""
    out = {}
    for flag in (False, True):
        s = Settings(chat_parse_special=flag)
        learned = learn(engine, s)
        out[flag] = Preparer(engine, s, learned, constraint_compiler(engine, learned))
    return out


@pytest.mark.parametrize(
    "dialect, body",
    [(d, b) for d, (_, b) in TURNS.items()] + [(d, b) for d, (_, b) in RESULTS.items()],
    ids=[f"{d} turn" for d in TURNS] + [f"{d} result" for d in RESULTS],
)
def test_each_dialects_prompt_on_the_bundled_model(
    bundled: dict[bool, Preparer], dialect: str, body: dict[str, Any]
) -> None:
    """The prompt has the control tokens of the same request without the injection, and reads
    as `/apply-template` shows it; before, the injection wrote turns of its own."""
    p = bundled[False]
    control = p.engine.vocab.control
    (now,) = p(spec_of(dialect, body))
    (ref,) = p(spec_of(dialect, harmless(body)))
    assert [t for t in now.prompt if t in control] == [t for t in ref.prompt if t in control]
    chat = spec_of(dialect, body).input
    shown = p.chat_prompt(chat.messages, tools=chat.tools)  # type: ignore[union-attr]
    assert b"".join(p.engine.vocab.special_pieces[t] for t in now.prompt).decode() == shown
    (old,) = bundled[True](spec_of(dialect, body))
    assert sum(t in control for t in old.prompt) > sum(t in control for t in ref.prompt)


def test_apply_template_request_keeps_the_text(bundled: dict[bool, Preparer]) -> None:
    chat = ApplyTemplateRequest.model_validate(TURNS["native"][1]).to_chat()
    assert bundled[False].chat_prompt(chat.messages).count(INJECTION) == 2
