"""`prepare`: specs to GenerationRequests, defaults and policies resolved once for every
dialect. The model is used for its vocabulary and template only; nothing is decoded."""

from __future__ import annotations

from typing import Any

import pytest

from endmark.constraints import ConstraintCompiler
from endmark.drafts import DraftSettings
from endmark.loading import learn
from endmark.prepare import (
    Preparer,
    drafts_for,
    drafts_for_sampling,
    n_predict,
    resolve_sampling,
    seeded,
)
from endmark.sampling import SamplingParams
from endmark.server.dialects.anthropic_protocol import MessagesRequest
from endmark.server.dialects.native_protocol import CompletionRequest
from endmark.server.dialects.ollama_protocol import ChatRequest, GenerateRequest
from endmark.server.dialects.openai_protocol import ChatCompletionRequest, CompletionsRequest
from endmark.server.dialects.responses_protocol import ResponsesRequest
from endmark.settings import Settings
from endmark.spec import ChatInput, RequestSpec, SamplingSpec

HI = [{"role": "user", "content": "Hi"}]


def every_dialect(**knobs: Any) -> dict[str, RequestSpec]:
    """One spec per dialect, each with these sampling knobs given the dialect's way."""
    options = {"options": knobs} if knobs else {}
    return {
        "native": CompletionRequest.model_validate({"prompt": "Hi", **knobs}).to_spec(),
        "completions": CompletionsRequest.model_validate({"prompt": "Hi", **knobs}).to_spec(),
        "chat": ChatCompletionRequest.model_validate({"messages": HI, **knobs}).to_spec(),
        "anthropic": MessagesRequest.model_validate(
            {"max_tokens": 4, "messages": HI, **knobs}
        ).to_spec(),
        "ollama chat": ChatRequest.model_validate({"messages": HI, **options}).to_spec(),
        "ollama generate": GenerateRequest.model_validate({"prompt": "Hi", **options}).to_spec(),
        "responses": ResponsesRequest.model_validate({"input": "Hi", **knobs}).to_spec(HI),
    }


@pytest.fixture(scope="module")
def prepare(engine):  # type: ignore[no-untyped-def]
    """A preparer for these settings on the bundled model's vocabulary and template."""

    def make(**settings: Any) -> Preparer:
        s = Settings(**settings)
        learned = learn(engine, s)
        ids = learned.eog.ids()
        compiler = ConstraintCompiler(lambda: engine.lltokenizer(ids), engine.vocab.n_vocab)
        return Preparer(engine, s, learned, compiler)

    return make


# -- pure policies --------------------------------------------------------------------------


def test_a_knob_is_the_requests_else_the_servers_else_the_dialects() -> None:
    dialect = SamplingParams(temperature=1.0, top_k=0)
    spec = SamplingSpec(temperature=0.2, dialect=dialect)
    server = {"temperature": 0.5, "top_k": 3, "seed": 9}
    got = resolve_sampling(spec, server, {})
    assert (got.temperature, got.top_k, got.seed, got.top_p) == (0.2, 3, 9, 0.95)
    assert resolve_sampling(SamplingSpec(dialect=dialect), {}, {}).top_k == 0


@pytest.mark.parametrize("dialect", list(every_dialect()))
def test_the_servers_temp_reaches_every_dialect(dialect: str) -> None:
    server = Settings(temperature=0.3, seed=7, presence_penalty=0.5).sampling_defaults()
    got = resolve_sampling(every_dialect()[dialect].sampling, server, {})
    assert (got.temperature, got.seed, got.presence_penalty) == (0.3, 7, 0.5)
    given = every_dialect(temperature=0.1, seed=2)[dialect].sampling
    assert (resolve_sampling(given, server, {}).temperature, given.seed) == (0.1, 2)


def test_anthropics_and_ollamas_own_defaults_hold_without_server_defaults() -> None:
    specs = every_dialect()
    anthropic = resolve_sampling(specs["anthropic"].sampling, {}, {})
    assert (anthropic.temperature, anthropic.top_p, anthropic.top_k, anthropic.min_p) == (
        1.0, 1.0, 0, 0.0,
    )  # fmt: skip
    ollama = resolve_sampling(specs["ollama chat"].sampling, {}, {})
    assert (ollama.temperature, ollama.top_p, ollama.min_p, ollama.repeat_penalty) == (
        0.8, 0.9, 0.0, 1.1,
    )  # fmt: skip
    openai = resolve_sampling(specs["chat"].sampling, {}, {})
    assert (openai.temperature, openai.top_p, openai.seed) == (1.0, 1.0, -1)


def test_choice_i_gets_seed_plus_i_unless_unseeded() -> None:
    assert seeded(SamplingParams(seed=5), 2).seed == 7
    assert seeded(SamplingParams(seed=-1), 2).seed == -1


def test_the_limit_is_the_requests_else_the_servers_within_the_cap() -> None:
    assert n_predict(Settings(), 5) == 5 and n_predict(Settings(), -1) == -1
    assert n_predict(Settings(n_predict=100), -1) == 100
    assert n_predict(Settings(n_predict_cap=50), -1) == 50
    assert n_predict(Settings(n_predict_cap=50), 80) == 50


def test_drafts_follow_the_server_unless_the_request_asks() -> None:
    assert drafts_for(Settings(spec="none")) is None
    assert drafts_for(Settings(draft_max=4)) == DraftSettings(4, 0)
    assert drafts_for(Settings(), 0) is None
    assert drafts_for(Settings(), 3, 1) == DraftSettings(3, 1, asked=True)
    server = drafts_for(Settings())
    assert drafts_for_sampling(server, SamplingParams(temperature=0.8)) is None
    assert drafts_for_sampling(server, SamplingParams(temperature=0)) is server


# -- the model-dependent part -----------------------------------------------------------------


def test_cache_prompt_is_the_servers_unless_the_request_says(prepare) -> None:  # type: ignore[no-untyped-def]
    off = prepare(cache_prompt=False)
    for dialect, spec in every_dialect().items():
        assert not off(spec)[0].cache_prompt, dialect
    native = CompletionRequest.model_validate({"prompt": "Hi", "cache_prompt": True}).to_spec()
    assert off(native)[0].cache_prompt
    chat = ChatCompletionRequest.model_validate({"messages": HI, "cache_prompt": True})
    assert off(chat.to_spec())[0].cache_prompt


def test_n_choices_of_each_prompt_are_seeded_in_order(prepare) -> None:  # type: ignore[no-untyped-def]
    body = {"prompt": ["a", "b"], "n": 3, "seed": 10}
    requests = prepare()(CompletionsRequest.model_validate(body).to_spec())
    assert [r.sampling.seed for r in requests] == [10, 11, 12, 10, 11, 12]
    assert requests[0].prompt == requests[2].prompt != requests[3].prompt


def test_a_stop_that_is_one_control_token_ends_as_eog(prepare) -> None:  # type: ignore[no-untyped-def]
    p = prepare()
    start = p.engine.tokenize("<|im_start|>", False, True)
    spec = RequestSpec(["Hi"], "t", stop=["<|im_start|>", "word", ""])
    (request,) = p(spec)
    assert request.policy is not None
    assert request.policy.stop == ("word",)
    assert start[0] in request.policy.eog and start[0] not in p.eog


def test_the_server_limit_and_label_reach_the_request(prepare) -> None:  # type: ignore[no-untyped-def]
    chat = ChatCompletionRequest.model_validate({"messages": HI, "max_tokens": 80})
    (request,) = prepare(n_predict_cap=50)(chat.to_spec())
    assert request.policy is not None and request.policy.n_predict == 50
    assert request.label == "POST /v1/chat/completions"


def test_a_chat_turn_is_rendered_by_the_template_once_per_choice(prepare) -> None:  # type: ignore[no-untyped-def]
    p = prepare()
    spec = RequestSpec(ChatInput(HI), "t", SamplingSpec(seed=1), n=2)
    first, second = p(spec)
    text = p.engine.vocab
    rendered = b"".join(text.special_pieces[t] for t in first.prompt).decode()
    assert rendered.endswith("<|im_start|>assistant\n") and "Hi" in rendered
    assert first.prompt == second.prompt and first.prompt is not second.prompt
    assert (first.sampling.seed, second.sampling.seed) == (1, 2)


def test_tools_are_wired_to_the_calls_channel(prepare) -> None:  # type: ignore[no-untyped-def]
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    auto = ChatCompletionRequest.model_validate({"messages": HI, "tools": tools})
    (request,) = prepare()(auto.to_spec())
    assert request.channels is not None and request.on_call is not None
    assert request.constraint is None
    forced = auto.model_copy(update={"tool_choice": "required"})
    (request,) = prepare()(forced.to_spec())
    assert request.constraint is not None


def test_a_json_constraint_can_close_cut_json(prepare) -> None:  # type: ignore[no-untyped-def]
    body = {"prompt": "Hi", "json_schema": {"type": "object"}}
    (request,) = prepare()(CompletionRequest.model_validate(body).to_spec())
    assert request.constraint is not None and request.close_json is not None


def test_a_bias_by_text_covers_its_tokens_and_false_bans(prepare) -> None:  # type: ignore[no-untyped-def]
    p = prepare()
    hello = p.engine.tokenize("hello", False, False)
    spec = RequestSpec(["Hi"], "t", SamplingSpec(logit_bias=(("hello", False), (5, 2.0))))
    (request,) = p(spec)
    assert request.sampling.logit_bias == {**dict.fromkeys(hello, float("-inf")), 5: 2.0}
