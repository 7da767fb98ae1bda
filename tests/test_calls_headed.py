"""A recipient header before each call (`calls/headed.py`): muse-glimmer's
` to=NAME<|message|>` around tagged arguments, learned from its real template: text addressed
to the user stays text, calls parse back whole and character by character, a call cut in its
header or body closes to a call, and the `required` grammar takes the template's text. The
replay through the scripted engine is `test_calls_replay.py`'s."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from endmark.calls import HeadedCalls, TaggedArgs, learn_call_strategy
from endmark.channels import ChannelSplitter
from endmark.chat import ChatTemplate
from endmark.tools import Tool, ToolRequest
from tests.scripted_engine import ScriptedEngine
from tests.test_calls_json import Vocab

TEMPLATE = Path(__file__).parent / "data" / "templates" / "muse-glimmer.jinja"
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = (Tool("get_weather", "The weather", CITY), Tool("get_time", "The time", {}))
CALL = (' to=get_weather<|message|><atem:function_calls>\n<atem:invoke name="get_weather">\n'
        '<atem:parameter name="city">Paris</atem:parameter>\n</atem:invoke>\n'
        "</atem:function_calls>")  # fmt: skip
SECOND = ('<|eom|><|start|>assistant to=get_time<|message|><atem:function_calls>\n'
          '<atem:invoke name="get_time">\n</atem:invoke>\n</atem:function_calls>')  # fmt: skip


@cache
def learned() -> HeadedCalls:
    fmt = learn_call_strategy(ChatTemplate(TEMPLATE.read_text(), "muse-glimmer"), ())
    assert isinstance(fmt, HeadedCalls), fmt
    return fmt


def split(chunks: list[str], cut: bool = False) -> tuple[str, list[tuple[str, Any]]]:
    splitter = ChannelSplitter(learned(), tools=TOOLS, callable=TOOLS)
    pieces = [p for chunk in chunks for p in splitter.push(chunk)] + splitter.finish(cut=cut)
    content = "".join(p.text for p in pieces if p.channel == "content")
    return content, [(p.call.name, json.loads(p.call.arguments)) for p in pieces if p.call]


def test_the_header_and_the_bodys_kind_are_learned() -> None:
    fmt = learned()
    assert (fmt.head_open, fmt.head_close, fmt.start) == (
        " to=", "<|message|>", "<|eom|><|start|>assistant")  # fmt: skip
    assert fmt.content_head == " to=user<|message|>" and isinstance(fmt.body, TaggedArgs)
    assert fmt.body.start == "<atem:function_calls>"


def test_calls_parse_back_and_text_to_the_user_stays_text() -> None:
    calls = [("get_weather", {"city": "Paris"}), ("get_time", {})]
    for chunks in ([CALL + SECOND], list(CALL + SECOND)):
        assert split(chunks) == ("", calls)
    assert split(list(" to=user<|message|>Sunny.")) == (" to=user<|message|>Sunny.", [])


def test_a_call_cut_anywhere_comes_back_closed() -> None:
    """Cut after its header, a call is closed; cut inside it, it is a call's start cut off,
    no text, and a turn that must call gets one."""
    header = len(" to=get_weather<|message|>")
    for cut in range(1, header):
        assert split([CALL[:cut]], cut=True) == ("", [])
        splitter = ChannelSplitter(learned(), tools=TOOLS, callable=TOOLS[:1], required=True)
        pieces = splitter.push(CALL[:cut]) + splitter.finish(cut=True)
        assert [p.call.name for p in pieces if p.call] == ["get_weather"], CALL[:cut]
    for cut in range(header, len(CALL) + 1):
        content, calls = split([CALL[:cut]], cut=True)
        assert [n for n, _ in calls] in (["get_weather"], ["get_time"]), CALL[:cut]
        assert all(isinstance(a, dict) for _, a in calls) and not content.strip(), CALL[:cut]
    assert calls == [("get_weather", {"city": "Paris"})]


def test_the_required_grammar_takes_the_templates_calls() -> None:
    vocab = Vocab(ScriptedEngine())
    forced = ToolRequest(TOOLS, "required")
    assert vocab.accepts(vocab.matcher(learned(), forced), CALL + SECOND)
    assert not vocab.accepts(vocab.matcher(learned(), forced), CALL.replace("to=get_w", "to=w"))
