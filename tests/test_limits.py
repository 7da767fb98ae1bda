"""Every dialect's answer to a prompt over the context, and to numbers out of range, on the
scripted engine through the real app: a 400 in the dialect's own error shape, before any
stream starts, or a 200, never a 5xx; a chat is truncated only when it asks, and says so."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.scripted_app import ScriptedApp, ndjson_lines, scripted_app, sse_events
from tests.scripted_engine import ScriptedEngine

N_CTX = 4096  # each of the scripted engine's 4 slots
WORD = " world"  # one token of the scripted vocabulary
LONG = WORD * 10_000  # 10,000 tokens


@pytest.fixture(scope="module")
def app() -> Iterator[ScriptedApp]:
    engine = ScriptedEngine(respond=lambda prompt: "Hello", n_ctx=4 * N_CTX)
    with scripted_app(engine=engine) as app:
        assert app.runtime.n_ctx_slot == N_CTX
        yield app


def chat_turn(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# Each generation path, a body asking for `text`, and where its sampling knobs go.
PATHS: dict[str, Any] = {
    "/completion": lambda t: {"prompt": t, "n_predict": 2},
    "/v1/completions": lambda t: {"prompt": t, "max_tokens": 2},
    "/v1/chat/completions": lambda t: {"messages": chat_turn(t), "max_tokens": 2},
    "/v1/responses": lambda t: {"input": t, "max_output_tokens": 2},
    "/v1/messages": lambda t: {"model": "m", "max_tokens": 2, "messages": chat_turn(t)},
    "/api/chat": lambda t: {"messages": chat_turn(t), "options": {"num_predict": 2}},
    "/api/generate": lambda t: {"prompt": t, "options": {"num_predict": 2}},
}


def error_of(path: str, body: Any) -> str:
    """The message of an error body, checked to be in the shape of the dialect `path` speaks."""
    if path.startswith("/api/"):  # Ollama's: the message alone
        assert set(body) == {"error"} and isinstance(body["error"], str)
        return body["error"]
    if path.startswith("/v1/messages"):
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        return body["error"]["message"]
    err = body["error"]
    if path.startswith("/v1/"):  # OpenAI's
        assert {"message", "type", "param", "code"} <= set(err)
        assert err["type"] == "invalid_request_error"
    else:  # llama.cpp's
        assert err["code"] == 400 and isinstance(err["type"], str)
    return err["message"]


async def send_all(app: ScriptedApp, requests: list[tuple[str, str]]) -> list[httpx.Response]:
    """Raw bodies (so they may hold what JSON writers refuse: NaN, 1e999), 32 at a time."""
    transport = httpx.ASGITransport(app=app.app)
    headers = {"content-type": "application/json"}
    gate = asyncio.Semaphore(32)  # within the server's queue (64): a 503 is no answer here
    async with httpx.AsyncClient(transport=transport, base_url="http://scripted") as c:

        async def send(path: str, body: str) -> httpx.Response:
            async with gate:
                return await c.post(path, content=body, headers=headers, timeout=60)

        return list(await asyncio.gather(*(send(p, b) for p, b in requests)))


# -- a prompt over the context ----------------------------------------------------------------


def test_a_prompt_over_the_context_is_a_400_in_every_dialects_shape(app: ScriptedApp) -> None:
    sent = [(p, json.dumps({**make(LONG), "stream": s})) for p, make in PATHS.items()
            for s in (False, True)]  # fmt: skip
    for (path, _), r in zip(sent, asyncio.run(send_all(app, sent)), strict=True):
        assert r.status_code == 400, (path, r.text[:200])  # a 400, not a stream's error event
        body = r.json()
        message = error_of(path, body)
        if path.startswith("/v1/messages"):
            assert message.startswith("prompt is too long: ") and message.endswith(
                f" tokens > {N_CTX} maximum"
            )
        elif path.startswith("/api/"):
            assert message.startswith("the input length exceeds the context length")
        elif path.startswith("/v1/"):
            param = {"/v1/completions": "prompt", "/v1/responses": "input"}.get(path, "messages")
            assert body["error"]["code"] == "context_length_exceeded"
            assert body["error"]["param"] == param
            assert body["error"]["n_ctx"] == N_CTX < body["error"]["n_prompt_tokens"]
        else:
            assert body["error"]["type"] == "exceed_context_size_error"
            assert body["error"]["n_prompt_tokens"] == 10_000
            assert body["error"]["n_ctx"] == N_CTX


def test_a_prompt_must_leave_room_for_one_token(app: ScriptedApp) -> None:
    full = app.post("/completion", {"prompt": WORD * N_CTX, "n_predict": 4})
    assert full.status_code == 400 and full.json()["error"]["n_prompt_tokens"] == N_CTX
    room = app.post("/completion", {"prompt": WORD * (N_CTX - 1), "n_predict": 4}).json()
    assert room["tokens_predicted"] == 1 and room["stop_type"] == "limit" and room["truncated"]


def test_counting_a_prompt_over_the_context_still_counts(app: ScriptedApp) -> None:
    r = app.post("/v1/chat/completions/input_tokens", {"messages": chat_turn(LONG)})
    assert r.status_code == 200 and r.json()["input_tokens"] > 10_000
    r = app.post("/v1/messages/count_tokens", {"model": "m", "messages": chat_turn(LONG)})
    assert r.status_code == 200 and r.json()["input_tokens"] > 10_000


def test_an_ollama_chat_is_truncated_only_when_asked_and_says_so(app: ScriptedApp) -> None:
    history = [{"role": "system", "content": "Be brief."}]
    for i in range(6):  # 6 turns of about 1,000 tokens: more than the context
        history += [{"role": "user", "content": f"Q{i}" + WORD * 500},
                    {"role": "assistant", "content": f"A{i}" + WORD * 500}]  # fmt: skip
    history.append({"role": "user", "content": "Last question"})
    body = {"messages": history, "options": {"num_predict": 2}}
    refused = app.post("/api/chat", {**body, "stream": False})
    assert refused.status_code == 400
    assert error_of("/api/chat", refused.json()).startswith("the input length exceeds")

    whole = app.post("/api/chat", {**body, "stream": False, "truncate": True})
    assert whole.status_code == 200 and whole.json()["truncated_messages"] == 5
    prompt = app.engine.text(app.engine.prompts[-1])
    assert len(app.engine.prompts[-1]) < N_CTX
    assert "Be brief." in prompt and "Last question" in prompt
    assert "Q2" not in prompt and "A2" in prompt  # the fewest dropped: the oldest five
    lines = ndjson_lines(app.post("/api/chat", {**body, "stream": True, "truncate": True}).text)
    assert lines[-1]["done"] and lines[-1]["truncated_messages"] == 5
    assert "truncated_messages" not in lines[0]

    last_alone = [history[0], {"role": "user", "content": LONG}]
    r = app.post("/api/chat", {"messages": last_alone, "truncate": True, "stream": False})
    assert r.status_code == 400  # the last message is never dropped, nor cut


# -- numbers out of range ---------------------------------------------------------------------

# Values out of every range, as JSON text: past 64 bits, past a double, not JSON numbers at
# all, and numbers JSON holds that no knob takes.
VALUES = ("18446744073709551616", "-9223372036854775809", "1e999", "NaN", "-Infinity",
          "9223372036854775807", "-9223372036854775808", "-1", "1e308", "-1e308", "1e-300",
          "5e-324")  # fmt: skip
LLAMA_KNOBS = ("seed", "temperature", "top_k", "top_p", "min_p", "repeat_penalty",
               "repeat_last_n", "presence_penalty", "frequency_penalty", "n_probs",
               "t_max_predict_ms", "speculative.n_max", "speculative.n_min")  # fmt: skip
KNOBS = {
    "/completion": (*LLAMA_KNOBS, "n_predict", "max_tokens", "n_keep", "logit_bias"),
    "/v1/completions": (*LLAMA_KNOBS, "n", "max_tokens", "logprobs", "logit_bias"),
    "/v1/chat/completions": (*LLAMA_KNOBS, "n", "max_tokens", "max_completion_tokens",
                             "top_logprobs", "reasoning_budget", "logit_bias"),
    "/v1/responses": ("seed", "temperature", "top_p", "top_k", "max_output_tokens",
                      "top_logprobs"),
    "/v1/messages": ("seed", "temperature", "top_p", "top_k", "max_tokens"),
    "/api/chat": ("options.seed", "options.temperature", "options.top_k", "options.top_p",
                  "options.min_p", "options.repeat_penalty", "options.repeat_last_n",
                  "options.num_predict", "options.num_ctx", "options.presence_penalty"),
    "/api/generate": ("options.seed", "options.num_predict", "options.temperature",
                      "options.top_k"),
}  # fmt: skip


def with_value(path: str, knob: str, value: str, stream: bool) -> str:
    """The path's body with `knob` set to the JSON text `value`."""
    body = {**PATHS[path]("Hi"), "stream": stream}
    if path in ("/completion", "/v1/chat/completions") and knob not in ("n_probs", "top_logprobs"):
        body["n_probs"] = 2  # logprobs are computed too: none may be NaN
    if path == "/v1/chat/completions" and knob == "top_logprobs":
        body["logprobs"] = True
    slot = "@VALUE@"
    if knob == "logit_bias":
        body[knob] = [[5, slot]] if path == "/completion" else {"5": slot}
    elif knob.startswith("options."):
        body["options"][knob.removeprefix("options.")] = slot
    else:
        body[knob] = slot
    return json.dumps(body).replace(f'"{slot}"', value)


def stream_failed(path: str, text: str) -> bool:
    if path.startswith("/api/"):
        return any("error" in line for line in ndjson_lines(text))
    events = sse_events(text)
    return any(name in ("error", "response.failed") or
               (isinstance(data, dict) and isinstance(data.get("error"), dict))
               for name, data in events)  # fmt: skip


def test_numbers_out_of_range_are_400s_or_clamped_never_5xx(app: ScriptedApp) -> None:
    sent = [(path, with_value(path, knob, value, stream))
            for path, knobs in KNOBS.items() for knob in knobs for value in VALUES
            for stream in (False, True)]  # fmt: skip
    answers = asyncio.run(send_all(app, sent))
    refused = set()
    for (path, body), r in zip(sent, answers, strict=True):
        assert r.status_code in (200, 400), (path, body, r.status_code, r.text[:300])
        if r.status_code == 400:
            assert error_of(path, r.json())
            refused.add(body)
        elif '"stream": true' in body:
            assert not stream_failed(path, r.text), (path, body, r.text[:300])
        else:
            assert not r.json().get("error"), (path, body)  # Responses' `error: null`
    # what no dialect takes: beyond 64 bits, beyond a double, not a number
    for path, body in sent:
        if any(f": {v}" in body for v in VALUES[:5]):
            assert body in refused, (path, body)
    # and what each knob refuses within them
    for knob in ("temperature", "top_p", "repeat_penalty", "n_probs", "top_k", "n"):
        for value in ("-1", "1e308"):
            if knob in ("top_k", "n_probs") and value == "1e308":
                continue  # an integer knob: a float is a type error (a 400 all the same)
            body = with_value("/v1/chat/completions", knob, value, False)
            assert body in refused, body


def test_a_huge_top_k_or_token_limit_is_clamped(app: ScriptedApp) -> None:
    big = 2**63 - 1
    r = app.post("/completion", {"prompt": "Hi", "top_k": big, "n_predict": big, "seed": 2**64 - 1})
    assert r.status_code == 200 and r.json()["content"] == "Hello"
    settings = r.json()["generation_settings"]
    assert settings["seed"] == 2**64 - 1 and settings["top_k"] == big
