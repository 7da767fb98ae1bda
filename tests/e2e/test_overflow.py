"""A prompt over the context, on the bundled model: a 10,000-token prompt on a 4,096-token slot
is a 400 in every dialect's own shape, read by each dialect's own client, streamed or not, and
never a 200. Nothing is decoded for a refused prompt, so this takes no time past the start."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.conftest import RunningServer, start_server, stop_server

N_CTX = 4096
LONG = " hello" * 10_000  # 10,000 tokens of SmolLM2's vocabulary


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = start_server(tmp_path_factory.mktemp("overflow"), "-c", str(N_CTX), "-np", "1")
    yield srv
    stop_server(srv)


def test_native_says_exceed_context_size_error(small: RunningServer) -> None:
    for stream in (False, True):
        r = httpx.post(f"{small.url}/completion", json={"prompt": LONG, "stream": stream},
                       timeout=60)  # fmt: skip
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["type"] == "exceed_context_size_error" and err["n_ctx"] == N_CTX
        assert err["n_prompt_tokens"] >= 10_000


def test_openai_says_context_length_exceeded(small: RunningServer) -> None:
    client = openai.OpenAI(base_url=f"{small.url}/v1", api_key="none", max_retries=0)
    asks = [
        ("messages", lambda s: client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": LONG}], stream=s)),
        ("prompt", lambda s: client.completions.create(model="m", prompt=LONG, stream=s)),
        ("input", lambda s: client.responses.create(model="m", input=LONG, stream=s)),
    ]  # fmt: skip
    for param, ask in asks:
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as refused:
                ask(stream)
            assert refused.value.code == "context_length_exceeded", refused.value.body
            assert refused.value.param == param
            assert refused.value.type == "invalid_request_error"


def test_anthropic_says_prompt_is_too_long(small: RunningServer) -> None:
    client = anthropic.Anthropic(base_url=small.url, api_key="none", max_retries=0)
    for stream in (False, True):
        with pytest.raises(anthropic.BadRequestError) as refused:
            client.messages.create(model="m", max_tokens=8, stream=stream,
                                   messages=[{"role": "user", "content": LONG}])  # fmt: skip
        message = refused.value.body["error"]["message"]  # type: ignore[index]
        assert message.startswith("prompt is too long: ")
        assert message.endswith(f"tokens > {N_CTX} maximum")


def test_ollama_says_the_input_exceeds_the_context_length(small: RunningServer) -> None:
    client = ollama.Client(host=small.url)
    asks = [
        lambda s: client.chat(model="m", messages=[{"role": "user", "content": LONG}], stream=s),
        lambda s: client.generate(model="m", prompt=LONG, stream=s),
    ]
    for ask in asks:
        for stream in (False, True):
            with pytest.raises(ollama.ResponseError) as refused:
                answer = ask(stream)
                if stream:
                    list(answer)
            assert refused.value.status_code == 400
            assert refused.value.error.startswith("the input length exceeds the context length")
