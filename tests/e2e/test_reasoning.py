"""Thinking apart from the answer, on a Qwen3-style model whose prompt opens `<think>`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer, start_server, stop_server
from tests.gguf_factory import FAMILIES, build_gguf

HI = [{"role": "user", "content": "Hello, how are you?"}]
SCHEMA = {"type": "json_schema", "json_schema": {"schema": {
    "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
    "additionalProperties": False}}}  # fmt: skip


@pytest.fixture(scope="module")
def thinker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("qwen3")
    srv = start_server(folder, "-m", str(build_gguf(folder / "q.gguf", FAMILIES["qwen3"])),
                       "-c", "2048", "-np", "2")  # fmt: skip
    yield srv
    stop_server(srv)


def chat(srv: RunningServer, **body: Any) -> dict[str, Any]:
    full = {"messages": HI, "max_tokens": 40, "temperature": 0, "cache_prompt": False, **body}
    r = httpx.post(f"{srv.url}/v1/chat/completions", json=full, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def streamed(srv: RunningServer, **body: Any) -> tuple[str, str]:
    full = {"messages": HI, "max_tokens": 40, "temperature": 0, "cache_prompt": False,
            "stream": True, **body}  # fmt: skip
    content, reasoning = [], []
    with httpx.stream("POST", f"{srv.url}/v1/chat/completions", json=full, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    content.append(choice["delta"].get("content") or "")
                    reasoning.append(choice["delta"].get("reasoning_content") or "")
    return "".join(content), "".join(reasoning)


def test_thinking_goes_to_reasoning_content_alone(thinker: RunningServer) -> None:
    props = httpx.get(f"{thinker.url}/props", timeout=30).json()
    assert props["chat_template"].rstrip().endswith("<think>\n{% endif %}")
    message = chat(thinker)["choices"][0]["message"]
    assert message["reasoning_content"]
    content = message["content"] or ""
    assert "<think>" not in content and "</think>" not in content
    assert message["reasoning_content"] not in content
    assert streamed(thinker) == (content, message["reasoning_content"])


def test_a_reasoning_budget_closes_the_thinking_and_an_answer_follows(
    thinker: RunningServer,
) -> None:
    close = httpx.post(f"{thinker.url}/tokenize", json={"content": "</think>"}).json()["tokens"]
    assert len(close) == 1
    for budget in (12, 0):
        r = chat(thinker, reasoning_budget=budget, verbose=True, max_tokens=30)
        tokens = r["__verbose"]["tokens"]
        assert close[0] in tokens and tokens.index(close[0]) <= budget
        message = r["choices"][0]["message"]
        assert message["content"] and "</think>" not in message["content"]
        assert bool(message.get("reasoning_content")) is (budget > 0)
    assert streamed(thinker, reasoning_budget=12) == (
        chat(thinker, reasoning_budget=12)["choices"][0]["message"]["content"],
        chat(thinker, reasoning_budget=12)["choices"][0]["message"]["reasoning_content"],
    )


def test_reasoning_format_none_leaves_the_thinking_in_content(thinker: RunningServer) -> None:
    message = chat(thinker, reasoning_format="none", reasoning_budget=5)["choices"][0]["message"]
    assert message["content"] and "reasoning_content" not in message


def test_a_constraint_applies_once_the_thinking_is_over(thinker: RunningServer) -> None:
    for seed in range(3):
        r = chat(thinker, response_format=SCHEMA, reasoning_budget=6, temperature=0.8,
                 seed=seed, max_tokens=200)  # fmt: skip
        message = r["choices"][0]["message"]
        assert message["reasoning_content"] and r["choices"][0]["finish_reason"] == "stop"
        assert isinstance(json.loads(message["content"])["ok"], bool)
