"""The `/v1` API through the official `openai` SDK against the real server and SmolLM2."""

from __future__ import annotations

import math
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import CAPITAL, MARKERS, RunningServer

QUESTION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": CAPITAL},
]


@pytest.fixture()
def sdk(server: RunningServer) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    yield c
    c.close()


def assert_clean_answer(text: str) -> None:
    for marker in MARKERS:
        assert marker not in text
    lines = [line.strip().lower() for line in text.splitlines()]
    assert not any(line.startswith(("user", "assistant")) for line in lines), text


def test_models_lists_the_served_model(sdk: openai.OpenAI) -> None:
    models = sdk.models.list().data
    assert [m.id for m in models] == ["SmolLM2-135M-Instruct.Q4_1"]


def test_chat_answer_ends_cleanly_with_usage_and_endmark_detail(sdk: openai.OpenAI) -> None:
    r = sdk.chat.completions.create(model="any", messages=QUESTION, temperature=0)  # type: ignore[arg-type]
    choice = r.choices[0]
    assert choice.finish_reason == "stop"
    assert "Paris" in (choice.message.content or "")
    assert_clean_answer(choice.message.content or "")
    info = r.model_extra["endmark"]  # type: ignore[index]
    assert info["stop_type"] == "eos" and info["stopping_token"]["text"] == "<|im_end|>"
    assert r.usage is not None
    assert r.usage.completion_tokens == info["timings"]["predicted_n"] > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_stream_equals_the_plain_answer(sdk: openai.OpenAI) -> None:
    plain = sdk.chat.completions.create(model="any", messages=QUESTION, temperature=0)  # type: ignore[arg-type]
    stream = sdk.chat.completions.create(
        model="any",
        messages=QUESTION,  # type: ignore[arg-type]
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage, info = [], None, None, None
    for chunk in stream:
        for c in chunk.choices:
            text.append(c.delta.content or "")
            if c.finish_reason:
                finish, info = c.finish_reason, c.model_extra["endmark"]  # type: ignore[index]
        if chunk.usage:
            usage = chunk.usage
    assert "".join(text) == plain.choices[0].message.content
    assert finish == "stop" and info["stopping_token"]["text"] == "<|im_end|>"  # type: ignore[index]
    assert usage is not None and usage.completion_tokens == plain.usage.completion_tokens  # type: ignore[union-attr]


def test_chat_logprobs_are_consistent(sdk: openai.OpenAI) -> None:
    r = sdk.chat.completions.create(
        model="any",
        messages=QUESTION,  # type: ignore[arg-type]
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        max_tokens=6,
    )
    content = r.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == r.usage.completion_tokens  # type: ignore[union-attr]
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 3 and t.logprob <= 0
        assert t.token == t.top_logprobs[0].token
        assert [x.logprob for x in t.top_logprobs] == sorted(
            (x.logprob for x in t.top_logprobs), reverse=True
        )
    assert r.choices[0].finish_reason == "length"


def test_list_content_max_completion_tokens_and_n(sdk: openai.OpenAI) -> None:
    r = sdk.chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}],
        max_completion_tokens=5,
        n=2,
        seed=11,
        temperature=1.0,
    )
    assert [c.index for c in r.choices] == [0, 1]
    assert r.usage is not None and r.usage.completion_tokens <= 10
    for c in r.choices:
        assert c.finish_reason in ("stop", "length")
        assert_clean_answer(c.message.content or "")


def test_completions_work_streaming_and_not_with_logprobs(sdk: openai.OpenAI) -> None:
    prompt = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    r = sdk.completions.create(model="any", prompt=prompt, max_tokens=64, temperature=0, logprobs=2)
    c = r.choices[0]
    assert c.finish_reason == "stop" and "4" in c.text
    assert_clean_answer(c.text)
    lp = c.logprobs
    assert lp is not None and len(lp.tokens) == r.usage.completion_tokens  # type: ignore[union-attr, arg-type]
    assert "".join(lp.tokens) == c.text  # type: ignore[arg-type]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):  # type: ignore[arg-type]
        assert len(top) == 2 and math.isclose(max(top.values()), logprob)
        assert top[token] == logprob
    assert r.model_extra["endmark"]["stopping_token"]["text"] == "<|im_end|>"  # type: ignore[index]
    parts, finish = [], None
    for chunk in sdk.completions.create(
        model="any", prompt=prompt, max_tokens=64, temperature=0, stream=True
    ):
        parts.append(chunk.choices[0].text)
        finish = chunk.choices[0].finish_reason or finish
    assert "".join(parts) == c.text and finish == "stop"


def test_completions_take_a_list_of_prompts(sdk: openai.OpenAI) -> None:
    r = sdk.completions.create(model="any", prompt=["Hello", "The sky is"], max_tokens=3)
    assert sorted(c.index for c in r.choices) == [0, 1]
    assert r.usage is not None and r.usage.completion_tokens == 6


def test_stop_strings_on_v1(sdk: openai.OpenAI) -> None:
    r = sdk.chat.completions.create(
        model="any",
        messages=QUESTION,  # type: ignore[arg-type]
        temperature=0,
        stop=[" of France"],
    )
    assert r.choices[0].message.content == "The capital"
    assert r.model_extra["endmark"]["stop_type"] == "word"  # type: ignore[index]


@pytest.mark.parametrize(
    "kwargs,param",
    [
        ({"messages": []}, "messages"),
        ({"messages": QUESTION, "temperature": 3}, "temperature"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
        ({"messages": QUESTION, "n": 0}, "n"),
        ({"messages": QUESTION, "logit_bias": {"abc": 1}}, "logit_bias"),
        ({"messages": QUESTION, "logit_bias": {"9999999": 1}}, "logit_bias"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages",
        ),
    ],
)
def test_bad_requests_get_openai_shaped_400s(
    sdk: openai.OpenAI, kwargs: dict[str, object], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model="any", **kwargs)  # type: ignore[call-overload]
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "invalid_request_error"
    assert body["param"] == param and body["message"]
    assert sdk.chat.completions.create(model="any", messages=QUESTION, max_tokens=2)


def test_raw_errors_have_openai_shape(server: RunningServer) -> None:
    r = httpx.post(f"{server.url}/v1/chat/completions", content=b"{nope", timeout=10)
    assert r.status_code == 400
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.post(f"{server.url}/v1/completions", json={"prompt": ""}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    assert httpx.get(f"{server.url}/v1/nothing-here", timeout=10).status_code == 404


def test_apply_template_shows_the_rendered_prompt(server: RunningServer) -> None:
    r = httpx.post(f"{server.url}/apply-template", json={"messages": QUESTION}, timeout=10)
    assert r.json()["prompt"].endswith(
        f"<|im_start|>user\n{CAPITAL}<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.parametrize("prompt", [[], [[]], [[1], []]])
def test_an_empty_prompt_list_is_a_400_not_a_500(server: RunningServer, prompt: object) -> None:
    # found by schemathesis: "prompt": [] with "n": 4 once reached an IndexError
    r = httpx.post(f"{server.url}/v1/completions", json={"prompt": prompt, "n": 4}, timeout=30)
    assert r.status_code == 400 and "prompt" in r.json()["error"]["message"]
