"""The channel splitter on recorded outputs of each family, whole and in pieces."""

from __future__ import annotations

import json
import random

import pytest

from endmark.calls import (
    GENERIC,
    HERMES,
    LLAMA3,
    MISTRAL,
    CallStrategy,
    JsonInTags,
    MalformedCall,
    ThinkFormat,
)
from endmark.channels import ChannelSplitter, Piece
from endmark.tools import Tool

WEATHER = {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
TIME = {"name": "get_time", "arguments": {"zone": "Europe/Paris"}}
NOT_A_MARKER = "a <tool_cal is not <thin either"
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"},
                  "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}  # fmt: skip
TOOLS = (
    Tool("get_weather", "", WEATHER_SCHEMA),
    Tool("get_time", "", {"type": "object", "properties": {"zone": {"type": "string"}}}),
    Tool("add", "", {"type": "object", "required": ["a", "b"],
                     "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}),
)  # fmt: skip


def hermes(call: dict[str, object]) -> str:
    return f"<tool_call>\n{json.dumps(call)}\n</tool_call>"


# (format, think format, recorded output, expected content, reasoning, calls)
RECORDED = {
    "hermes text then a call": (
        HERMES, None, "Let me check.\n" + hermes(WEATHER),
        "Let me check.\n", "", [WEATHER],
    ),
    "hermes two calls": (
        HERMES, None, hermes(WEATHER) + "\n" + hermes(TIME), "\n", "", [WEATHER, TIME],
    ),
    "llama3 bare JSON": (
        LLAMA3, None, json.dumps({"name": "get_weather", "parameters": WEATHER["arguments"]}),
        "", "", [WEATHER],
    ),
    "llama3 python tag": (
        LLAMA3, None, "<|python_tag|>" + json.dumps(
            {"name": "get_weather", "parameters": WEATHER["arguments"]}
        ), "", "", [WEATHER],
    ),
    "mistral array of two": (
        MISTRAL, None, "[TOOL_CALLS]" + json.dumps([WEATHER, TIME]), "", "", [WEATHER, TIME],
    ),
    "qwen3 call right after thinking": (
        HERMES, ThinkFormat(), "<think>\nThe user wants the weather.\n</think>\n\n"
        + hermes(WEATHER), "\n\n", "\nThe user wants the weather.\n", [WEATHER],
    ),
    "thinking opened by the prompt": (
        None, ThinkFormat(open=True), "I should greet.\n</think>\nHello!",
        "\nHello!", "I should greet.\n", [],
    ),
    "a marker's prefix that is not one": (
        GENERIC, ThinkFormat(), NOT_A_MARKER, NOT_A_MARKER, "", [],
    ),
    "an unknown family's markers": (
        JsonInTags("learned", "<|fn_call|>", "<|/fn_call|>"), None,
        "ok <|fn_call|>" + json.dumps(WEATHER) + "<|/fn_call|>", "ok ", "", [WEATHER],
    ),
}  # fmt: skip


def split(fmt: CallStrategy | None, think: ThinkFormat | None, chunks: list[str]) -> list[Piece]:
    splitter = ChannelSplitter(fmt, think)
    pieces = [p for chunk in chunks for p in splitter.push(chunk)]
    return pieces + splitter.finish()


def channels(pieces: list[Piece]) -> tuple[str, str, list[dict[str, object]]]:
    content = "".join(p.text for p in pieces if p.channel == "content")
    reasoning = "".join(p.text for p in pieces if p.channel == "reasoning")
    calls = [
        {"name": p.call.name, "arguments": json.loads(p.call.arguments)}
        for p in pieces
        if p.call is not None
    ]
    return content, reasoning, calls


@pytest.mark.parametrize("name", RECORDED)
def test_recorded_outputs_split_into_their_channels(name: str) -> None:
    fmt, think, text, content, reasoning, calls = RECORDED[name]
    assert channels(split(fmt, think, [text])) == (content, reasoning, calls)


@pytest.mark.parametrize("name", RECORDED)
def test_markers_split_across_pieces_change_nothing(name: str) -> None:
    fmt, think, text, content, reasoning, calls = RECORDED[name]
    assert channels(split(fmt, think, list(text))) == (content, reasoning, calls)
    rng = random.Random(name)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(text)), k=min(6, len(text) - 1)))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert channels(split(fmt, think, chunks)) == (content, reasoning, calls)


def test_no_markup_ever_reaches_content() -> None:
    for fmt, think, text, *_ in RECORDED.values():
        content = channels(split(fmt, think, list(text)))[0]
        for marker in ("<tool_call>", "</tool_call>", "<think>", "</think>", "[TOOL_CALLS]"):
            assert marker not in content or marker in text.split(marker)[0]


def test_calls_get_ids_and_openai_shape() -> None:
    pieces = split(HERMES, None, [hermes(WEATHER) + hermes(TIME)])
    first, second = (p.call for p in pieces if p.call is not None)
    assert first is not None and second is not None and first.id != second.id
    assert first.as_openai(0) == {
        "id": first.id, "type": "function", "index": 0,
        "function": {"name": "get_weather", "arguments": json.dumps(WEATHER["arguments"])},
    }  # fmt: skip


def test_a_body_that_is_not_a_call_is_malformed() -> None:
    with pytest.raises(MalformedCall, match="not JSON"):
        split(HERMES, None, ["<tool_call>{oops</tool_call>"])
    with pytest.raises(MalformedCall, match="no name"):
        split(HERMES, None, ['<tool_call>{"arguments": {}}</tool_call>'])


def test_a_close_marker_inside_a_json_string_is_string_text() -> None:
    """The grammar lets a string argument hold any text, the close marker's too (a 135M model
    at temperature 0.8 wrote `"zone": "UTC_C'}}</tool_call>`): the call goes on."""
    body = '{"name": "get_time", "arguments": {"zone": "UTC</tool_call>"}}'
    pieces = split(HERMES, None, [f"<tool_call>{body}</tool_call>"])
    (call,) = (p.call for p in pieces if p.call is not None)
    assert json.loads(call.arguments) == {"zone": "UTC</tool_call>"}


def test_a_call_cut_by_the_limit_is_closed_not_dropped() -> None:
    splitter = ChannelSplitter(HERMES, tools=TOOLS)
    pieces = splitter.push('Sure. <tool_call>{"name": "get_weather", "arguments": {"city": "Par')
    pieces += splitter.finish(cut=True)
    assert channels(pieces) == ("Sure. ", "", [{"name": "get_weather",
                                                "arguments": {"city": "Par"}}])  # fmt: skip
    assert splitter.closed_by_endmark and not splitter.cut_call


@pytest.mark.parametrize("fmt", [HERMES, LLAMA3, MISTRAL], ids=lambda f: f.name)
def test_a_json_call_cut_anywhere_comes_back_closed_and_checked(fmt: CallStrategy) -> None:
    """Cut right after the open marker, in the name, in a key, in a string, in a number:
    one call, whose arguments parse; a required argument the cut never reached is named."""
    for call in (WEATHER, {"name": "add", "arguments": {"a": -1.5, "b": 20}}):
        body = json.dumps({"name": call["name"], fmt.args_key: call["arguments"]})  # type: ignore[attr-defined]
        text = fmt.start + (f"[{body}]" if fmt.array else body)  # type: ignore[attr-defined]
        for cut in range(len(fmt.start), len(text) + 1):
            splitter = ChannelSplitter(fmt, tools=TOOLS)
            pieces = splitter.push(text[:cut]) + splitter.finish(cut=True)
            content, _, calls = channels(pieces)
            assert content == "" and len(calls) == 1, text[:cut]
            (piece,) = [p for p in pieces if p.call is not None]
            assert piece.call is not None and piece.call.name in ("get_weather", "add")
            tool = next(t for t in TOOLS if t.name == piece.call.name)
            missing = [k for k in tool.parameters["required"] if k not in calls[0]["arguments"]]
            for key in missing:
                assert repr(key) in piece.call.problem, (text[:cut], piece.call.problem)
        assert calls == [call]  # the whole text: the call as written


def test_a_call_with_no_name_yet_says_endmark_chose_the_tool() -> None:
    splitter = ChannelSplitter(HERMES, tools=TOOLS)
    (piece,) = splitter.push('<tool_call>\n{"na') + splitter.finish(cut=True)
    assert piece.call is not None and piece.call.name == "get_weather"
    assert "endmark chose it" in piece.call.problem and "'city' is missing" in piece.call.problem


def test_a_turn_that_must_call_and_made_none_gets_one() -> None:
    """A turn cut before its call began (here: inside the start marker) under `required`."""
    splitter = ChannelSplitter(HERMES, tools=TOOLS, required=True)
    (piece,) = splitter.push("<tool_") + splitter.finish(cut=True)
    assert piece.call is not None and piece.call.name == "get_weather"
    assert json.loads(piece.call.arguments) == {}
    assert "before the model began a call" in piece.call.problem
    named = ChannelSplitter(HERMES, tools=TOOLS, callable=TOOLS[2:], required=True)
    (piece,) = named.finish(cut=True)
    assert piece.call is not None and piece.call.name == "add"
    auto = ChannelSplitter(HERMES, tools=TOOLS)  # `auto`: no call is no call
    assert auto.push("<tool_") + auto.finish(cut=True) == []


def test_a_close_marker_half_written_at_the_cut_is_finished() -> None:
    """The text held back at the cut may begin the end marker (a textual one): the closing
    writes the rest of it, not a second one."""
    splitter = ChannelSplitter(HERMES, tools=TOOLS)
    splitter.push('<tool_call>{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_')
    close = splitter.closing()
    assert close is not None and (close.text, close.end) == ("", "call>")
    inside = ChannelSplitter(HERMES, tools=TOOLS)
    inside.push('<tool_call>{"name": "get_time", "arguments": {"zone": "a</tool_')
    close = inside.closing()  # the held text is the string's own
    assert close is not None and (close.text, close.end) == ('"}}', "</tool_call>")


def test_a_call_written_inside_reasoning_is_reasoning_text() -> None:
    """Ending rule 7: only the end of thinking acts inside it; no call comes out."""
    text = "<think>I could write " + hermes(WEATHER) + " here.</think>It is sunny."
    for chunks in ([text], list(text)):
        splitter = ChannelSplitter(HERMES, ThinkFormat(), tools=TOOLS, required=False)
        pieces = [p for c in chunks for p in splitter.push(c)] + splitter.finish()
        content, reasoning, calls = channels(pieces)
        assert calls == [] and content == "It is sunny." and hermes(WEATHER) in reasoning
    opened = ChannelSplitter(HERMES, ThinkFormat(open=True), tools=TOOLS)
    pieces = opened.push(hermes(TIME) + "</think>") + opened.finish(cut=True)
    assert channels(pieces) == ("", hermes(TIME), [])


def test_only_the_markers_that_act_in_a_state_are_offered() -> None:
    """A control token that is a marker out of place (a close with nothing open) is not
    pushed at all: the generation asks which markers act now."""
    think = ThinkFormat()
    splitter = ChannelSplitter(HERMES, think)
    stray = {"</think>", "</tool_call>"}  # a close with nothing open: markup
    assert splitter.markers == {"<tool_call>", "<think>"} | stray
    splitter.push("<think>")
    assert splitter.markers == {"</think>"}
    splitter.push("hmm</think><tool_call>")
    assert splitter.markers == {"</tool_call>"}
    assert ChannelSplitter(MISTRAL).markers == {"[TOOL_CALLS]"}


def test_a_close_of_thinking_with_nothing_open_is_no_content() -> None:
    """A 135M model on DeepSeek V3.2's template closed its thinking twice: the second
    `</think>`, written as text, came out as content."""
    pieces = split(None, ThinkFormat(open=True), ["Sunny.</think>\n\n</thi", "nk>It is."])
    content = "".join(p.text for p in pieces if p.channel == "content")
    assert content.strip() == "It is." and "Sunny." in "".join(p.text for p in pieces)


def test_a_call_close_with_no_call_open_is_no_content() -> None:
    """GLM-4.6 and Ling on SmolLM2, after a tool result: `</tool_call>` with no call open came
    out as content. A tag that ends a call is markup; a `]` or a fence is an answer's text."""
    pieces = split(HERMES, None, ["It is sunny.\n</tool", "_call>\nDone."])
    assert channels(pieces)[0] == "It is sunny.\n\nDone."
    fence = JsonInTags("fenced", "```json\n", "```")
    assert channels(split(fence, None, ["a ``` b"]))[0] == "a ``` b"


def test_mistral_calls_get_the_nine_character_ids_its_template_checks() -> None:
    (piece,) = split(MISTRAL, None, ["[TOOL_CALLS]" + json.dumps([WEATHER])])
    assert piece.call is not None and len(piece.call.id) == 9 and piece.call.id.isalnum()


def test_a_marker_cut_by_the_limit_is_not_content() -> None:
    splitter = ChannelSplitter(HERMES)
    pieces = splitter.push(hermes(WEATHER) + "\n<tool_")
    pieces += splitter.finish(cut=True)
    assert channels(pieces)[0].strip() == "" and splitter.cut_call == "<tool_"
    ended = ChannelSplitter(HERMES)  # ended by an end token: the text was the answer's own
    assert channels(ended.push("a <") + ended.finish())[0] == "a <"


def test_a_call_cut_inside_its_end_marker_s_character_is_whole() -> None:
    """DeepSeek V4 on SmolLM2 (issue 24): the limit cut the end marker `</｜DSML｜tool_calls>`
    inside a `｜` (three tokens): its replacement character let the marker's start into the
    body, the whole call did not parse, and it was lost."""
    fmt = JsonInTags("dsml", "<｜DSML｜calls>", "</｜DSML｜calls>")
    text = "<｜DSML｜calls>" + json.dumps(WEATHER) + "</｜DS"
    splitter = ChannelSplitter(fmt, None, list(TOOLS))
    pieces = splitter.push(text) + splitter.push("\ufffd") + splitter.finish(cut=True)
    assert channels(pieces)[2] == [WEATHER]
