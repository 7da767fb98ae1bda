"""The literal-arguments kind (`calls/literal_args.py`): gemma-4's `call:name{key:value}` and
LFM2.5's pythonic `[name(key=value)]`, learned from their real templates: the pieces, values
of every type (nested ones too) read back, a call cut anywhere closed to a call, and the
`required` grammar taking the template's text and refusing a wrong type. The replay through
the scripted engine is `test_calls_replay.py`'s."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from endmark.calls import LiteralArgs, learn_call_strategy
from endmark.calls.literal_values import Syntax
from endmark.channels import ChannelSplitter
from endmark.chat import ChatTemplate
from endmark.tools import Tool, ToolRequest
from tests.scripted_engine import ScriptedEngine
from tests.test_calls_json import Vocab

TEMPLATES = Path(__file__).parent / "data" / "templates"
SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "days"],
}
FORECAST = Tool("forecast", "The forecast", SCHEMA)
TIME = Tool("get_time", "The time", {"type": "object", "properties": {"zone": {"type": "string"}}})
TOOLS = (FORECAST, TIME)
GEMMA = Syntax("{", "}", ":", ",", '<|"|>', ("true", "false", "None"), True)
LFM = Syntax("(", ")", "=", ", ", "'", ("True", "False", "None"), False)
LEARNED = {
    "google-gemma-4-31B-it": ("<|tool_call>", "<tool_call|>", "call:", GEMMA, ""),
    "google-gemma-4-31B-it-interleaved": ("<|tool_call>", "<tool_call|>", "call:", GEMMA, ""),
    "LFM2.5-8B-A1B": ("<|tool_call_start|>[", "]<|tool_call_end|>", "", LFM, ", "),
}
WRITTEN = {
    "google-gemma-4-31B-it": '<|tool_call>call:forecast{city:<|"|>Paris<|"|>,days:3,'
    'unit:<|"|>celsius<|"|>}<tool_call|><|tool_call>call:get_time{zone:<|"|>UTC<|"|>}'
    "<tool_call|>",
    "LFM2.5-8B-A1B": "<|tool_call_start|>[forecast(city='Paris', days=3, unit='celsius'), "
    "get_time(zone='UTC')]<|tool_call_end|>",
}
FORECAST_ARGS = {"city": "Paris", "days": 3, "unit": "celsius"}
CALLS = [("forecast", FORECAST_ARGS), ("get_time", {"zone": "UTC"})]


@cache
def learned(name: str) -> LiteralArgs:
    source = (TEMPLATES / f"{name}.jinja").read_text()
    fmt = learn_call_strategy(ChatTemplate(source, name, "<s>", "</s>"), ("<|im_end|>",))
    assert isinstance(fmt, LiteralArgs), fmt
    return fmt


def split(fmt: LiteralArgs, chunks: list[str], cut: bool = False) -> list[tuple[str, Any]]:
    splitter = ChannelSplitter(fmt, tools=TOOLS, callable=TOOLS)
    pieces = [p for chunk in chunks for p in splitter.push(chunk)] + splitter.finish(cut=cut)
    assert not "".join(p.text for p in pieces if p.channel == "content").strip(), pieces
    return [(p.call.name, json.loads(p.call.arguments)) for p in pieces if p.call]


@pytest.mark.parametrize("name", list(LEARNED))
def test_the_pieces_are_learned_from_the_template(name: str) -> None:
    fmt = learned(name)
    assert (fmt.start, fmt.end, fmt.call_open, fmt.syntax, fmt.between) == LEARNED[name]


@pytest.mark.parametrize("name", list(WRITTEN))
def test_calls_parse_back_whole_and_one_character_at_a_time(name: str) -> None:
    fmt, text = learned(name), WRITTEN[name]
    assert split(fmt, [text]) == CALLS
    assert split(fmt, list(text)) == CALLS


def test_values_of_every_type_nested_too() -> None:
    gemma, lfm = learned("google-gemma-4-31B-it"), learned("LFM2.5-8B-A1B")
    expected = {"a": 1.5, "b": True, "n": None, "o": {"x": "y", "k": [1, "z"]}, "s": "it's"}
    body = 'call:f{a:1.5,b:true,n:None,o:{x:<|"|>y<|"|>,k:[1,<|"|>z<|"|>]},s:<|"|>it\'s<|"|>}'
    (call,) = gemma.parse(body)
    assert (call.name, json.loads(call.arguments)) == ("f", expected)
    body = """f(a=1.5, b=True, n=None, o={"x": "y", "k": [1, 'z']}, s="it's")"""
    (call,) = lfm.parse(body)
    assert (call.name, json.loads(call.arguments)) == ("f", expected)
    # a string Python does not read (a raw newline, which the grammar lets the model write:
    # LFM2.5 on SmolLM2, issue 24) is read as written, not a 500
    (call,) = lfm.parse("f(s='Paris\nand \\'Lyon\\'')")
    assert json.loads(call.arguments) == {"s": "Paris\nand 'Lyon'"}


@pytest.mark.parametrize("name", list(WRITTEN))
def test_a_call_cut_anywhere_comes_back_closed(name: str) -> None:
    """Cut after any character of its first call: calls of tools offered, whose arguments
    are objects; whole once its text was."""
    fmt, text = learned(name), WRITTEN[name]
    first = text.index("celsius") + len("celsius") + 6
    for cut in range(len(fmt.start), len(text) + 1):
        calls = split(fmt, [text[:cut]], cut=True)
        assert calls and all(n in ("forecast", "get_time") for n, _ in calls), text[:cut]
        assert all(isinstance(a, dict) for _, a in calls), text[:cut]
        if cut > first:
            assert calls[0] == CALLS[0], text[:cut]


@pytest.fixture(scope="module")
def vocab() -> Vocab:
    return Vocab(ScriptedEngine())


@pytest.mark.parametrize("name", list(WRITTEN))
def test_the_required_grammar_takes_the_templates_calls_and_no_wrong_type(
    name: str, vocab: Vocab
) -> None:
    fmt, text = learned(name), WRITTEN[name]
    forced = ToolRequest(TOOLS, "required")
    assert vocab.accepts(vocab.matcher(fmt, forced), text)
    assert not vocab.accepts(vocab.matcher(fmt, forced), text.replace("3", "'three'", 1))
    no_city = text.replace("Paris", "").replace("city", "zone")
    assert not vocab.accepts(vocab.matcher(fmt, forced), no_city)
    lazy = vocab.matcher(fmt, ToolRequest(TOOLS, "auto"), lazy=True)
    assert vocab.accepts(lazy, text.removeprefix(fmt.start))
