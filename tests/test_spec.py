"""Each dialect's wire model converts itself into a `RequestSpec`: what the request gave, with
unset knobs left None for `prepare` to decide. No model is needed."""

from __future__ import annotations

from typing import Any

import pytest

from endmark.invalid import InvalidRequest
from endmark.sampling import SamplingParams
from endmark.server.dialects.anthropic_protocol import MessagesRequest
from endmark.server.dialects.native_protocol import CompletionRequest
from endmark.server.dialects.ollama_protocol import ChatRequest, GenerateRequest
from endmark.server.dialects.openai_protocol import (
    ApplyTemplateRequest,
    ChatCompletionRequest,
    CompletionsRequest,
)
from endmark.server.dialects.responses_protocol import ResponsesRequest
from endmark.spec import ChatInput, RequestSpec, SamplingSpec

HI = [{"role": "user", "content": "Hi"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather"}}]


def test_native_leaves_what_it_was_not_given_to_prepare() -> None:
    spec = CompletionRequest.model_validate({"prompt": "Hello"}).to_spec()
    assert spec.input == ["Hello"] and spec.label == "POST /completion"
    assert spec.sampling.temperature is None and spec.sampling.seed is None
    assert spec.sampling.dialect == SamplingParams()  # llama.cpp's own defaults
    assert (spec.n_predict, spec.cache_prompt, spec.draft_max, spec.n) == (-1, None, None, 1)


def test_native_carries_what_it_was_given() -> None:
    body = {
        "prompt": ["a", "b"], "temperature": 0.1, "seed": 3, "max_tokens": 7,
        "stop": "x", "cache_prompt": False, "logit_bias": {"5": -1.0}, "n_probs": 2,
        "speculative.n_max": 3, "return_progress": True, "stream": True,
        "json_schema": {"type": "object"},
    }  # fmt: skip
    spec = CompletionRequest.model_validate(body).to_spec()
    assert spec.input == ["a", "b"]
    assert (spec.sampling.temperature, spec.sampling.seed) == (0.1, 3)
    assert spec.sampling.logit_bias == ((5, -1.0),) and spec.sampling.n_probs == 2
    assert (spec.n_predict, spec.stop, spec.cache_prompt) == (7, ["x"], False)
    assert spec.draft_max == 3 and spec.report_progress
    assert spec.constraint is not None and spec.constraint.kind == "json_schema"


def test_openai_chat_gives_messages_tools_reasoning_and_choices() -> None:
    body = {
        "messages": HI, "tools": TOOLS, "n": 2, "seed": 5, "max_tokens": 9,
        "max_completion_tokens": 4, "logprobs": True, "top_logprobs": 3,
        "reasoning_format": "none", "reasoning_budget": 0, "cache_prompt": True,
    }  # fmt: skip
    spec = ChatCompletionRequest.model_validate(body).to_spec()
    assert isinstance(spec.input, ChatInput)
    assert spec.input.messages == HI and spec.input.tools is not None
    assert spec.input.tools.tools[0].name == "get_weather"
    assert (spec.n, spec.sampling.seed, spec.n_predict) == (2, 5, 4)  # max_completion_tokens
    assert spec.sampling.logprobs and spec.sampling.n_probs == 3
    assert (spec.reasoning_format, spec.reasoning_budget, spec.cache_prompt) == ("none", 0, True)
    assert spec.label == "POST /v1/chat/completions"


def test_openai_defaults_are_the_dialects_own() -> None:
    spec = ChatCompletionRequest.model_validate({"messages": HI}).to_spec()
    assert spec.sampling == SamplingSpec(dialect=SamplingParams(temperature=1.0, top_p=1.0))
    assert (spec.n_predict, spec.reasoning_format, spec.reasoning_budget) == (-1, None, None)


def test_openai_completions_take_several_prompts_and_refuse_echo() -> None:
    spec = CompletionsRequest.model_validate({"prompt": ["a", "b"], "logprobs": 2}).to_spec()
    assert spec.input == ["a", "b"] and spec.n_predict == 16  # OpenAI's default max_tokens
    assert spec.sampling.logprobs and spec.sampling.n_probs == 2
    with pytest.raises(InvalidRequest) as refused:
        CompletionsRequest.model_validate({"prompt": "a", "echo": True}).to_spec()
    assert refused.value.param == "echo"


def test_anthropic_has_its_own_defaults_and_thinking_budgets() -> None:
    def spec(**extra: Any) -> RequestSpec:
        return MessagesRequest.model_validate({"max_tokens": 10, "messages": HI, **extra}).to_spec()

    plain = spec(system="Be brief", stop_sequences=["s"])
    assert plain.sampling.temperature is None
    dialect = plain.sampling.dialect
    assert (dialect.temperature, dialect.top_p, dialect.top_k, dialect.min_p) == (1.0, 1.0, 0, 0.0)
    assert isinstance(plain.input, ChatInput)
    assert plain.input.messages[0] == {"role": "system", "content": "Be brief"}
    assert (plain.n_predict, plain.stop, plain.reasoning_budget) == (10, ["s"], None)
    assert spec(thinking={"type": "enabled"}).reasoning_budget == -1
    assert spec(thinking={"type": "enabled", "budget_tokens": 30}).reasoning_budget == 30
    assert spec(thinking={"type": "disabled"}).reasoning_budget == 0
    assert spec(temperature=0.2).sampling.temperature == 0.2


def test_anthropic_refuses_images_as_a_messages_error() -> None:
    image = {"type": "image", "source": {"type": "base64", "data": ""}}
    req = MessagesRequest.model_validate(
        {"max_tokens": 1, "messages": [{"role": "user", "content": [image]}]}
    )
    with pytest.raises(InvalidRequest) as refused:
        req.to_spec()
    assert refused.value.param == "messages"


def test_ollama_options_have_ollamas_defaults() -> None:
    spec = ChatRequest.model_validate({"messages": HI}).to_spec()
    dialect = spec.sampling.dialect
    assert (dialect.top_p, dialect.min_p, dialect.repeat_penalty) == (0.9, 0.0, 1.1)
    assert spec.sampling.temperature is None and spec.reasoning_budget is None
    given = {"temperature": 0.1, "num_predict": 4, "stop": ["q"], "seed": 2}
    spec = ChatRequest.model_validate({"messages": HI, "options": given, "think": False}).to_spec()
    assert (spec.sampling.temperature, spec.sampling.seed) == (0.1, 2)
    assert (spec.n_predict, spec.stop, spec.reasoning_budget) == (4, ["q"], 0)


def test_ollama_refuses_tools_with_a_format() -> None:
    req = ChatRequest.model_validate({"messages": HI, "tools": TOOLS, "format": "json"})
    with pytest.raises(InvalidRequest) as refused:
        req.to_spec()
    assert refused.value.param == "format"


def test_ollama_generate_is_raw_or_a_chat_turn() -> None:
    raw = GenerateRequest.model_validate({"prompt": "Hi", "raw": True}).to_spec()
    assert raw.input == ["Hi"]
    chat = GenerateRequest.model_validate({"prompt": "Hi", "system": "S"}).to_spec()
    assert isinstance(chat.input, ChatInput)
    assert [m["role"] for m in chat.input.messages] == ["system", "user"]


def test_responses_is_one_chat_turn_after_its_history() -> None:
    body = {
        "input": "ignored here", "instructions": "Be brief", "n": 3, "max_output_tokens": 5,
        "reasoning": {"effort": "minimal"}, "include": ["message.output_text.logprobs"],
    }  # fmt: skip
    spec = ResponsesRequest.model_validate(body).to_spec(HI)
    assert isinstance(spec.input, ChatInput)
    assert spec.input.messages == [{"role": "system", "content": "Be brief"}, *HI]
    assert (spec.n, spec.n_predict, spec.reasoning_budget) == (1, 5, 0)
    assert spec.sampling.logprobs and spec.label == "POST /v1/responses"


def test_apply_template_takes_a_chat_turn() -> None:
    body = {"messages": HI, "add_generation_prompt": False, "tools": TOOLS}
    chat = ApplyTemplateRequest.model_validate(body).to_chat()
    assert chat.messages == HI and not chat.add_generation_prompt and chat.tools is not None


def test_a_spec_is_not_given_one_text_as_its_prompts() -> None:
    with pytest.raises(TypeError):
        RequestSpec("Hello", "t")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "knobs,param",
    [
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": float("inf")}, "top_p"),
        ({"repeat_penalty": 0.0}, "repeat_penalty"),
        ({"seed": 2**64}, "seed"),
        ({"seed": -(2**63) - 1}, "seed"),
        ({"n_probs": -1}, "n_probs"),
        ({"logit_bias": ((5, float("nan")),)}, "logit_bias"),
    ],
)
def test_a_spec_refuses_what_the_sampler_cannot_take(knobs: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        SamplingSpec(**knobs)
    assert refused.value.param == param


def test_a_spec_takes_every_64_bit_seed_bans_and_a_bounded_n() -> None:
    for seed in (-(2**63), -1, 0, 2**64 - 1):
        assert SamplingSpec(seed=seed).seed == seed
    assert SamplingSpec(logit_bias=((5, False), (6, -100.0))).logit_bias[0] == (5, False)
    with pytest.raises(InvalidRequest) as refused:
        RequestSpec([[1]], "t", n=129)
    assert refused.value.param == "n"


def test_each_dialect_names_the_field_that_holds_its_prompt() -> None:
    chat = {"messages": HI}
    assert ChatCompletionRequest.model_validate(chat).to_spec().prompt_param == "messages"
    assert CompletionsRequest.model_validate({"prompt": "x"}).to_spec().prompt_param == "prompt"
    assert ResponsesRequest.model_validate({"input": "x"}).to_spec(HI).prompt_param == "input"
    anthropic = MessagesRequest.model_validate({**chat, "max_tokens": 4})
    assert anthropic.to_spec().prompt_param == "messages"
    assert ChatRequest.model_validate(chat).to_spec().prompt_param == "messages"
    assert GenerateRequest.model_validate({"prompt": "x"}).to_spec().prompt_param == "prompt"
    assert CompletionRequest.model_validate({"prompt": "x"}).to_spec().prompt_param == "prompt"
