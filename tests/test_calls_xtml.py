"""Kimi K3's XTML calls (`calls/xtml.py`): learned from its real template with its think block,
parsed whole and in pieces after thinking, closed wherever a cut falls, constrained by a
grammar checked with llguidance on a vocabulary whose tags are control tokens, and written back
through the template as the model wrote them."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from endmark.calls import KIMI_K3, XtmlCalls, learn_call_strategy
from endmark.calls.think import XTML, learn_think_format
from endmark.channels import ChannelSplitter
from endmark.chat import ChatTemplate, end_of_turn_markers
from endmark.tools import ToolRequest
from tests.gguf_factory import TEMPLATES
from tests.scripted_engine import ScriptedEngine
from tests.test_calls_json import Vocab
from tests.test_calls_tagged import ARGS, TOOLS, closed_at_every_cut

SOURCE = (TEMPLATES / "Kimi-K3.jinja").read_text()
KIMI = ChatTemplate(SOURCE, "Kimi-K3")
TIME = {"zone": "UTC"}


@pytest.fixture(scope="module")
def vocab() -> Vocab:
    return Vocab(ScriptedEngine(chat_template=SOURCE))


def test_the_format_and_the_think_block_are_learned_from_the_template() -> None:
    assert learn_call_strategy(KIMI, ["<|end_of_msg|>"]) == KIMI_K3
    think = learn_think_format(KIMI, set())
    assert think is not None and think.open and think.start == XTML.start
    assert think.markup == XTML.markup  # the answer's `response` block is markup


def test_the_close_that_opens_a_tag_is_no_end_of_the_turn(vocab: Vocab) -> None:
    """After an answer the template writes `<|close|>response<|sep|>`: a `<|close|>` that also
    closes the think block must not end the turn."""
    engine = ScriptedEngine(chat_template=SOURCE)
    assert end_of_turn_markers(KIMI, engine.tokenize, engine.vocab.control) == []


def test_calls_after_thinking_parse_whole_and_in_pieces() -> None:
    text = ("I will look.<|close|>think<|sep|><|open|>response<|sep|><|close|>response<|sep|>"
            + KIMI_K3.written([("forecast", ARGS), ("get_time", TIME)]))  # fmt: skip
    rng = random.Random(3)
    cuts = sorted(rng.sample(range(1, len(text)), 40))
    pieces_of = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    for chunks in ([text], list(text), pieces_of):
        splitter = ChannelSplitter(KIMI_K3, replace(XTML, open=True), TOOLS)
        pieces = [p for chunk in chunks for p in splitter.push(chunk)] + splitter.finish()
        assert "".join(p.text for p in pieces if p.channel == "reasoning") == "I will look."
        assert "".join(p.text for p in pieces if p.channel == "content").strip() == ""
        calls = [(c.name, json.loads(c.arguments)) for c in splitter.calls]
        assert calls == [("forecast", ARGS), ("get_time", TIME)]


def test_a_call_cut_anywhere_comes_back_closed() -> None:
    """Cut in the block's tag, a call's tag (its name, its index), an argument's tag (its key,
    its type), a value (text or JSON), a close tag: one call of the forecast, its arguments
    typed; the required ones the cut never reached are named in its problem."""
    text = KIMI_K3.written([("forecast", ARGS)])[: -len(KIMI_K3.end)]
    call, _ = closed_at_every_cut(KIMI_K3, text)
    assert json.loads(call.arguments) == ARGS and not call.problem


def test_the_grammar_takes_valid_calls_only(vocab: Vocab) -> None:
    forced = ToolRequest(TOOLS, "required")
    good = KIMI_K3.written([("forecast", {"city": "Rome", "days": 2, "unit": "fahrenheit"})])
    two = KIMI_K3.written([("forecast", {"city": "Rome", "days": 2}), ("get_time", TIME)])
    answered = "<|open|>response<|sep|><|close|>response<|sep|>" + good  # as the model writes
    for text in (good, two, answered, good.replace('index="1"', 'index="12"')):
        assert vocab.accepts(vocab.matcher(KIMI_K3, forced), text), text
    for bad in (
        "Sure. " + good,
        KIMI_K3.written([("forecast", {"city": "Rome"})]),  # `days` is required
        KIMI_K3.written([("forecast", {"city": "Rome", "days": "two"})]),
        KIMI_K3.written([("forecast", {"city": "Rome", "days": 0})]),  # minimum 1
        KIMI_K3.written([("forecast", {"city": "Rome", "days": 2, "wind": "yes"})]),
        KIMI_K3.written([("get_weather", {"city": "Rome"})]),
        good.replace('type="number"', 'type="string"'),
    ):
        assert not vocab.accepts(vocab.matcher(KIMI_K3, forced), bad), bad
    lazy = vocab.matcher(KIMI_K3, ToolRequest(TOOLS, "auto"), lazy=True)
    assert vocab.accepts(lazy, good.removeprefix(KIMI_K3.start))


def test_the_history_goes_back_through_the_template_as_written() -> None:
    """Arguments sent as a JSON text are read into the object the template writes by key:
    the prompt holds the call exactly as the model wrote it."""
    call = {"id": "c1", "type": "function",
            "function": {"name": "forecast", "arguments": json.dumps(ARGS)}}  # fmt: skip
    messages = [{"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "", "tool_calls": [call]}]  # fmt: skip
    history, variables = KIMI_K3.prompt_inputs(messages, ToolRequest(TOOLS))
    rendered = KIMI.render(history, False, **variables)
    assert KIMI_K3.written([("forecast", ARGS)]) in rendered
    assert isinstance(KIMI_K3, XtmlCalls) and KIMI_K3.describe()["kind"] == "xtml"


def test_an_argument_s_room_is_its_tags() -> None:
    """Near the limit, a call's room counts each required argument's XTML tags, not JSON's
    `, "key": ` (Kimi K3 on SmolLM2: its thinking closed too late for a whole call)."""
    assert KIMI_K3.argument_markup("city") == (
        '<|open|>argument key="city" type="string"<|sep|><|close|>argument<|sep|>'
    )
