from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from endmark.channels import Piece, ToolCall
from endmark.delta import Delta
from endmark.endings import EndPolicy, EogSet, Finish, StopType
from endmark.engine import SeqInput
from endmark.events import Done, Timings, TokenEvent
from endmark.generation import Generation
from endmark.invalid import InvalidRequest
from endmark.request import GenerationRequest, tokenize_prompt
from endmark.sampling import SamplingParams
from tests.conftest import CHATML_PROMPT
from tests.gguf_factory import TEMPLATES
from tests.scripted_app import TOOLS, ScriptedApp, scripted_app
from tests.scripted_engine import CHATML_TOOLS_OPEN_THINK, ScriptedEngine


def test_prompts_may_be_text_ids_or_a_mix(engine) -> None:  # type: ignore[no-untyped-def]
    tok = engine.tokenize
    n = engine.vocab.n_vocab
    assert tokenize_prompt("<|im_start|>", tok, n) == [1]
    assert tokenize_prompt([1, "user", 2], tok, n) == [1, *tok("user", False, True), 2]
    for bad in ("", [], [n], [-1]):
        with pytest.raises(InvalidRequest):
            tokenize_prompt(bad, tok, n)


def run(engine, prompt: list[int], policy: EndPolicy, n_ctx: int = 1024) -> Generation:  # type: ignore[no-untyped-def]
    """Drive one generation by hand with the real engine, as the scheduler does."""
    req = GenerationRequest(prompt, SamplingParams(temperature=0), policy)
    gen = Generation(req, engine.vocab, policy, n_ctx)
    engine.drop(3)
    feed, pos = prompt, 0
    while gen.finish is None:
        logits = engine.decode([SeqInput(3, feed, pos)])[3][-1]
        pos += len(feed)
        gen.step(logits)
        feed = gen.tokens[-1:]
    engine.drop(3)
    return gen


def test_the_end_token_ends_and_is_not_kept(engine) -> None:  # type: ignore[no-untyped-def]
    eog = EogSet.from_vocab(engine.vocab)
    gen = run(engine, engine.tokenize(CHATML_PROMPT, False, True), EndPolicy(eog, n_predict=64))
    assert gen.finish is not None and gen.finish.stop_type == "eos"
    assert gen.finish.token is not None and gen.finish.token.id == 2
    assert 2 not in gen.tokens


def test_ignore_eos_bans_end_tokens_until_the_limit(engine) -> None:  # type: ignore[no-untyped-def]
    eog = EogSet.from_vocab(engine.vocab)
    policy = EndPolicy(eog, n_predict=20, ignore_eos=True)
    gen = run(engine, engine.tokenize(CHATML_PROMPT, False, True), policy)
    assert gen.finish is not None and gen.finish.stop_type == "limit"
    assert len(gen.tokens) == 20 and not set(gen.tokens) & set(eog.ids())


def test_running_out_of_context_is_a_truncated_limit(engine) -> None:  # type: ignore[no-untyped-def]
    eog = EogSet.from_vocab(engine.vocab)
    prompt = engine.tokenize(CHATML_PROMPT, False, True)
    gen = run(engine, prompt, EndPolicy(eog, ignore_eos=True), n_ctx=len(prompt) + 5)
    assert gen.finish is not None and gen.finish.truncated and len(gen.tokens) == 5


def test_a_zero_budget_finishes_before_sampling(engine) -> None:  # type: ignore[no-untyped-def]
    eog = EogSet.from_vocab(engine.vocab)
    policy = EndPolicy(eog, n_predict=0)
    gen = Generation(GenerationRequest([1], policy=policy), engine.vocab, policy, 64)
    finish = gen.finish_before_start()
    assert finish is not None and finish.stop_type == "limit"


def test_a_delta_is_true_when_any_channel_holds_something() -> None:
    call = ToolCall("f", "{}")
    assert not Delta()
    assert Delta("a") and Delta(reasoning="r") and Delta(calls=(call,))
    pieces = [Piece("reasoning", "why"), Piece("content", "a"), Piece("tool_call", call=call),
              Piece("content", "b")]  # fmt: skip
    assert Delta.of(pieces) == Delta("ab", "why", (call,))


def test_events_carry_their_delta() -> None:
    call = ToolCall("f", "{}")
    assert TokenEvent(5, "hi", reasoning="r", calls=(call,)).delta == Delta("hi", "r", (call,))
    done = Done(Finish("eos", tail="t"), (), 1, Timings(), "rt", (call,), (call,))
    assert done.delta == Delta("t", "rt", (call,))


@pytest.mark.parametrize(
    ("stop_type", "calls", "ended_by_calls"),
    [("eos", 1, True), ("word", 1, True), ("limit", 1, False), ("eos", 0, False)],
)
def test_a_call_ends_the_turn_unless_the_limit_cut_it(
    stop_type: StopType, calls: int, ended_by_calls: bool
) -> None:
    made = (ToolCall("f", "{}"),) * calls
    done = Done(Finish(stop_type), (), 1, Timings(), calls=made)
    assert done.ended_by_calls is ended_by_calls


# -- thinking before a forced call (issue 24, failure 4), on the scripted engine -------------

THINK_BODY = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
SAY = [{"role": "user", "content": "Weather in Paris?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def thinker() -> Iterator[ScriptedApp]:
    """The generation prompt opens `<think>`, as Qwen3.5's, Nemotron Nano v2's and
    MiniMax-M2's do."""
    with scripted_app(engine=ScriptedEngine(chat_template=CHATML_TOOLS_OPEN_THINK)) as app:
        yield app


def think_then_end(thought: str = "Paris") -> str:
    """The model thinks, then writes its end of turn, and would write the call after it."""
    return f"{thought}<|im_end|>{THINK_BODY}"


@pytest.mark.parametrize("tool_choice", ["required", NAMED])
def test_an_end_of_turn_while_thinking_ends_the_thinking_when_a_call_must_come(
    thinker: ScriptedApp, tool_choice: Any
) -> None:
    """The end token closes the thinking instead, and the model's own call follows."""
    body = {"messages": SAY, "tools": TOOLS, "tool_choice": tool_choice, "max_tokens": 48}
    choice = thinker.post("/v1/chat/completions", body, think_then_end()).json()["choices"][0]
    (call,) = choice["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert choice["message"]["reasoning_content"] == "Paris" and not choice["message"]["content"]
    assert choice["finish_reason"] == "tool_calls" and "tool_call_errors" not in choice["endmark"]


def test_under_auto_the_end_of_turn_while_thinking_ends_the_turn(thinker: ScriptedApp) -> None:
    body = {"messages": SAY, "tools": TOOLS, "max_tokens": 40}
    choice = thinker.post("/v1/chat/completions", body, think_then_end()).json()["choices"][0]
    assert not choice["message"].get("tool_calls") and choice["finish_reason"] == "stop"


def test_the_budget_closes_the_thinking_and_the_call_follows(thinker: ScriptedApp) -> None:
    """Two tokens of thought: the third is the forced `</think>`, then the call."""
    body = {"messages": SAY, "tools": TOOLS, "tool_choice": "required", "max_tokens": 80,
            "reasoning_budget": 2}  # fmt: skip
    script = "Hello world the" + THINK_BODY
    choice = thinker.post("/v1/chat/completions", body, script).json()["choices"][0]
    assert choice["message"]["reasoning_content"] == "Hello world"
    assert len(choice["message"]["tool_calls"]) == 1 and choice["finish_reason"] == "tool_calls"


def test_thinking_that_runs_on_closes_in_time_for_the_call(thinker: ScriptedApp) -> None:
    """No end of thinking, no reasoning budget: near the limit the thinking closes, and the
    call fits in what is left (not a call endmark wrote because none began)."""
    body = {"messages": SAY, "tools": TOOLS, "tool_choice": "required", "max_tokens": 60}
    answer = thinker.post("/v1/chat/completions", body, "Hello world " * 60).json()
    choice = answer["choices"][0]
    (call,) = choice["message"]["tool_calls"]
    assert "city" in json.loads(call["function"]["arguments"]), answer
    assert choice["message"]["reasoning_content"].startswith("Hello world Hello")
    assert "began a call" not in json.dumps(choice.get("endmark", {}))


def test_every_dialect_gets_the_call_after_the_thinking(thinker: ScriptedApp) -> None:
    anthropic = thinker.post("/v1/messages", {
        "model": "m", "max_tokens": 48, "messages": SAY, "tool_choice": {"type": "any"},
        "tools": [{"name": "get_weather", "input_schema": TOOLS[0]["function"]["parameters"]}],
    }, think_then_end()).json()  # fmt: skip
    assert [b["type"] for b in anthropic["content"]] == ["thinking", "tool_use"], anthropic
    assert anthropic["stop_reason"] == "tool_use" and "endmark" not in anthropic  # no note
    responses = thinker.post(
        "/v1/responses",
        {
            "input": "Weather?",
            "max_output_tokens": 48,
            "tool_choice": "required",
            "tools": [{"type": "function", **TOOLS[0]["function"]}],
        },
        think_then_end(),
    ).json()
    assert [i["type"] for i in responses["output"]] == ["reasoning", "function_call"], responses
    assert responses["status"] == "completed"
    assert "tool_call_errors" not in responses["endmark"]  # the model's own call
    native = thinker.post("/completion", {"prompt": "Hi", "n_predict": 8}, "Hello").json()
    assert native["content"] == "Hello"  # a plain prompt: no thinking, nothing forced


def test_qwen35_thinks_then_calls_in_its_own_format() -> None:
    """Qwen3.5's own template: its prompt ends inside `<think>`, and its calls are written
    with tagged arguments. An end of turn while thinking under `required` closes the
    thinking; the call that follows is the model's, in Qwen3.5's format."""
    template = (TEMPLATES / "Qwen3.5-4B.jinja").read_text(encoding="utf-8")
    call = ("<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
            "</function>\n</tool_call>")  # fmt: skip
    engine = ScriptedEngine(chat_template=template, n_ctx=16384)
    with scripted_app(engine=engine) as app:
        body = {"messages": SAY, "tools": TOOLS, "tool_choice": "required", "max_tokens": 120}
        answer = app.post("/v1/chat/completions", body, f"Paris<|im_end|>{call}").json()
    choice = answer["choices"][0]
    (made,) = choice["message"]["tool_calls"]
    assert json.loads(made["function"]["arguments"]) == {"city": "Paris"}, answer
    assert choice["message"]["reasoning_content"].strip() == "Paris"
    assert choice["finish_reason"] == "tool_calls" and "tool_call_errors" not in choice["endmark"]
