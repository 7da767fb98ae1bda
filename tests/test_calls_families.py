"""Every JSON-ish family's own call format, learned from its real template (issue 24): the
name outside the JSON (Mistral Small 3.2, Devstral, Kimi K2, DeepSeek V3.1 and R1,
functionary v3.1, Solar Open), the name as the key (Apertus), keys learned by diffing renders
(command-r7b's `tool_call_id`, `tool_name`, `parameters`), JSON arrays and tags behind a
prompt that opens thinking, and the JSON kinds learned before (Hermes, Llama 3.x, Mistral
Nemo, ...), now through the diffing probe. For each template: the kind and its pieces; a
call as a plain Jinja render writes it, parsed back whole and in random pieces (served by the
scripted engine in `test_calls_replay.py`, as every template's); `required`'s grammar takes
that text; a call cut anywhere closes to a call."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from endmark.calls import (
    BareJson,
    CallStrategy,
    JsonArray,
    JsonInTags,
    NamedJson,
    learn_call_strategy,
)
from endmark.calls.diff import marker_start, without_empty_blocks
from endmark.calls.probe import up_to_turn_end
from endmark.channels import ChannelSplitter
from endmark.chat import ChatTemplate
from endmark.tools import Tool, ToolRequest
from tests.scripted_engine import ScriptedEngine
from tests.test_calls_json import Vocab

TEMPLATES = Path(__file__).parent / "data" / "templates"
# properties in alphabetical order: Jinja's `tojson` sorts keys, the grammar keeps the schema's
WEATHER_ARGS = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"],
}
WEATHER = Tool("get_weather", "The weather", WEATHER_ARGS)
ADD = Tool("add", "Add", {"type": "object", "properties": {"a": {"type": "number"}}})
TOOLS = (WEATHER, ADD)
ONE = [("get_weather", {"city": "Paris", "days": 3})]
TWO = [*ONE, ("add", {"a": 1.5})]
# a value with markup in it: the call's own text, not its end
TRICKY = [("get_weather", {"city": "Rome </function> [ARGS] <｜tool▁call▁end｜>]}"})]


@dataclass(frozen=True)
class Family:
    """A template, the texts that end its turns (as its model's end tokens), and what must be
    learned: the kind, its name, and pieces (attribute: value)."""

    file: str
    ends: tuple[str, ...]
    kind: type[CallStrategy]
    name: str
    pieces: tuple[tuple[str, Any], ...] = ()
    variables: bool = False  # the template needs llama.cpp's renderer variables (`functions`)
    one_call: bool = False  # the template writes one call a turn (Llama 3.x refuses two)

    @property
    def two(self) -> list[tuple[str, dict[str, Any]]]:
        """Two calls, where the template writes two."""
        return ONE if self.one_call else TWO


FAMILIES = [
    Family("Mistral-Small-3.2-24B-Instruct-2506", ("</s>",), NamedJson, "mistral_small",
           (("start", "[TOOL_CALLS]"), ("name_close", "[CALL_ID]{id}[ARGS]"), ("ids", "id"),
            ("between", "[TOOL_CALLS]"), ("end", ""), ("short_ids", True))),
    Family("unsloth-mistral-Devstral-Small-2507", ("</s>",), NamedJson, "devstral",
           (("start", "[TOOL_CALLS]"), ("name_close", "[ARGS]"), ("end", ""))),
    Family("mistralai-Ministral-3-14B-Reasoning-2512", ("</s>",), NamedJson, "devstral"),
    Family("moonshotai-Kimi-K2", ("<|im_end|>",), NamedJson, "kimi_k2",
           (("call_open", "<|tool_call_begin|>functions."), ("ids", "index"),
            ("name_close", ":{id}<|tool_call_argument_begin|>"),
            ("end", "<|tool_calls_section_end|>"))),
    Family("deepseek-ai-DeepSeek-V3.1", ("<｜end▁of▁sentence｜>",), NamedJson, "deepseek_v3_1",
           (("call_open", "<｜tool▁call▁begin｜>"), ("name_close", "<｜tool▁sep｜>"),
            ("call_close", "<｜tool▁call▁end｜>"), ("end", "<｜tool▁calls▁end｜>"))),
    Family("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", ("<｜end▁of▁sentence｜>",), NamedJson,
           "learned", (("call_open", "<｜tool▁call▁begin｜>function<｜tool▁sep｜>"),
                       ("name_close", "\n```json\n"), ("call_close", "\n```<｜tool▁call▁end｜>"))),
    Family("deepseek-ai-DeepSeek-R1-Distill-Llama-8B", ("<｜end▁of▁sentence｜>",), NamedJson,
           "learned", (("name_close", "\n```json\n"),)),
    Family("meetkai-functionary-medium-v3.1", ("<|eot_id|>", "<|eom_id|>"), NamedJson,
           "functionary_v3_1", (("start", "<function="), ("name_close", ">"),
                                ("call_close", "</function>"), ("end", ""))),
    Family("upstage-Solar-Open-100B", ("<|end|>",), NamedJson, "learned",
           (("call_open", "<|tool_call:begin|>{id}<|tool_call:name|>"), ("ids", "id"),
            ("end", "<|calls|>"))),
    Family("Apertus-8B-Instruct", ("<|assistant_end|>",), JsonArray, "learned",
           (("start", "<|tools_prefix|>"), ("end", "<|tools_suffix|>"), ("name_key", ""))),
    Family("CohereForAI-c4ai-command-r7b-12-2024-tool_use", ("<|END_OF_TURN_TOKEN|>",), JsonArray,
           "learned", (("start", "<|START_ACTION|>"), ("end", "<|END_ACTION|>"),
                       ("name_key", "tool_name"), ("args_key", "parameters"),
                       ("keys", ("tool_call_id", "tool_name", "parameters")))),
    Family("Cohere2MoE", ("<|END_OF_TURN_TOKEN|>",), JsonArray, "learned",
           (("name_key", "tool_name"), ("args_key", "parameters"))),
    Family("fireworks-ai-llama-3-firefunction-v2", ("<|eot_id|>",), JsonArray, "learned",
           (("start", "functools"), ("end", "")), variables=True),
    Family("NVIDIA-Nemotron-Nano-v2", ("<SPECIAL_12>",), JsonArray, "learned",
           (("start", "<TOOLCALL>"), ("end", "</TOOLCALL>"))),
    Family("Apriel-1.6-15b-Thinker-fixed", ("<|end|>",), JsonArray, "learned",
           (("start", "<tool_calls>"), ("end", "</tool_calls>"))),
    Family("Qwen-QwQ-32B", ("<|im_end|>",), JsonInTags, "hermes"),
    # the JSON kinds as they were learned before, through the diffing probe
    Family("Bielik-11B-v3.0-Instruct", ("<|im_end|>",), JsonInTags, "hermes"),
    Family("GigaChat3.1-10B-A1.8B", ("<|message_sep|>",), JsonInTags, "learned",
           (("start", "<|function_call|>"),), one_call=True),
    Family("MiMo-VL", ("<|im_end|>",), JsonInTags, "hermes"),
    Family("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use", ("<|im_end|>",), JsonInTags, "hermes"),
    Family("NousResearch-Hermes-3-Llama-3.1-8B-tool_use", ("<|im_end|>",), JsonInTags, "hermes"),
    Family("Qwen-Qwen2.5-7B-Instruct", ("<|im_end|>",), JsonInTags, "hermes"),
    Family("Qwen-Qwen3-0.6B", ("<|im_end|>",), JsonInTags, "hermes"),
    Family("Reka-Edge", ("<sep>",), JsonInTags, "hermes"),
    Family("ibm-granite-granite-4.0", ("<|end_of_text|>",), JsonInTags, "hermes"),
    Family("ibm-granite-granite-4.1", ("<|end_of_text|>",), JsonInTags, "hermes"),
    Family("meta-llama-Llama-3.1-8B-Instruct", ("<|eot_id|>", "<|eom_id|>"), BareJson, "llama3",
           (("args_key", "parameters"),), one_call=True),
    Family("meta-llama-Llama-3.2-3B-Instruct", ("<|eot_id|>",), BareJson, "llama3", one_call=True),
    Family("meta-llama-Llama-3.3-70B-Instruct", ("<|eot_id|>", "<|eom_id|>"), BareJson, "llama3",
           one_call=True),
    Family("mistralai-Mistral-Nemo-Instruct-2407", ("</s>",), JsonArray, "mistral",
           (("keys", ("name", "arguments", "id")), ("short_ids", True))),
    Family("unsloth-Apriel-1.5", ("<|end|>",), JsonArray, "learned"),
]  # fmt: skip
IDS = [f.file for f in FAMILIES]


class WithRendererVariables(ChatTemplate):
    """A template given the variables llama.cpp's renderer provides (`functions`, `datetime`),
    which firefunction v2 reads; the `fam-render` part gives every template these."""

    def render(self, messages: Any, add_generation_prompt: bool = True, **extra: Any) -> str:
        tools = extra.get("tools") or []
        extra.setdefault("functions", json.dumps([t["function"] for t in tools], indent=2))
        extra.setdefault("datetime", "December 01 2026")
        return super().render(messages, add_generation_prompt, **extra)


def template(family: Family) -> ChatTemplate:
    source = (TEMPLATES / f"{family.file}.jinja").read_text()
    kind = WithRendererVariables if family.variables else ChatTemplate
    return kind(source, family.file, "<s>", "</s>")


def as_the_model_writes(text: str, fmt: CallStrategy) -> str:
    """`text` with the end marker that R1 Distill Llama's template leaves out after a lone
    call (it writes it after two); its model writes it, and the grammar wants it."""
    return text if text.endswith(fmt.end) else text + fmt.end


def written_by_template(
    tmpl: ChatTemplate, ends: tuple[str, ...], calls: list[tuple[str, dict[str, Any]]]
) -> str:
    """An assistant turn of `calls` as a plain Jinja render writes it after the generation
    prompt (up to the end of the turn): arguments as an object, else as a JSON text, with
    content "" else None, whichever the template writes the calls with first."""
    user = [{"role": "user", "content": "Weather?"}]
    tools = [t.as_openai() for t in TOOLS]
    render = getattr(tmpl, "render_given", tmpl.render)  # as given, where a render fits them
    for as_text in (False, True):
        for content in ("", None):
            turn = {"role": "assistant", "content": content, "tool_calls": [
                {"id": f"abcde{i:04d}", "type": "function",
                 "function": {"name": n, "arguments": json.dumps(a) if as_text else a}}
                for i, (n, a) in enumerate(calls)]}  # fmt: skip
            try:
                full = render([*user, turn], False, tools=tools)
            except Exception:  # noqa: BLE001 - the template wants the other shape
                continue
            prompt = render(user, True, tools=tools)
            n = 0
            while n < min(len(full), len(prompt)) and full[n] == prompt[n]:
                n += 1
            text = up_to_turn_end(full[marker_start(full, n) :], ends)
            if calls[0][0] in text:  # an empty thinking block closed first is thinking's
                return without_empty_blocks(text).strip()
    raise AssertionError(f"{tmpl.name} wrote no call")


@pytest.fixture(scope="module")
def learned() -> dict[str, tuple[ChatTemplate, CallStrategy]]:
    out = {}
    for family in FAMILIES:
        tmpl = template(family)
        fmt = learn_call_strategy(tmpl, family.ends)
        assert fmt is not None, family.file
        out[family.file] = (tmpl, fmt)
    return out


def split(fmt: CallStrategy, chunks: list[str]) -> tuple[str, list[tuple[str, Any]]]:
    splitter = ChannelSplitter(fmt, tools=TOOLS)
    pieces = [p for chunk in chunks for p in splitter.push(chunk)] + splitter.finish()
    content = "".join(p.text for p in pieces if p.channel == "content").strip()  # blanks: no text
    calls = [(p.call.name, json.loads(p.call.arguments)) for p in pieces if p.call is not None]
    return content, calls


def random_cuts(rng: random.Random, text: str, k: int = 8) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), k=min(k, max(len(text) - 1, 0))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_the_kind_and_its_pieces_are_learned(family: Family, learned: Any) -> None:
    _, fmt = learned[family.file]
    assert type(fmt) is family.kind and fmt.name == family.name, fmt
    for attribute, value in family.pieces:
        assert getattr(fmt, attribute) == value, (attribute, fmt)


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_a_call_as_the_template_writes_it_parses_back(family: Family, learned: Any) -> None:
    """Whole and cut in random pieces: one call, two, and a value with markup in it."""
    tmpl, fmt = learned[family.file]
    rng = random.Random(24)
    for calls in (ONE, family.two, TRICKY):
        text = written_by_template(tmpl, family.ends, calls)
        expected = ("", [(n, a) for n, a in calls])
        assert split(fmt, [text]) == expected, text
        for _ in range(10):
            assert split(fmt, random_cuts(rng, text)) == expected, text


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_a_call_cut_anywhere_comes_back_closed(family: Family, learned: Any) -> None:
    """Cut after any character of its first call: one call of a tool offered, whose
    arguments are JSON; whole, it is the call as written."""
    tmpl, fmt = learned[family.file]
    text = written_by_template(tmpl, family.ends, ONE)
    at = text.find(fmt.start) + len(fmt.start) if fmt.start else 0
    for cut in range(at, len(text) + 1):
        splitter = ChannelSplitter(fmt, tools=TOOLS, callable=TOOLS)
        pieces = splitter.push(text[:cut]) + splitter.finish(cut=True)
        calls = [p.call for p in pieces if p.call is not None]
        assert len(calls) == 1 and calls[0].name in ("get_weather", "add"), text[:cut]
        assert isinstance(json.loads(calls[0].arguments), dict), text[:cut]
    assert (calls[0].name, json.loads(calls[0].arguments)) == ONE[0]


@pytest.fixture(scope="module")
def vocab() -> Vocab:
    """The scripted engine's vocabulary: every marker is plain text but ChatML's."""
    return Vocab(ScriptedEngine())


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_the_required_grammar_takes_the_templates_calls(
    family: Family, learned: Any, vocab: Vocab
) -> None:
    tmpl, fmt = learned[family.file]
    forced = ToolRequest(TOOLS, "required")
    for calls in (ONE, family.two):
        text = as_the_model_writes(written_by_template(tmpl, family.ends, calls), fmt)
        assert vocab.accepts(vocab.matcher(fmt, forced), text), text
    one = written_by_template(tmpl, family.ends, ONE)
    assert not vocab.accepts(vocab.matcher(fmt, forced), "Sure. " + one)
    wrong = one.replace('"days": 3', '"days": "three"')
    assert wrong == one or not vocab.accepts(vocab.matcher(fmt, forced), wrong)


def test_learning_the_json_kinds_never_takes_the_name_for_the_arguments(learned: Any) -> None:
    """Failure 5: keys are learned by diffing renders, never by their place."""
    _, r7b = learned["CohereForAI-c4ai-command-r7b-12-2024-tool_use"]
    assert isinstance(r7b, JsonArray) and r7b.args_key == "parameters"
    body = '[{"tool_call_id": "0", "tool_name": "add", "parameters": {"a": 2}}]'
    (call,) = r7b.parse(body, TOOLS)
    assert (call.name, json.loads(call.arguments)) == ("add", {"a": 2})
    _, apertus = learned["Apertus-8B-Instruct"]
    (call,) = apertus.parse('[{"get_weather": {"city": "Paris"}}]', TOOLS)
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    assert not isinstance(apertus, BareJson)


def test_a_mistral_small_call_keeps_the_id_the_model_wrote(learned: Any) -> None:
    _, fmt = learned["Mistral-Small-3.2-24B-Instruct-2506"]
    (call,) = fmt.parse('get_weather[CALL_ID]a1b2c3d4e[ARGS]{"city": "Paris"}', TOOLS)
    assert call.id == "a1b2c3d4e"


def test_functionary_v3_2s_first_call_comes_without_the_marker_its_prompt_ends_in(
    vocab: Vocab,
) -> None:
    """The prompt ends in `>>>`: an answer is `NAME\\n{json}` (more calls after `>>>`) or
    text after `all\\n`. The splitter holds the answer's start until it tells which."""
    family = Family("meetkai-functionary-medium-v3.2", ("<|eot_id|>",), NamedJson, "learned")
    fmt = learn_call_strategy(template(family), family.ends)
    assert isinstance(fmt, NamedJson)
    assert (fmt.start, fmt.name_close, fmt.opened, fmt.content_head) == (">>>", "\n", True, "all\n")
    text = 'get_weather\n{"city": "Paris", "days": 3}>>>add\n{"a": 1.5}'
    for chunks in ([text], list(text)):
        assert split(fmt, chunks) == ("", TWO)
    assert split(fmt, list("all\nSunny.")) == ("all\nSunny.", [])
    call = '>>>get_weather\n{"city": "Paris", "days": 3}'
    assert split(fmt, ["all\nLet me see.", call]) == ("all\nLet me see.", ONE)
    splitter = ChannelSplitter(fmt, tools=TOOLS, callable=TOOLS)
    pieces = splitter.push('get_weather\n{"city": "Pa') + splitter.finish(cut=True)
    assert [(p.call.name, json.loads(p.call.arguments)) for p in pieces if p.call] == [
        ("get_weather", {"city": "Pa"})
    ]
    forced = ToolRequest(TOOLS, "required")
    assert vocab.accepts(vocab.matcher(fmt, forced), text)
    assert not vocab.accepts(vocab.matcher(fmt, forced), "Sure. " + text)
