"""Anthropic's Messages API through the real server with the official `anthropic` SDK.
(Its `messages.create` no longer takes sampling knobs; they go in `extra_body`, as the API
itself still reads them.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import jsonschema
import pytest

from tests.conftest import CAPITAL, RunningServer, start_server, stop_server
from tests.e2e.test_openai import assert_clean_answer
from tests.gguf_factory import FAMILIES, build_gguf

QUESTION: list[Any] = [{"role": "user", "content": CAPITAL}]
SYSTEM = "You are a helpful assistant."
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS: list[Any] = [{"name": "get_weather", "description": "The weather in a city",
                     "input_schema": WEATHER}]  # fmt: skip


def sdk(srv: RunningServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=srv.url, api_key="none", max_retries=0)


def test_a_message_ends_its_turn_cleanly_and_the_stream_says_the_same(
    server: RunningServer,
) -> None:
    client = sdk(server)
    kw: dict[str, Any] = dict(model="m", max_tokens=200, system=SYSTEM, messages=QUESTION,
                              extra_body={"temperature": 0})  # fmt: skip
    plain = client.messages.create(**kw)
    assert plain.stop_reason == "end_turn" and plain.stop_sequence is None
    (block,) = plain.content
    assert block.type == "text" and "Paris" in block.text
    assert_clean_answer(block.text)
    assert plain.usage.input_tokens > 0 and plain.usage.output_tokens > 0
    with client.messages.stream(**kw) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == block.text and final.stop_reason == "end_turn"


def test_a_stop_sequence_is_named_and_left_out(server: RunningServer) -> None:
    r = sdk(server).messages.create(
        model="m", max_tokens=200, system=SYSTEM, messages=QUESTION,
        extra_body={"temperature": 0}, stop_sequences=["Paris"],
    )  # fmt: skip
    assert r.stop_reason == "stop_sequence" and r.stop_sequence == "Paris"
    assert "Paris" not in r.content[0].text  # type: ignore[union-attr]
    short = sdk(server).messages.create(model="m", max_tokens=3, messages=QUESTION)
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 3


def test_any_tool_gives_a_tool_use_block_that_validates(server: RunningServer) -> None:
    client = sdk(server)
    ask: list[Any] = [{"role": "user", "content": "What's the weather in Paris?"}]
    # seeded: unseeded, the 135M model sometimes repeats its call until max_tokens
    for seed, temperature in ((0, 0.0), (1, 0.5), (2, 1.0)):
        r = client.messages.create(
            model="m", max_tokens=400, messages=ask, tools=TOOLS, tool_choice={"type": "any"},
            extra_body={"temperature": temperature, "seed": seed},
        )  # fmt: skip
        assert r.stop_reason == "tool_use"
        uses = [b for b in r.content if b.type == "tool_use"]
        for use in uses:
            assert use.name == "get_weather" and use.id
            jsonschema.validate(use.input, WEATHER)
    one = client.messages.create(
        model="m", max_tokens=200, messages=ask, tools=TOOLS, extra_body={"temperature": 0.5},
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
    )  # fmt: skip
    (use,) = [b for b in one.content if b.type == "tool_use"]
    # the result goes back as a tool_result block, and the answer is clean
    follow: list[Any] = [
        *ask,
        {"role": "assistant", "content": [b.model_dump() for b in one.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": "Sunny, 21 C"}]},
    ]  # fmt: skip
    again = client.messages.create(model="m", max_tokens=64, messages=follow, tools=TOOLS,
                                   extra_body={"temperature": 0})  # fmt: skip
    assert again.stop_reason in ("end_turn", "max_tokens", "tool_use")
    with client.messages.stream(model="m", max_tokens=200, messages=ask, tools=TOOLS,
                                tool_choice={"type": "any"},
                                extra_body={"temperature": 0}) as stream:  # fmt: skip
        final = stream.get_final_message()
    streamed = [b for b in final.content if b.type == "tool_use"]
    assert streamed and final.stop_reason == "tool_use"
    for b in streamed:
        jsonschema.validate(b.input, WEATHER)


def test_count_tokens_and_an_api_key_in_x_api_key(tmp_path_factory: pytest.TempPathFactory,
                                                  server: RunningServer) -> None:  # fmt: skip
    counted = sdk(server).messages.count_tokens(model="m", messages=QUESTION, system=SYSTEM)
    r = httpx.post(f"{server.url}/v1/messages", timeout=60, json={
        "model": "m", "max_tokens": 1, "messages": QUESTION, "system": SYSTEM})  # fmt: skip
    assert counted.input_tokens == r.json()["usage"]["input_tokens"] > 0
    bad = [{"messages": QUESTION},
           {"max_tokens": 5, "messages": QUESTION, "tool_choice": {"type": "any"}},
           {"max_tokens": 5, "messages": [{"role": "user", "content": [
               {"type": "image", "source": {"type": "base64", "data": "aGk="}}]}]}]  # fmt: skip
    for body in bad:
        r = httpx.post(f"{server.url}/v1/messages", json=body, timeout=30)
        assert r.status_code == 400  # in Anthropic's error shape
        assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    folder = tmp_path_factory.mktemp("keyed")
    keyed = start_server(folder, "--api-key", "sekret", "-c", "2048", "-np", "1")
    try:
        ok = anthropic.Anthropic(base_url=keyed.url, api_key="sekret", max_retries=0)
        assert ok.messages.create(model="m", max_tokens=2, messages=QUESTION).content
        with pytest.raises(anthropic.AuthenticationError):
            anthropic.Anthropic(base_url=keyed.url, api_key="wrong", max_retries=0).messages.create(
                model="m", max_tokens=2, messages=QUESTION)  # fmt: skip
    finally:
        stop_server(keyed)


@pytest.fixture(scope="module")
def thinker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("qwen3")
    path = build_gguf(folder / "m.gguf", FAMILIES["qwen3"])
    srv = start_server(folder, "-m", str(path), "-c", "2048", "-np", "1")
    yield srv
    stop_server(srv)


def test_a_thinking_budget_on_a_model_that_opens_think(thinker: RunningServer) -> None:
    r = sdk(thinker).messages.create(
        model="m", max_tokens=40, messages=QUESTION,
        thinking={"type": "enabled", "budget_tokens": 12},
    )  # fmt: skip
    kinds = [b.type for b in r.content]
    assert kinds[0] == "thinking" and "text" in kinds or "tool_use" in kinds, kinds
    thinking = r.content[0].thinking  # type: ignore[union-attr]
    assert "<think>" not in thinking and "</think>" not in thinking
    for b in r.content[1:]:
        assert b.type != "text" or "</think>" not in b.text
