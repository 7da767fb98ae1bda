"""`build_runtime` on any Engine: a scripted engine (the bundled model's vocabulary and
template, with a decode that replays a fixed answer) runs the real scheduler and app, every
dialect's request going through `prepare` to the scheduler and back."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from endmark.engine import Embedder, SeqInput, Vocab
from endmark.loading import build_runtime
from endmark.runtime import Runtime
from endmark.server.app import create_app
from endmark.settings import Settings

HI = [{"role": "user", "content": "What is the capital of France?"}]


class ScriptedEngine:
    """The real engine's vocabulary and template; decode favours, after each token of
    `answer`, the next one, and after any other token the first."""

    def __init__(self, real: Any, answer: Sequence[int], n_ctx: int = 1024) -> None:
        self.real = real
        self.vocab: Vocab = real.vocab
        self.n_ctx, self.n_seq_max, self.model_path = n_ctx, 4, real.model_path
        self.after = {t: answer[i + 1] for i, t in enumerate(answer[:-1])}
        self.first = answer[0]

    def decode(self, inputs: Sequence[SeqInput]) -> dict[int, np.ndarray]:
        out = {}
        for seq in inputs:
            if not seq.want_logits:
                continue
            last = list(seq.tokens)[-seq.n_logits :]
            rows = np.full((len(last), self.vocab.n_vocab), -30.0, dtype=np.float32)
            for row, token in zip(rows, last, strict=True):
                row[self.after.get(token, self.first)] = 30.0
            out[seq.seq_id] = rows
        return out

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        return self.real.tokenize(text, add_special, parse_special)  # type: ignore[no-any-return]

    def drop(self, seq_id: int, from_pos: int = 0) -> None: ...

    def copy(self, src: int, dst: int, up_to: int) -> None: ...

    def can_continue(self, seq_id: int, n: int) -> bool:
        return True

    def metadata(self, key: str) -> str | None:
        return self.real.metadata(key)  # type: ignore[no-any-return]

    def model_facts(self) -> dict[str, Any]:
        return self.real.model_facts()  # type: ignore[no-any-return]

    def chat_template(self) -> str | None:
        return self.real.chat_template()  # type: ignore[no-any-return]

    def builtin_template_names(self) -> list[str]:
        return self.real.builtin_template_names()  # type: ignore[no-any-return]

    def apply_builtin_template(
        self, template: str, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool
    ) -> str:
        return self.real.apply_builtin_template(template, messages, add_generation_prompt)  # type: ignore[no-any-return]

    def lltokenizer(self, end_tokens: Sequence[int]) -> Any:
        return self.real.lltokenizer(end_tokens)

    def embedder(self, pooling: str = "auto") -> Embedder:
        raise ValueError("the scripted engine does not embed")

    def close(self) -> None: ...  # the real engine is the session's


@pytest.fixture()
def runtime(engine) -> Iterator[Runtime]:  # type: ignore[no-untyped-def]
    answer = [
        *engine.tokenize(" Paris.", False, False),
        engine.tokenize("<|im_end|>", False, True)[0],
    ]
    settings = Settings(parallel=2, metrics=True)
    rt = build_runtime(ScriptedEngine(engine, answer), settings)
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
    assert runtime.tool_call_format()["name"] == "generic"


def test_every_dialect_reaches_the_scheduler_and_answers(client: TestClient) -> None:
    native = client.post("/completion", json={"prompt": "The capital of France is"}).json()
    assert native["content"] == " Paris." and native["stop_type"] == "eos"
    chat = client.post("/v1/chat/completions", json={"messages": HI, "n": 2, "seed": 1}).json()
    assert [c["message"]["content"] for c in chat["choices"]] == [" Paris."] * 2
    assert chat["choices"][0]["finish_reason"] == "stop"
    text = client.post("/v1/completions", json={"prompt": ["a", "b"], "max_tokens": 1}).json()
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
