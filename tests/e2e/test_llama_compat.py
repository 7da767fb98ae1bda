"""llama-server's routes and fields on the real server, default flags (`--verbose --metrics`)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer

CHAT = [{"role": "system", "content": "Book"}, {"role": "user", "content": "What is the best book"}]


def sse(client: httpx.Client, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with client.stream("POST", path, json={**body, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        lines = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
    return [json.loads(ln) for ln in lines if ln != "[DONE]"]


def test_a_prompt_over_4096_tokens_is_served_on_default_flags(client: httpx.Client) -> None:
    """Each slot gets the training context (8,192 tokens here), not a share of 4,096."""
    slot = client.get("/props").json()["default_generation_settings"]
    assert slot["n_ctx"] == 8192
    prompt = "The old lighthouse keeper wrote in his log every night. " * 391
    n = len(client.post("/tokenize", json={"content": prompt}).json()["tokens"])
    assert 4200 <= n <= 4500
    r = client.post("/completion", json={"prompt": prompt, "n_predict": 4}, timeout=300)
    assert r.status_code == 200, r.text
    assert r.json()["tokens_evaluated"] == n and r.json()["tokens_predicted"] > 0


def test_several_prompts_get_a_list_of_results(client: httpx.Client) -> None:
    ids = client.post("/tokenize", json={"content": "Once upon a time"}).json()["tokens"]
    body = {"prompt": [ids, "Once upon a time", {"prompt_string": "Once upon a time"}],
            "n_predict": 6, "temperature": 0}  # fmt: skip
    results = client.post("/completion", json=body).json()
    assert [r["index"] for r in results] == [0, 1, 2]
    assert len({r["content"] for r in results}) == 1
    one = client.post("/completion", json={"prompt": ["Once upon a time"], "n_predict": 2})
    assert isinstance(one.json(), dict)  # a single result is an object, as in llama-server
    mixed = client.post("/completion", json={"prompt": [ids[0], " upon a time"], "n_predict": 2})
    assert isinstance(mixed.json(), dict)  # ids and text in one list: one prompt
    streamed = sse(client, "/completion", {"prompt": ["Hi", "Hello"], "n_predict": 3})
    assert {c["index"] for c in streamed if c["stop"]} == {0, 1}
    media = {"prompt_string": "Hi <__media__>", "multimodal_data": ["iVBORw0KGgo="]}
    r = client.post("/completion", json={"prompt": media})
    assert r.status_code == 400 and "multimodal" in r.json()["error"]["message"]


def test_post_sampling_probs(client: httpx.Client) -> None:
    body = {"prompt": "Today was the day. Today I would finally become a", "n_probs": 10,
            "n_predict": 5, "temperature": 1.0, "post_sampling_probs": True, "seed": 3}  # fmt: skip
    probs = client.post("/completion", json=body).json()["completion_probabilities"]
    assert len(probs) == 5
    for tok in probs:
        assert 0.0 < tok["prob"] <= 1.0 and "logprob" not in tok
        tops = [p["prob"] for p in tok["top_probs"]]
        assert all(0.0 < p <= 1.0 for p in tops)
        assert len(tops) == 10 or sum(tops) == pytest.approx(1.0)


def test_timings_per_token_and_prompt_progress(client: httpx.Client) -> None:
    body = {"prompt": "word " * 300, "n_predict": 4, "timings_per_token": True,
            "return_progress": True, "cache_prompt": False}  # fmt: skip
    chunks = sse(client, "/completion", body)
    progress = [c["prompt_progress"] for c in chunks if "prompt_progress" in c]
    assert progress[0]["processed"] == progress[0]["cache"] and len(progress) >= 2
    assert progress[-1]["processed"] == progress[-1]["total"] == 301
    tokens = [c for c in chunks if c.get("tokens") and not c["stop"]]
    assert tokens and all(c["timings"]["predicted_n"] >= 1 for c in tokens)


def test_response_fields_and_generation_settings(client: httpx.Client) -> None:
    body = {
        "prompt": "Hi",
        "n_predict": 3,
        "response_fields": ["content", "generation_settings/n_predict"],
    }
    assert set(client.post("/completion", json=body).json()) == {
        "content", "generation_settings/n_predict",
    }  # fmt: skip
    banned = client.post("/completion", json={"prompt": "Hi", "n_predict": 2, "ignore_eos": True})
    bias = banned.json()["generation_settings"]["logit_bias"]
    assert {b["token"] for b in bias} >= {0, 2} and all(b["bias"] is None for b in bias)
    plain = client.post("/completion", json={"prompt": "Hi", "n_predict": 2}).json()
    assert plain["generation_settings"]["logit_bias"] == [] and "has_new_line" in plain


@pytest.mark.parametrize("path", ["/chat/completions", "/v1/chat/completions"])
def test_a_prompt_over_the_slot_context_is_context_length_exceeded(
    client: httpx.Client, path: str
) -> None:
    """OpenAI's shape under /v1, with llama-server's numbers beside it; llama-server's own
    on its alias without the prefix, as every error there."""
    for stream in (False, True):
        r = client.post(path, json={"messages": CHAT * 800, "stream": stream})
        assert r.status_code == 400
        err = r.json()["error"]
        if path.startswith("/v1"):
            assert err["type"] == "invalid_request_error"
            assert (err["code"], err["param"]) == ("context_length_exceeded", "messages")
        else:
            assert err["type"] == "exceed_context_size_error"
        assert err["n_ctx"] == 8192 < err["n_prompt_tokens"]


def test_chat_streams_start_with_the_role_alone_and_end_with_timings(
    client: httpx.Client,
) -> None:
    body = {"messages": CHAT, "max_tokens": 6, "stream_options": {"include_usage": True},
            "timings_per_token": True}  # fmt: skip
    chunks = sse(client, "/chat/completions", body)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert "timings" not in chunks[0]
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:] if c["choices"])
    content = [c["choices"][0]["delta"].get("content") for c in chunks[1:] if c["choices"]]
    assert all(text is None or text for text in content)  # no empty content deltas
    assert chunks[-1]["choices"] == [] and chunks[-1]["timings"]["predicted_n"] == 6
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert "content" not in finish[0]["choices"][0]["delta"]


def test_a_last_assistant_message_is_continued(client: httpx.Client) -> None:
    prefill = [*CHAT, {"role": "assistant", "content": "The best book is"}]
    r = client.post("/chat/completions", json={"messages": prefill, "max_tokens": 4}).json()
    assert r["__verbose"]["prompt"].endswith("<|im_start|>assistant\nThe best book is")
    explicit = {"messages": prefill, "max_tokens": 2, "add_generation_prompt": False,
                "continue_final_message": True}  # fmt: skip
    assert (
        client.post("/v1/chat/completions", json=explicit)
        .json()["__verbose"]["prompt"]
        .endswith("The best book is")
    )
    both = {**explicit, "add_generation_prompt": True}
    assert client.post("/v1/chat/completions", json=both).status_code == 400
    twice = [*prefill, {"role": "assistant", "content": "again"}]
    assert client.post("/v1/chat/completions", json={"messages": twice}).status_code == 400


def test_input_tokens_health_models_and_a_helpful_404(client: httpx.Client) -> None:
    n = client.post("/chat/completions/input_tokens", json={"messages": CHAT}).json()
    chat = client.post("/v1/chat/completions", json={"messages": CHAT, "max_tokens": 1}).json()
    assert n["input_tokens"] == chat["usage"]["prompt_tokens"]
    assert client.get("/v1/health").json() == {"status": "ok"}
    assert client.get("/models").json()["data"][0]["id"] == "SmolLM2-135M-Instruct.Q4_1"
    missing = client.post("/chat/completion", json={})
    message = missing.json()["error"]["message"]
    assert missing.status_code == 404 and "/chat/completion" in message and "/v1" in message


def test_a_request_whose_client_left_gets_its_log_line(server: RunningServer) -> None:
    body = {"prompt": "Once upon a time", "n_predict": 2000, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/completion", json=body, timeout=0.5)
    deadline = time.monotonic() + 10
    while "cancelled after" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    line = next(ln for ln in server.log().splitlines() if "cancelled after" in ln)
    assert "POST /completion: prompt" in line and "the client left" in line
