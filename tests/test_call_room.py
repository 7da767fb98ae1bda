"""Room for a tool call near the limit (`call_room`), on the splitter alone."""

from __future__ import annotations

from endmark.call_room import section_end, thinking_must_close
from endmark.calls import HERMES, MISTRAL, QWEN3_CODER, JsonArray, TaggedArgs
from endmark.calls.base import CallClose
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


def test_a_token_that_finishes_a_call_and_begins_another_is_the_section_end() -> None:
    """Command R7B's list on SmolLM2 (issue 24): `},` finished the first call and began a
    second, which the limit cut to `{}` arguments."""
    cohere = JsonArray("learned", "<|START_ACTION|>", "<|END_ACTION|>", args_key="parameters",
                       name_key="tool_name")  # fmt: skip
    required = Tool("get_weather", "", {**TOOL.parameters, "required": ["city"]})
    splitter = ChannelSplitter(cohere, None, [required])
    splitter.push('<|START_ACTION|>[{"tool_name": "get_weather", "parameters": {"city": "Paris"}')
    end = chars("}]", "<|END_ACTION|>")
    assert section_end(splitter, b"},", 5, lambda: 20, chars) == end
    assert section_end(splitter, b"},", 30, lambda: 20, chars) is None  # room for another
    assert section_end(splitter, b"}", 5, lambda: 20, chars) is None  # it only finishes
    assert section_end(splitter, b"}]", 5, lambda: 20, chars) is None
    splitter.push("}")
    assert section_end(splitter, b", {", 5, lambda: 20, chars) == chars("]", "<|END_ACTION|>")


def test_a_held_start_of_the_end_marker_ends_the_section_not_another_call() -> None:
    """MiniMax-M2's wrapper on SmolLM2 (issue 24): `<` after `</invoke>` may begin the
    wrapper's end or another `<invoke`; at `inv`, with no room, the wrapper ends."""
    minimax = TaggedArgs("wrapped", "<minimax:tool_call>", "</minimax:tool_call>",
                         '\n<invoke name="', '">', '\n<parameter name="', '">', "</parameter>",
                         "\n</invoke>\n", again='\n</invoke>\n<invoke name="')  # fmt: skip
    splitter = ChannelSplitter(minimax, None, [TOOL])
    splitter.push('<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">')
    splitter.push("Paris</parameter>\n</invoke>\n<")
    assert splitter.held == "<"
    # at the limit, the held `<` ends the wrapper: another call closed empty would not be valid
    assert splitter.closing(here=True) == CallClose("", "/minimax:tool_call>", boundary=True)
    assert splitter.closing() != splitter.closing(here=True)  # (as the splitter reads it)
    end = chars("", "/minimax:tool_call>")
    assert section_end(splitter, b"inv", 5, lambda: 20, chars) == end
    assert section_end(splitter, b"inv", 30, lambda: 20, chars) is None


def test_a_token_that_ends_a_call_that_is_none_is_kept_not_an_error() -> None:
    """Qwen3.5 on SmolLM2 (issue 24): peeking at a token that wrote the end marker in the
    function's tag parsed a malformed call, and its error was a 500."""
    splitter = ChannelSplitter(QWEN3_CODER, None, [TOOL])
    splitter.push("<tool_call>\n<f")
    assert splitter.closing() is not None
    assert section_end(splitter, b">\n</tool_call>", 5, lambda: 20, chars) is None
