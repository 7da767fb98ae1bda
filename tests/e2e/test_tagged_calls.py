"""Tagged-argument tool calls end to end, on a tiny random model carrying Qwen3-Coder's own
template (llama.cpp's `models/templates/Qwen3-Coder.jinja`): the format is learned from the
template, forced calls come back valid (streamed and whole) through the `openai` client, and
a history with a call renders as Qwen3-Coder's template writes it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jinja2.sandbox
import jsonschema
import openai
import pytest

from tests.conftest import RunningServer, start_server, stop_server
from tests.gguf_factory import FAMILIES, build_gguf
from tests.tool_calls import streamed_calls

# Arguments a random model finishes in a few tokens: bounded strings, enums, numbers, booleans.
FORECAST = {"type": "function", "function": {
    "name": "forecast", "description": "The forecast for a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 12},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "hourly": {"type": "boolean"},
    }, "required": ["city", "days"]}}}  # fmt: skip
SWITCH = {"type": "function", "function": {
    "name": "switch", "description": "On or off", "parameters": {
        "type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"]},
}}  # fmt: skip
TOOLS = [FORECAST, SWITCH]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
MARKUP = ("<tool_call>", "</tool_call>", "<function=", "<parameter=", "</parameter>",
          "<|im_end|>")  # fmt: skip
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]


@pytest.fixture(scope="module")
def coder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("qwen3_coder")
    path = build_gguf(folder / "m.gguf", FAMILIES["qwen3_coder"])
    srv = start_server(folder, "-m", str(path), "-c", "4096", "-np", "1")
    yield srv
    stop_server(srv)


def sdk(srv: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{srv.url}/v1", api_key="none", max_retries=0)


def valid_calls(choice: Any, limit_hit: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """The choice's calls, checked clean: parsed, and valid or said not to be; `limit_hit`:
    the answer ran into max_tokens (the call it was cut in comes back closed)."""
    assert choice.finish_reason == ("length" if limit_hit else "tool_calls"), choice
    assert not any(m in (choice.message.content or "") for m in MARKUP), choice
    errors = {e["id"] for e in choice.model_dump()["endmark"].get("tool_call_errors", [])}
    assert limit_hit or not errors, errors
    out = []
    for call in choice.message.tool_calls:
        args = json.loads(call.function.arguments)
        if call.id not in errors:
            jsonschema.validate(args, SCHEMAS[call.function.name])
        out.append((call.function.name, args))
    return out


def test_the_format_is_learned_and_forced_calls_are_valid(coder: RunningServer) -> None:
    fmt = httpx.get(f"{coder.url}/props", timeout=30).json()["tool_call_format"]
    assert (fmt["name"], fmt["kind"], fmt["start"], fmt["end"]) == (
        "qwen3_coder", "tagged_args", "<tool_call>", "</tool_call>")  # fmt: skip
    client = sdk(coder)
    for seed in range(2):
        kw: dict[str, Any] = dict(
            model="m", messages=ASK, tools=TOOLS, tool_choice="required", temperature=0.8,
            seed=seed, max_tokens=200, parallel_tool_calls=False,
            extra_body={"cache_prompt": False},  # the same numerics for both runs
        )  # fmt: skip
        whole = valid_calls(client.chat.completions.create(**kw).choices[0])
        assert streamed_calls(client, MARKUP, **kw) == ("tool_calls", whole)


def test_a_call_the_model_starts_under_auto_is_valid(coder: RunningServer) -> None:
    """`auto`: free text until the model starts a call (nudged to, by a logit bias on the
    start marker), then the lazy grammar makes the call valid."""
    client = sdk(coder)
    start = httpx.post(f"{coder.url}/tokenize", json={"content": "<tool_call>",
                       "parse_special": True}, timeout=30).json()["tokens"]  # fmt: skip
    calls = 0
    for seed in range(4):
        r = client.chat.completions.create(
            model="m", messages=ASK, tools=[SWITCH], max_tokens=64, temperature=1.0,
            seed=seed, logit_bias={str(start[0]): 10},
        )  # fmt: skip
        answer = r.choices[0]
        assert not any(m in (answer.message.content or "") for m in MARKUP), answer
        if answer.message.tool_calls:
            calls += len(valid_calls(answer, limit_hit=answer.finish_reason == "length"))
    assert calls >= 1


def test_a_history_renders_in_qwen3_coders_own_format(coder: RunningServer) -> None:
    """The call the model made goes back into the history (its arguments a JSON text, as the
    client sends them) and the prompt is exactly what the template itself makes of it."""
    first = sdk(coder).chat.completions.create(
        model="m", messages=ASK, tools=TOOLS, tool_choice={"type": "function",
        "function": {"name": "forecast"}}, temperature=0.8, seed=1, max_tokens=300,
    )  # fmt: skip
    ((name, args),) = valid_calls(first.choices[0])
    call = first.choices[0].message.tool_calls[0]
    messages: list[dict[str, Any]] = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny"}'},
    ]
    prompt = httpx.post(
        f"{coder.url}/apply-template", json={"messages": messages, "tools": TOOLS}, timeout=30
    ).json()["prompt"]
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(FAMILIES["qwen3_coder"].template)
    plain = [
        *ASK,
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": name, "arguments": args}}]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny"}'},
    ]  # fmt: skip
    assert prompt == template.render(messages=plain, tools=TOOLS, add_generation_prompt=True)
    written = f"<tool_call>\n<function={name}>\n<parameter=city>\n{args['city']}\n</parameter>"
    assert written in prompt
