"""The XML-ish call formats of real templates (tagged arguments in their variants, MiniMax's
one wrapper around all calls) and gpt-oss's harmony channels: each is learned from its own
template; a call as the template writes it parses back to the same name and arguments, whole,
cut anywhere, and streamed by the scripted engine in random token pieces; and the `required`
grammar takes that text."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from endmark.calls import HarmonyCalls, TaggedArgs, learn_call_strategy, learn_think_format
from endmark.calls.base import CallStrategy
from endmark.calls.think import HARMONY
from endmark.calls.turn_diff import common_prefix
from endmark.channels import ChannelSplitter
from endmark.chat import ChatTemplate
from endmark.tools import Tool, ToolRequest
from tests.dialect_readers import chat_stream, chat_whole
from tests.scripted_app import ScriptedApp
from tests.scripted_engine import ScriptedEngine
from tests.test_calls_json import Vocab

TEMPLATES = Path(__file__).parent / "data" / "templates"
SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer", "minimum": 1},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "days"],
}
FORECAST = Tool("forecast", "The forecast", SCHEMA)
TIME = Tool("get_time", "The time", {"type": "object", "properties": {"zone": {"type": "string"}}})
TOOLS = (FORECAST, TIME)
ARGS = {"city": "Paris", "days": 3, "unit": "celsius"}


@dataclass(frozen=True)
class Family:
    """A template, the texts that end its turn (its special tokens'), and what is learned."""

    template: str
    ends: tuple[str, ...]
    name: str  # the format's name: qwen3_coder, tagged, wrapped, harmony
    start: str
    end: str


EOS = "<｜end▁of▁sentence｜>"
NS = "]<]minimax[>["  # MiniMax-M3's namespace token, before every tag
# fmt: off
FAMILIES = [Family(*row) for row in [
    ("MiniMax-M2", ("[e~[",), "wrapped", "<minimax:tool_call>", "</minimax:tool_call>"),
    ("MiniMax-M3", ("[e~[",), "wrapped", f"{NS}<tool_call>", f"{NS}</tool_call>"),
    ("GLM-4.6", ("<|user|>", "<|observation|>"), "tagged", "<tool_call>", "</tool_call>"),
    ("GLM-4.7-Flash", ("<|user|>",), "tagged", "<tool_call>", "</tool_call>"),
    ("Qwen3.5-4B", ("<|im_end|>",), "qwen3_coder", "<tool_call>", "</tool_call>"),
    ("NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", ("<|im_end|>",), "qwen3_coder", "<tool_call>",
     "</tool_call>"),
    ("ByteDance-Seed-OSS", ("<seed:eos>",), "tagged", "<seed:tool_call>", "</seed:tool_call>"),
    ("tencent-Hy3", ("<｜hy_eos:opensource｜>",), "wrapped", "<tool_calls:opensource>",
     "</tool_calls:opensource>"),
    ("openbmb-MiniCPM5-1B", ("<|im_end|>",), "tagged", '<function name="', "</function>"),
    ("inclusionai-ling-3.0-flash", ("<|role_end|>",), "tagged", "<tool_call>", "</tool_call>"),
    ("StepFun3.5-Flash", ("<|im_end|>",), "qwen3_coder", "<tool_call>", "</tool_call>"),
    ("Spark2.5", (EOS,), "tagged", "<tool_call>", "</tool_call>"),
    ("deepseek-ai-DeepSeek-V3.2", (EOS,), "wrapped", "<｜DSML｜function_calls>",
     "</｜DSML｜function_calls>"),
    ("deepseek-ai-DeepSeek-V4", (EOS,), "wrapped", "<｜DSML｜tool_calls>", "</｜DSML｜tool_calls>"),
    ("openai-gpt-oss-120b", ("<|return|>",), "harmony", "<|channel|>commentary to=functions.",
     "<|call|>"),
]]
# fmt: on
IDS = [f.template for f in FAMILIES]
TAGGED = [f for f in FAMILIES if f.name != "harmony"]  # gpt-oss has tests of its own below


@cache
def template_of(family: Family) -> ChatTemplate:
    source = (TEMPLATES / f"{family.template}.jinja").read_text()
    return ChatTemplate(source, family.template, "<s>", "</s>")


@cache
def learned(family: Family) -> CallStrategy:
    fmt = learn_call_strategy(template_of(family), family.ends)
    assert fmt is not None, family.template
    return fmt


def written_by_template(family: Family, fmt: CallStrategy, calls: list[tuple[str, Any]]) -> str:
    """The calls as a plain render of an assistant turn writes them: where the turn parts from
    one without calls, from the first call marker to the end of the turn."""
    tools = [t.as_openai() for t in TOOLS]
    user = [{"role": "user", "content": "Weather?"}]
    turn = {"role": "assistant", "content": "", "tool_calls": [
        {"id": f"c{i}", "type": "function", "function": {"name": name, "arguments": args}}
        for i, (name, args) in enumerate(calls)
    ]}  # fmt: skip
    template = template_of(family)
    without = template.render([*user, {"role": "assistant", "content": ""}], False, tools=tools)
    full = template.render([*user, turn], False, tools=tools)
    section = full[common_prefix(without, full) :]
    section = section[min(section.find(s) for s in fmt.starts if s in section) :]
    for end in family.ends:
        section = section.split(end)[0]
    return section.rstrip()


def split(fmt: CallStrategy, chunks: list[str]) -> tuple[str, list[tuple[str, Any]]]:
    splitter = ChannelSplitter(fmt, tools=TOOLS)
    pieces = [p for chunk in chunks for p in splitter.push(chunk)] + splitter.finish()
    content = "".join(p.text for p in pieces if p.channel == "content")
    return content, [(p.call.name, json.loads(p.call.arguments)) for p in pieces if p.call]


def random_cuts(text: str, rng: random.Random, k: int) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), k=min(k, len(text) - 1)))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_each_family_is_learned_from_its_template(family: Family) -> None:
    fmt = learned(family)
    assert isinstance(fmt, HarmonyCalls if family.name == "harmony" else TaggedArgs)
    assert (fmt.name, fmt.start, fmt.end) == (family.name, family.start, family.end)


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_calls_as_the_template_writes_them_parse_back(family: Family) -> None:
    """One call and (where a turn may hold more) two, whole, one character at a time and cut
    at random places."""
    fmt = learned(family)
    expected = [("forecast", ARGS)]
    if not isinstance(fmt, HarmonyCalls):  # a harmony message has one recipient
        expected.append(("get_time", {"zone": "UTC"}))
    text = written_by_template(family, fmt, expected)
    assert fmt.start in text or isinstance(fmt, HarmonyCalls), text
    rng = random.Random(family.template)
    for chunks in ([text], list(text), *(random_cuts(text, rng, 6) for _ in range(10))):
        content, calls = split(fmt, chunks)
        assert (content.strip(), calls) == ("", expected), (family.template, chunks)


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_the_second_turn_renders_the_call_in_the_familys_own_format(family: Family) -> None:
    """Arguments sent as a JSON text, as OpenAI clients send them, are written back as the
    family writes them (gpt-oss: JSON once, not a JSON string of JSON); the result follows."""
    fmt = learned(family)
    call = {"id": "call_abc123xyz", "type": "function",
            "function": {"name": "forecast", "arguments": json.dumps(ARGS)}}  # fmt: skip
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "reasoning_content": "Hmm.", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_abc123xyz", "content": "sunny"},
    ]
    history, variables = fmt.prompt_inputs(messages, ToolRequest(TOOLS))
    prompt = template_of(family).render(history, True, **variables)
    written = written_by_template(family, fmt, [("forecast", ARGS)])
    assert written in prompt and "sunny" in prompt[prompt.index(written) :], prompt


@pytest.fixture(scope="module")
def vocab() -> Vocab:
    return Vocab(ScriptedEngine())


@pytest.mark.parametrize("family", TAGGED, ids=[f.template for f in TAGGED])
def test_the_required_grammar_takes_the_templates_call(family: Family, vocab: Vocab) -> None:
    fmt = learned(family)
    one = written_by_template(family, fmt, [("forecast", ARGS)])
    two = written_by_template(family, fmt, [("forecast", ARGS), ("get_time", {"zone": "UTC"})])
    forced = ToolRequest(TOOLS, "required")
    assert vocab.accepts(vocab.matcher(fmt, forced), one), one
    assert vocab.accepts(vocab.matcher(fmt, forced), two), two
    bad = written_by_template(family, fmt, [("forecast", {"city": "Paris", "days": "three"})])
    assert not vocab.accepts(vocab.matcher(fmt, forced), bad), bad
    lazy = vocab.matcher(fmt, ToolRequest(TOOLS, "auto"), lazy=True)
    assert vocab.accepts(lazy, one.removeprefix(fmt.start)), one


Plan = list[tuple[list[str], bool]]  # an answer's runs of text, each cut into pieces or not


def planned(text: str, free: list[str], rng: random.Random) -> Plan:
    """`text` in runs: those a model may write in any tokens (free text, and what precedes
    the grammar) cut at random places, the rest (markup that a call grammar forces) left to
    be tokenized as the grammar's tokenizer does, since llguidance lets a forced text be
    written in those tokens only. `free` are the free runs, in order; a call's start marker
    is free, and ends at a token's end (a trigger inside a token is another issue's)."""
    runs: Plan = []
    at = 0
    for run in free:
        found = text.index(run, at)
        if found > at:
            runs.append(([text[at:found]], False))
        cut = random_cuts(run, rng, len(run) // 2) if len(run) > 1 else [run]
        runs.append((cut, True))
        at = found + len(run)
    if at < len(text):
        runs.append(([text[at:]], False))
    return runs


def tokens(app: ScriptedApp, plan: Plan) -> list[int | str]:
    """A planned answer's tokens: free runs as their pieces, markup as the vocabulary makes it."""
    out: list[int | str] = []
    for pieces, free in plan:
        out += pieces if free else app.engine.lexicon.tokenize(pieces[0], True)
    return out


def scripted(template: str, plans: list[Plan]) -> ScriptedApp:
    """An app whose model has `template` and knows every free piece of `plans` as a word."""
    words = {piece for plan in plans for pieces, free in plan if free for piece in pieces}
    source = (TEMPLATES / f"{template}.jinja").read_text()
    return ScriptedApp(engine=ScriptedEngine(chat_template=source, words=words, n_seq_max=2))


def ask(app: ScriptedApp, plan: Plan, stream: bool, choice: str = "auto") -> Any:
    body = {"model": "any", "stream": stream, "tool_choice": choice, "max_tokens": 400,
            "messages": [{"role": "user", "content": "Weather?"}],
            "tools": [t.as_openai() for t in TOOLS]}  # fmt: skip
    response = app.post("/v1/chat/completions", body, tokens(app, plan))
    assert response.status_code == 200, response.text
    return chat_stream(response.text) if stream else chat_whole(response.json())


# -- gpt-oss: harmony channels ---------------------------------------------------------------

GPT_OSS = next(f for f in FAMILIES if f.name == "harmony")
ANALYSIS = "<|channel|>analysis<|message|>The user wants the forecast.<|end|>"
CALL = ('<|start|>assistant<|channel|>commentary to=functions.forecast <|constrain|>json'
        '<|message|>{"city": "Paris", "days": 3, "unit": "celsius"}<|call|>')  # fmt: skip
FINAL = "<|start|>assistant<|channel|>final<|message|>It is sunny."


def test_harmony_channels_are_learned() -> None:
    assert learn_think_format(template_of(GPT_OSS), ()) == HARMONY


def harmony(chunks: list[str]) -> tuple[str, str, list[tuple[str, Any]]]:
    splitter = ChannelSplitter(learned(GPT_OSS), HARMONY, TOOLS)
    pieces = [p for chunk in chunks for p in splitter.push(chunk)] + splitter.finish()
    content = "".join(p.text for p in pieces if p.channel == "content")
    reasoning = "".join(p.text for p in pieces if p.channel == "reasoning")
    calls = [(p.call.name, json.loads(p.call.arguments)) for p in pieces if p.call]
    return content, reasoning, calls


def test_analysis_a_call_and_final_go_to_reasoning_calls_and_content() -> None:
    """A preamble in the commentary channel is content too; the headers are markup."""
    preamble = "<|start|>assistant<|channel|>commentary<|message|>Checking.<|end|>"
    text = ANALYSIS + preamble + CALL + FINAL
    expected = ("Checking.It is sunny.", "The user wants the forecast.", [("forecast", ARGS)])
    rng = random.Random(7)
    for chunks in ([text], list(text), *(random_cuts(text, rng, 12) for _ in range(20))):
        assert harmony(chunks) == expected, chunks


def test_harmony_cut_and_required_calls_close() -> None:
    fmt = learned(GPT_OSS)
    for cut in range(len(fmt.start), len(CALL) - len("<|call|>")):
        body = CALL.removeprefix("<|start|>assistant")[:cut]
        splitter = ChannelSplitter(fmt, HARMONY, TOOLS, callable=TOOLS[:1])
        pieces = splitter.push(body) + splitter.finish(cut=True)
        (call,) = [p.call for p in pieces if p.call is not None]
        assert call.name == "forecast" and isinstance(json.loads(call.arguments), dict), body
    splitter = ChannelSplitter(fmt, HARMONY, TOOLS, callable=TOOLS[1:], required=True)
    pieces = splitter.push(ANALYSIS) + splitter.finish()
    assert [p.call.name for p in pieces if p.call] == ["get_time"]


def test_the_harmony_grammar_takes_both_headers(vocab: Vocab) -> None:
    fmt = learned(GPT_OSS)
    forced = ToolRequest(TOOLS, "required")
    by_template = written_by_template(GPT_OSS, fmt, [("forecast", ARGS)])
    assert by_template.startswith(" to=functions.forecast<|channel|>commentary json<|message|>")
    for text in (CALL.removeprefix("<|start|>assistant"), by_template):
        assert vocab.accepts(vocab.matcher(fmt, forced), text), text
    assert not vocab.accepts(vocab.matcher(fmt, forced), CALL.replace('"days": 3', '"days": 0'))
    lazy = vocab.matcher(fmt, ToolRequest(TOOLS, "auto"), lazy=True)
    assert vocab.accepts(lazy, CALL.removeprefix("<|start|>assistant").removeprefix(fmt.start))


@pytest.fixture(scope="module")
def gpt_oss() -> Iterator[tuple[ScriptedApp, list[Plan]]]:
    rng = random.Random(3)
    start = "<|start|>assistant<|channel|>commentary to=functions."
    plans = [planned(ANALYSIS + CALL, [ANALYSIS + start, "Paris"], rng),
             planned(ANALYSIS + FINAL, [ANALYSIS + FINAL], rng)]  # fmt: skip
    app = scripted(GPT_OSS.template, plans)
    yield app, plans
    app.close()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_scripted_harmony_answer(gpt_oss: tuple[ScriptedApp, list[Plan]], stream: bool) -> None:
    app, plans = gpt_oss
    reading = ask(app, plans[0], stream)
    assert (reading.text, reading.reasoning) == ("", "The user wants the forecast.")
    assert reading.calls == (("forecast", ARGS),)
    assert reading.finish["finish_reason"] == "tool_calls"
    reading = ask(app, plans[1], stream)
    assert (reading.text, reading.reasoning, reading.calls) == (
        "It is sunny.", "The user wants the forecast.", ())  # fmt: skip


CUT_TOO = ("MiniMax-M2", "MiniMax-M3", "tencent-Hy3", "openbmb-MiniCPM5-1B", "GLM-4.7-Flash",
           "ByteDance-Seed-OSS", "deepseek-ai-DeepSeek-V4")  # fmt: skip
CUT = [f for f in TAGGED if f.template in CUT_TOO]


@pytest.mark.parametrize("family", CUT, ids=[f.template for f in CUT])
def test_two_calls_cut_anywhere_come_back_closed(family: Family) -> None:
    """Cut anywhere after the first call's start, two calls as the template writes them come
    back as calls only: the first the forecast (whole once its arguments were), then the
    second, closed."""
    fmt = learned(family)
    text = written_by_template(family, fmt, [("forecast", ARGS), ("get_time", {"zone": "UTC"})])
    first = text.index("celsius") + len("celsius")
    for cut in range(len(fmt.start), len(text) + 1):
        splitter = ChannelSplitter(fmt, tools=TOOLS)
        pieces = splitter.push(text[:cut]) + splitter.finish(cut=True)
        calls = [p.call for p in pieces if p.call is not None]
        assert calls and not any(p.text.strip() for p in pieces), text[:cut]
        assert calls[0].name == "forecast", text[:cut]
        if cut > first + len(fmt.value_close):
            assert json.loads(calls[0].arguments) == ARGS, text[:cut]
    assert [c.name for c in calls] == ["forecast", "get_time"] and not splitter.closed_by_endmark
