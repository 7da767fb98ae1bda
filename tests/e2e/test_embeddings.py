"""Embeddings through the real server: OpenAI's `/v1/embeddings` with the `openai` SDK, and
llama-server's `/embedding`, on the bundled model (mean-pooled: its GGUF names no pooling)."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai

from tests.conftest import RunningServer


def sdk(srv: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{srv.url}/v1", api_key="none", max_retries=0)


def test_one_normalized_vector_per_input_and_the_same_for_the_same_input(
    server: RunningServer,
) -> None:
    texts = ["The lighthouse keeper", "A cat sleeps", "The lighthouse keeper"]
    r = sdk(server).embeddings.create(model="m", input=texts)
    vectors = [np.array(d.embedding) for d in r.data]
    assert [d.index for d in r.data] == [0, 1, 2] and len({len(v) for v in vectors}) == 1
    assert np.allclose(vectors[0], vectors[2]) and not np.allclose(vectors[0], vectors[1])
    assert all(abs(np.linalg.norm(v) - 1) < 1e-4 for v in vectors)
    assert r.usage.prompt_tokens == r.usage.total_tokens > 0
    alone = sdk(server).embeddings.create(model="m", input=texts[0]).data[0].embedding
    assert np.allclose(alone, vectors[0], atol=1e-4)  # in a batch or alone


def test_base64_decodes_to_the_same_floats(server: RunningServer) -> None:
    body = {"input": ["A cat sleeps"], "encoding_format": "base64"}
    packed = httpx.post(f"{server.url}/v1/embeddings", json=body, timeout=60).json()
    raw = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    floats = sdk(server).embeddings.create(model="m", input="A cat sleeps").data[0].embedding
    assert np.allclose(raw, floats, atol=1e-6)


def test_llama_servers_route_and_token_ids(server: RunningServer) -> None:
    tokens = httpx.post(f"{server.url}/tokenize", json={"content": "A cat"}, timeout=30)
    ids = tokens.json()["tokens"]
    r = httpx.post(f"{server.url}/embedding", json={"content": ids, "embd_normalize": -1})
    (item,) = r.json()
    assert item["index"] == 0 and len(item["embedding"]) == 1
    assert abs(np.linalg.norm(item["embedding"][0]) - 1) > 1e-3  # not normalized


def test_bad_inputs_are_400s(server: RunningServer) -> None:
    for body in ({"input": []}, {"input": [""]}, {"input": "word " * 600}, {},
                 {"input": [10**9]}, {"input": "x", "encoding_format": "int8"}):  # fmt: skip
        r = httpx.post(f"{server.url}/v1/embeddings", json=body, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["message"], (body, r.text)
