"""Room for a tool call near the limit (`call_room`), on the splitter alone."""

from __future__ import annotations

from endmark.call_room import section_end, thinking_must_close
from endmark.calls import HERMES, MISTRAL
from endmark.calls.think import ThinkFormat
from endmark.channels import ChannelSplitter
from endmark.tools import Tool

TOOL = Tool("get_weather", "", {"type": "object", "properties": {"city": {"type": "string"}}})
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


def chars(text: str, end: str) -> list[int]:
    return [ord(c) for c in text + end]


def test_thinking_closes_while_a_forced_call_still_fits() -> None:
    think = ThinkFormat(open=True)
    forced = ChannelSplitter(HERMES, think, [TOOL], required=True)
    assert thinking_must_close(forced, [7], True, 29, lambda: 20)  # the close, the call, 8
    assert not thinking_must_close(forced, [7], True, 30, lambda: 20)
    assert not thinking_must_close(forced, [7], True, -1, lambda: 20)  # no limit
    optional = ChannelSplitter(HERMES, think, [TOOL])
    assert not thinking_must_close(optional, [7], True, 5, lambda: 20)


def test_a_section_ends_rather_than_begin_a_call_that_cannot_fit() -> None:
    splitter = ChannelSplitter(MISTRAL, None, [TOOL])
    splitter.push("[TOOL_CALLS]" + f"[{CALL}]")
    hermes = ChannelSplitter(HERMES, None, [TOOL])
    hermes.push("<tool_call>" + CALL)
    # a space may be a format's `between` (R1's `\n`): the generation asks its grammar
    assert section_end(hermes, b"\n", 5, lambda: 20, chars) == chars("", "</tool_call>")
    assert section_end(hermes, b"</", 5, lambda: 20, chars) is None  # its own end marker
    assert section_end(hermes, b"{", 30, lambda: 20, chars) is None  # room for another
    assert section_end(hermes, b"{", 5, lambda: 20, chars) == chars("", "</tool_call>")
    # a section that runs to the end of the turn ends the turn there
    assert section_end(splitter, b"[", 5, lambda: 20, chars) == []
