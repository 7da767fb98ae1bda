"""A grammar taking over in the middle of a token (issue 24, failure 6), on the scripted
engine: a call's start marker written as text ends inside a token (`<tool_call` then `>,`),
as DeepSeek-V3.1's second turn did on SmolLM2's vocabulary. The token whose rest the call
grammar refuses is drawn again (the next most likely, here `>\\n`, whose rest it takes), in
every dialect; where no other token is left, the answer ends with endmark's note, never an
error. And the end of thinking, written as text, hands a forced call's grammar no rest."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from endmark.calls import HERMES
from endmark.channels import ChannelSplitter
from endmark.constraints import ConstraintFailure
from endmark.endings import StopMatcher
from endmark.handover import draw, refused_handover
from endmark.sampling import SamplingParams
from tests.scripted_app import TOOLS, ScriptedApp, scripted_app, sse_events
from tests.scripted_engine import CHATML_TOOLS_OPEN_THINK, FLOOR, Answer, ScriptedEngine

WORDS = ("<tool_call", ">,", ">\n", "</think", ">")
BODY = '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
SAY = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def app() -> Iterator[ScriptedApp]:
    with scripted_app(engine=ScriptedEngine(words=WORDS)) as scripted:
        yield scripted


def row(engine: ScriptedEngine, *ranked: str) -> np.ndarray:
    """Logits that rank `ranked` first, second, ...; every other token is out of reach
    (-inf) when `ranked` is one token, else far below."""
    out = np.full(engine.vocab.n_vocab, FLOOR if len(ranked) > 1 else -np.inf, np.float32)
    for i, piece in enumerate(ranked):
        out[engine.lexicon.token(piece)] = -float(i)
    return out


def trigger(engine: ScriptedEngine, *ranked: str) -> Answer:
    """`<tool_call` then, at the token that ends the marker, `ranked`; then the call."""
    script = [*engine.tokenize("<tool_call", False, False), engine.lexicon.token(ranked[0])]
    script += engine.tokenize(BODY, False, True)
    logits = [row(engine, "<tool_call"), row(engine, *ranked)]
    return Answer(script, logits=logits)


def ask(app: ScriptedApp, answer: Answer, stream: bool = False) -> Any:
    body = {"messages": SAY, "tools": TOOLS, "max_tokens": 40, "stream": stream}
    return app.post("/v1/chat/completions", body, answer)


def test_a_refused_rest_after_the_marker_is_drawn_again(app: ScriptedApp) -> None:
    """`>,` would leave `,` for the grammar: `>\\n` comes instead, its `\\n` the call's."""
    whole = ask(app, trigger(app.engine, ">,", ">\n"))
    assert whole.status_code == 200, whole.text
    choice = whole.json()["choices"][0]
    (call,) = choice["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert choice["finish_reason"] == "tool_calls" and not choice["message"]["content"]
    assert "tool_call_errors" not in choice["endmark"]
    events = sse_events(ask(app, trigger(app.engine, ">,", ">\n"), stream=True).text)
    calls = [c for _, d in events[:-1] if d["choices"]
             for c in d["choices"][0]["delta"].get("tool_calls") or []]  # fmt: skip
    assert [c["function"] for c in calls] == [call["function"]]


def test_every_dialect_gets_the_call(app: ScriptedApp) -> None:
    anthropic_tools = [{"name": "get_weather", "input_schema": TOOLS[0]["function"]["parameters"]}]
    answer = app.post(
        "/v1/messages",
        {"model": "m", "max_tokens": 40, "messages": SAY, "tools": anthropic_tools},
        trigger(app.engine, ">,", ">\n"),
    ).json()
    assert [b["type"] for b in answer["content"]] == ["tool_use"], answer
    assert answer["stop_reason"] == "tool_use"
    functions = [{"type": "function", **TOOLS[0]["function"]}]
    responses = app.post(
        "/v1/responses",
        {"input": "Weather?", "tools": functions, "max_output_tokens": 40},
        trigger(app.engine, ">,", ">\n"),
    ).json()
    assert [i["type"] for i in responses["output"]] == ["function_call"], responses
    ollama = app.post("/api/chat", {"model": "m", "messages": SAY, "tools": TOOLS,
                      "stream": False, "options": {"num_predict": 40}},
                      trigger(app.engine, ">,", ">\n")).json()  # fmt: skip
    assert [c["function"]["name"] for c in ollama["message"]["tool_calls"]] == ["get_weather"]


def test_with_no_other_token_the_answer_ends_with_a_note(app: ScriptedApp) -> None:
    """Only `>,` may come: the grammar's refusal ends the answer there, said, never a 500."""
    for stream in (False, True):
        r = ask(app, trigger(app.engine, ">,"), stream=stream)
        assert r.status_code == 200, r.text
        if stream:
            last = [d for _, d in sse_events(r.text)[:-1] if d["choices"]][-1]["choices"][0]
        else:
            last = r.json()["choices"][0]
        assert last["finish_reason"] == "length", last
        assert "the constraint failed" in last["endmark"]["constraint_error"]


SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "w",
        "schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
AFTER_THINKING = {  # the token that ends `</think` with a rest; the answer; the request
    "call": (">I", "<tool_call>\n" + BODY, {"tools": TOOLS, "tool_choice": "required"}),
    "schema": ('>{"', '{"city": "Paris"}', {"response_format": SCHEMA}),
}


@pytest.mark.parametrize("kind", list(AFTER_THINKING))
def test_the_end_of_thinking_hands_the_answers_grammar_no_rest(kind: str) -> None:
    """`</think` then a token with a rest (`>I`, `>{"`): the grammar waiting for the answer
    (a forced call, a schema) would start after text it was never shown, written as content
    (`I` before a forced call, `{"{"city"...`); `>` comes instead, and the answer is whole."""
    rest, answer, fields = AFTER_THINKING[kind]
    engine = ScriptedEngine(words=(*WORDS, rest), chat_template=CHATML_TOOLS_OPEN_THINK)
    script = engine.tokenize("Paris</think", False, False) + [engine.lexicon.token(rest)]
    script += engine.tokenize(answer, False, True)
    logits = [row(engine, "Paris"), row(engine, "</think"), row(engine, rest, ">")]
    with scripted_app(engine=engine) as scripted:
        # (room for the thinking: at 40, the forced call's room closes it at once)
        body = {"messages": SAY, "max_tokens": 60, **fields}
        choice = scripted.post("/v1/chat/completions", body, Answer(script, logits)).json()
    message = choice["choices"][0]["message"]
    assert message["reasoning_content"] == "Paris", message
    if kind == "schema":
        assert json.loads(message["content"]) == {"city": "Paris"}
        return
    (call,) = message["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert not message["content"] and choice["choices"][0]["finish_reason"] == "tool_calls"


def test_refused_handover_reads_copies_and_leaves_the_originals() -> None:
    """The check pushes the token's text into copies: the splitter and the stop strings of
    the generation hold what they held."""
    splitter = ChannelSplitter(HERMES)
    stops = StopMatcher(["STOP"])
    splitter.push("<tool_call")
    assert splitter.held == "<tool_call"

    def refusing(text: str) -> Any:
        if text.strip():
            raise ConstraintFailure("tools", f"refused {text!r}")

    assert refused_handover(">,", stops, splitter, refusing, False)
    assert not refused_handover(">\n", stops, splitter, refusing, False)
    assert not refused_handover("ST", stops, splitter, refusing, False)  # no marker ends
    assert splitter.held == "<tool_call" and not splitter.in_call and stops.held == ""


def test_draw_conditions_on_the_refusal() -> None:
    """The refused token is taken out and the draw made again; nothing refused: as sampled."""
    x = np.array([0.0, -1.0, -2.0], np.float32)
    greedy = SamplingParams(temperature=0)
    rng = np.random.default_rng(0)
    assert draw(x, greedy, rng, False, None).token == 0
    assert draw(x, greedy, rng, False, lambda t: t < 2).token == 2
    assert draw(x, greedy, rng, False, lambda t: True).token in (0, 1, 2)  # no way out: kept
