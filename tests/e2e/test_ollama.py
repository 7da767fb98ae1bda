"""Ollama's API through the real server with the official `ollama` Python client."""

from __future__ import annotations

import json

import httpx
import jsonschema
import ollama
import pytest

from tests.conftest import CAPITAL, RunningServer
from tests.e2e.test_openai import assert_clean_answer

QUESTION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": CAPITAL},
]
GREEDY = {"temperature": 0, "num_predict": 200}


@pytest.fixture(scope="module")
def client(server: RunningServer) -> ollama.Client:
    return ollama.Client(host=server.url)


def test_list_show_ps_and_version(client: ollama.Client, server: RunningServer) -> None:
    (listed,) = client.list().models
    assert listed.model and listed.size and listed.details and listed.details.format == "gguf"
    shown = client.show(listed.model)
    assert "completion" in (shown.capabilities or []) and shown.template
    assert shown.modelinfo and shown.modelinfo["general.architecture"] == "llama"
    (loaded,) = client.ps().models
    assert loaded.model == listed.model
    assert httpx.head(server.url + "/", timeout=30).status_code == 200
    assert httpx.get(server.url + "/api/version", timeout=30).json()["version"]


def test_chat_ends_cleanly_and_the_stream_joins_to_it(client: ollama.Client) -> None:
    # once to cache the prompt: evaluated whole and read after its cached prefix are other
    # numerics, and with Ollama's repeat penalty this answer differs between the two
    client.chat(model="m", messages=QUESTION, options={**GREEDY, "num_predict": 1})
    plain = client.chat(model="m", messages=QUESTION, options=GREEDY)
    assert plain.done and plain.done_reason == "stop" and "Paris" in plain.message.content
    assert_clean_answer(plain.message.content)
    assert plain.eval_count and plain.prompt_eval_count and plain.total_duration
    chunks = list(client.chat(model="m", messages=QUESTION, options=GREEDY, stream=True))
    assert "".join(c.message.content for c in chunks) == plain.message.content
    last = chunks[-1]
    assert last.done and last.done_reason == "stop" and last.eval_count == plain.eval_count
    assert all(not c.done for c in chunks[:-1])


def test_generate_and_a_length_stop(client: ollama.Client) -> None:
    r = client.generate(model="m", prompt="What is the capital of France?", options=GREEDY)
    assert r.done_reason == "stop" and "Paris" in r.response
    short = client.generate(model="m", prompt="Tell a story.", options={"num_predict": 4})
    assert short.done_reason == "length" and short.eval_count == 4


def test_a_schema_format_validates_for_every_seed(client: ollama.Client) -> None:
    schema = {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 30}, "country": {"type": "string", "maxLength": 30},
    }, "required": ["city", "country"]}  # fmt: skip
    for seed in range(5):
        r = client.chat(
            model="m", messages=[{"role": "user", "content": "Name a city and its country."}],
            format=schema, options={"temperature": 0.8, "seed": seed},
        )  # fmt: skip
        jsonschema.validate(json.loads(r.message.content), schema)


def test_embed_and_the_legacy_route(client: ollama.Client) -> None:
    r = client.embed(model="m", input=["A cat sleeps", "A cat sleeps", "The sea"])
    a, b, c = r.embeddings
    assert a == b and a != c and abs(sum(x * x for x in a) - 1) < 1e-4
    legacy = client.embeddings(model="m", prompt="A cat sleeps").embedding
    assert len(legacy) == len(a) and abs(sum(x * x for x in legacy) - 1) > 1e-3


def test_bad_requests_are_400s(server: RunningServer) -> None:
    bad = [
        ("/api/chat", {"messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}),
        ("/api/chat", {"messages": [{"role": "robot", "content": "x"}]}),
        ("/api/chat", {"messages": QUESTION, "options": {"temperature": -1}}),
        ("/api/generate", {"prompt": "x", "format": {"type": "nonsense"}}),
        ("/api/embed", {"input": []}),
    ]
    for path, body in bad:
        r = httpx.post(server.url + path, json=body, timeout=30)
        assert r.status_code == 400, (path, body, r.text)
        assert isinstance(r.json()["error"], str)  # Ollama's shape: the message alone
    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=server.url).chat(model="m", messages=[{"role": "robot", "content": ""}])
    assert refused.value.status_code == 400 and "role" in refused.value.error
