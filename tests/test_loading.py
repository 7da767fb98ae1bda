"""`build_runtime` on any Engine: the scripted engine (answering " Paris." to anything) runs
the real scheduler and app, every dialect's request going through `prepare` to the scheduler
and back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from endmark.loading import build_runtime
from endmark.runtime import Runtime
from endmark.server.app import create_app
from endmark.settings import Settings
from tests.scripted_engine import ScriptedEngine

HI = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture()
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(parallel=2, metrics=True)
    engine = ScriptedEngine(respond=lambda _prompt: " Paris.", n_ctx=1024, n_seq_max=2)
    model = tmp_path / "scripted.gguf"
    model.write_bytes(b"GGUF")
    rt = build_runtime(engine, settings, model)
    yield rt
    rt.close()


@pytest.fixture()
def client(runtime: Runtime) -> Iterator[TestClient]:
    app = create_app(runtime.settings, load=lambda _settings, _progress: runtime)
    with TestClient(app) as c:
        yield c


def test_a_runtime_is_built_from_any_engine_and_says_what_it_learned(runtime: Runtime) -> None:
    assert runtime.learned.template is not None
    assert "<|im_end|>" in {t["text"] for t in runtime.eog_tokens()}
    assert (runtime.n_ctx, runtime.n_ctx_slot, runtime.n_slots) == (1024, 512, 2)
    assert runtime.tool_call_format()["learned_from_template"]


def test_every_dialect_reaches_the_scheduler_and_answers(client: TestClient) -> None:
    native = client.post("/completion", json={"prompt": "The capital of France is"}).json()
    assert native["content"] == " Paris." and native["stop_type"] == "eos"
    chat = client.post("/v1/chat/completions", json={"messages": HI, "n": 2, "seed": 1}).json()
    assert [c["message"]["content"] for c in chat["choices"]] == [" Paris."] * 2
    assert chat["choices"][0]["finish_reason"] == "stop"
    text = client.post("/v1/completions", json={"prompt": ["a", "b"], "max_tokens": 2}).json()
    assert [c["text"] for c in text["choices"]] == [" Paris", " Paris"]
    assert text["choices"][0]["finish_reason"] == "length"
    claude = client.post("/v1/messages", json={"max_tokens": 9, "messages": HI}).json()
    assert claude["content"][0]["text"] == " Paris." and claude["stop_reason"] == "end_turn"
    ollama = client.post("/api/chat", json={"messages": HI, "stream": False}).json()
    assert ollama["message"]["content"] == " Paris." and ollama["done_reason"] == "stop"
    response = client.post("/v1/responses", json={"input": "Capital of France?"}).json()
    assert response["output"][0]["content"][0]["text"] == " Paris."
    streamed = client.post("/v1/chat/completions", json={"messages": HI, "stream": True}).text
    assert '"content":" Paris"' in streamed and streamed.endswith("data: [DONE]\n\n")


def test_model_facts_are_read_through_the_runtime(client: TestClient) -> None:
    props = client.get("/props").json()
    assert (props["n_ctx"], props["n_ctx_slot"], props["total_slots"]) == (1024, 512, 2)
    assert props["default_generation_settings"]["params"]["cache_prompt"] is True
    assert client.get("/v1/models").json()["data"][0]["meta"]["n_ctx"] == 1024
    assert "completion" in client.post("/api/show", json={}).json()["capabilities"]
    assert client.get("/api/ps").json()["models"][0]["context_length"] == 1024
    assert len(client.get("/slots").json()) == 2
    client.post("/completion", json={"prompt": "x", "n_predict": 1})
    assert "endmark_slots 2.0" in client.get("/metrics").text
    tokens = client.post("/chat/completions/input_tokens", json={"messages": HI}).json()
    assert tokens["input_tokens"] > 5
