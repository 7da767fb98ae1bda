"""The native API against the real server and the bundled SmolLM2 (issue 2's acceptance)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from tests.conftest import CHATML_PROMPT, MARKERS, RunningServer


def stream(client: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    chunks = []
    with client.stream("POST", "/completion", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                chunks.append(json.loads(line[len("data: ") :]))
    assert chunks and chunks[-1]["stop"] is True
    assert all(c["stop"] is False for c in chunks[:-1])
    return chunks


def joined(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["content"] for c in chunks)


def assert_clean(text: str) -> None:
    for marker in MARKERS:
        assert marker not in text


def test_health_and_props_name_the_bundled_model(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    props = client.get("/props").json()
    assert props["model_path"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    # -c 0 (the default): every slot gets the model's training context, 8,192 tokens
    assert (props["n_ctx_slot"], props["n_ctx"]) == (8192, 4 * 8192)
    eog = {t["text"]: t for t in props["eog_tokens"]}
    assert eog["<|im_end|>"]["id"] == 2


def test_chatml_prompt_ends_on_im_end_and_never_shows_it(client: httpx.Client) -> None:
    body = {"prompt": CHATML_PROMPT, "temperature": 0, "n_predict": 64}
    r = client.post("/completion", json=body).json()
    assert r["stop"] is True
    assert r["stop_type"] == "eos"
    assert r["stopping_token"] == {"id": 2, "text": "<|im_end|>", "source": "vocab"}
    assert "Paris" in r["content"]
    assert_clean(r["content"])
    assert r["tokens_predicted"] > 0 and r["tokens_evaluated"] > 0
    assert r["truncated"] is False
    t = r["timings"]
    assert t["predicted_n"] == r["tokens_predicted"] and t["predicted_per_second"] > 0

    chunks = stream(client, body)
    assert joined(chunks) == r["content"]
    assert_clean(joined(chunks))
    last = chunks[-1]
    assert last["stop_type"] == "eos" and last["stopping_token"]["text"] == "<|im_end|>"
    assert last["tokens_predicted"] == r["tokens_predicted"]


def test_ignore_eos_runs_exactly_to_the_limit(client: httpx.Client) -> None:
    body = {
        "prompt": CHATML_PROMPT,
        "temperature": 0,
        "ignore_eos": True,
        "n_predict": 40,
        "return_tokens": True,
    }
    r = client.post("/completion", json=body).json()
    assert r["stop_type"] == "limit"
    assert r["tokens_predicted"] == 40 and len(r["tokens"]) == 40
    assert 2 not in r["tokens"] and 0 not in r["tokens"]
    assert_clean(r["content"])
    chunks = stream(client, body)
    assert sum(len(c["tokens"]) for c in chunks[:-1]) == 40
    assert joined(chunks) == r["content"]


def test_multi_token_stop_string_is_cut_and_never_streamed(client: httpx.Client) -> None:
    base = {"prompt": CHATML_PROMPT, "temperature": 0, "n_predict": 64}
    full = client.post("/completion", json=base).json()["content"]
    stop = " of France"
    assert stop in full
    tokens = client.post("/tokenize", json={"content": stop}).json()["tokens"]
    assert len(tokens) > 1
    chunks = stream(client, {**base, "stop": [stop]})
    text = joined(chunks)
    assert text == full[: full.index(stop)]
    assert chunks[-1]["stop_type"] == "word" and chunks[-1]["stopping_word"] == stop
    for i in range(1, len(stop) + 1):
        assert not text.endswith(stop[:i])
    r = client.post("/completion", json={**base, "stop": [stop]}).json()
    assert r["content"] == text and r["stop_type"] == "word"


def test_text_that_only_looked_like_a_stop_string_is_released(client: httpx.Client) -> None:
    base = {"prompt": CHATML_PROMPT, "temperature": 0, "n_predict": 64}
    full = client.post("/completion", json=base).json()["content"]
    stop = "Paris!!"  # the answer says "Paris" but never "Paris!!"
    assert "Paris" in full and stop not in full
    chunks = stream(client, {**base, "stop": [stop]})
    assert joined(chunks) == full
    assert chunks[-1]["stop_type"] == "eos"


def test_n_probs_gives_sorted_alternatives_and_greedy_picks_the_top(
    client: httpx.Client,
) -> None:
    body = {"prompt": "The weather today is", "temperature": 0, "n_predict": 8, "n_probs": 5}
    body["ignore_eos"] = True
    for probs in (
        client.post("/completion", json=body).json()["completion_probabilities"],
        [p for c in stream(client, body)[:-1] for p in c["completion_probabilities"]],
    ):
        assert len(probs) == 8
        for p in probs:
            top = p["top_logprobs"]
            assert len(top) == 5
            lps = [t["logprob"] for t in top]
            assert all(lp <= 0 for lp in lps) and lps == sorted(lps, reverse=True)
            assert p["id"] == top[0]["id"] and p["logprob"] == pytest.approx(lps[0])
            assert isinstance(p["token"], str) and isinstance(p["bytes"], list)


def test_multibyte_utf8_streams_without_replacement_characters(client: httpx.Client) -> None:
    body = {
        "prompt": "Emoji and Chinese: 🎉🎉🚀✨ 你好世界，我们一起学习中文。🎉🚀",
        "temperature": 0,
        "n_predict": 48,
        "ignore_eos": True,
    }
    chunks = stream(client, body)
    text = joined(chunks)
    assert "\ufffd" not in text
    assert any(ord(ch) > 0x2000 for ch in text), text
    assert all("\ufffd" not in c["content"] for c in chunks)
    assert client.post("/completion", json=body).json()["content"] == text


BAD_BODIES: list[tuple[str, bytes]] = [
    ("malformed json", b'{"prompt": "hi"'),
    ("not an object", b"[1, 2, 3]"),
    ("prompt of wrong type", b'{"prompt": 5}'),
    ("prompt missing", b'{"n_predict": 5}'),
    ("empty prompt", b'{"prompt": ""}'),
    ("empty token list", b'{"prompt": []}'),
    ("token id too large", b'{"prompt": [1, 999999]}'),
    ("negative token id", b'{"prompt": [-3]}'),
    ("prompt longer than the context", json.dumps({"prompt": "hello " * 9000}).encode()),
    ("n_predict below -1", b'{"prompt": "hi", "n_predict": -2}'),
    ("n_predict as text", b'{"prompt": "hi", "n_predict": "ten"}'),
    ("temperature as text", b'{"prompt": "hi", "temperature": "hot"}'),
    ("top_p as null", b'{"prompt": "hi", "top_p": null}'),
    ("top_k as bool", b'{"prompt": "hi", "top_k": true}'),
    ("seed as float", b'{"prompt": "hi", "seed": 1.5}'),
    ("invalid utf-8", b'{"prompt": "\xff\xfe bad"}'),
    ("lone surrogate", b'{"prompt": "\\ud800 bad"}'),
    ("stop of wrong type", b'{"prompt": "hi", "stop": [1, 2]}'),
    ("logit_bias outside vocab", b'{"prompt": "hi", "logit_bias": [[999999, 1.0]]}'),
    ("logit_bias not a pair", b'{"prompt": "hi", "logit_bias": [[5]]}'),
    ("logit_bias bias as text", b'{"prompt": "hi", "logit_bias": [[5, "up"]]}'),
]


@pytest.mark.parametrize("name,body", BAD_BODIES, ids=[n for n, _ in BAD_BODIES])
def test_bad_input_is_a_400_and_the_server_keeps_serving(
    client: httpx.Client, name: str, body: bytes
) -> None:
    for stream_flag in (False, True):
        data = body
        if stream_flag and body.startswith(b'{"prompt"'):
            data = body[:-1] + b', "stream": true}'
        r = client.post("/completion", content=data, headers={"content-type": "application/json"})
        assert r.status_code == 400, (name, r.text)
        err = r.json()["error"]
        too_long = name == "prompt longer than the context"  # llama-server's own error type
        kind = "exceed_context_size_error" if too_long else "invalid_request_error"
        assert err["code"] == 400 and err["type"] == kind
        assert err["message"]
    ok = client.post("/completion", json={"prompt": "Hello", "n_predict": 2})
    assert ok.status_code == 200 and ok.json()["tokens_predicted"] == 2


def test_logit_bias_in_every_llama_cpp_form(client: httpx.Client) -> None:
    base = {"prompt": CHATML_PROMPT, "temperature": 0, "n_predict": 3, "return_tokens": True}
    paris = client.post("/tokenize", json={"content": " Paris"}).json()["tokens"][0]
    for bias in ([[paris, 100.0]], {str(paris): 100}, [[" Paris", 100]]):
        r = client.post("/completion", json={**base, "logit_bias": bias}).json()
        assert r["tokens"][0] == paris, bias
    banned = client.post("/completion", json={**base, "logit_bias": [[2, False]]}).json()
    assert banned["stop_type"] == "limit"


def test_tokenize_and_detokenize_round_trip(client: httpx.Client) -> None:
    text = "<|im_start|>user\nHi 🎉<|im_end|>"
    tokens = client.post("/tokenize", json={"content": text}).json()["tokens"]
    assert tokens[0] == 1 and 2 in tokens
    assert client.post("/detokenize", json={"tokens": tokens}).json()["content"] == text
    plain = client.post("/tokenize", json={"content": text, "parse_special": False}).json()
    assert 1 not in plain["tokens"]
    pieces = client.post("/tokenize", json={"content": "Hi 🎉", "with_pieces": True}).json()
    assert all({"id", "piece"} <= set(p) for p in pieces["tokens"])
    assert client.post("/detokenize", json={"tokens": [999999]}).status_code == 400
    assert client.post("/tokenize", json={"content": 3}).status_code == 400


def test_health_answers_during_a_long_generation(server: RunningServer) -> None:
    body = {"prompt": "Once upon a time", "n_predict": 400, "ignore_eos": True}
    done = threading.Event()

    def long_request() -> None:
        httpx.post(f"{server.url}/completion", json=body, timeout=120)
        done.set()

    worker = threading.Thread(target=long_request)
    worker.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
    assert time.monotonic() - t0 < 1.0
    assert not done.is_set()
    worker.join(timeout=120)


def test_logs_say_how_each_request_ended_with_every_token_in_verbose(
    client: httpx.Client, server: RunningServer
) -> None:
    client.post("/completion", json={"prompt": CHATML_PROMPT, "temperature": 0})
    time.sleep(0.2)
    log = server.log()
    assert "http://127.0.0.1:" in log
    assert "end-of-generation tokens: <|endoftext|> (id 0" in log
    assert "POST /completion: prompt" in log
    assert "eos <|im_end|> (id 2, source vocab)" in log
    assert "-> eos <|im_end|> (id 2, source vocab)" in log  # the verbose per-token line
    assert "-> continue" in log
