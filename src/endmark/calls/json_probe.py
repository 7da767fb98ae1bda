"""The JSON kinds' one analysis: where a template writes a probe call's JSON, what comes
before and after it, and which key holds what. The keys are learned by diffing renders that
differ in one thing (another name, other arguments, another id, a second call), never by
their place: command-r7b writes `{"tool_call_id", "tool_name", "parameters"}`, Apertus
`{"get_weather": {...}}` (the name is the key)."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from endmark.calls.diff import IDS, NAMES, Call, call_section, changed_keys, json_at
from endmark.calls.probe import (
    PROBE_TOOL_NAME,
    probe_tool,
    rendered_calls,
    takes_long_ids,
    up_to_turn_end,
    without_empty_thinking,
)
from endmark.chat import ChatTemplate

PROBE_ARGS = {"endmark_probe_arg": 1}
PROBE_TOOL = probe_tool({"endmark_probe_arg": {"type": "integer"}})


@dataclass(frozen=True)
class JsonKeys:
    """Which key of a call object holds its name ("": the name is the key itself), its
    arguments and its id ("": none), in the order the template writes them."""

    name: str = "name"
    args: str = "arguments"
    id: str = ""
    order: tuple[str, ...] = ()


@dataclass(frozen=True)
class JsonProbe:
    """How a template writes a probe call as JSON: the text before the JSON (`before`), after
    it up to the end of the turn (`end`), whether the JSON sits in an array, its keys, and
    whether the template takes OpenAI's long call ids."""

    before: str
    end: str
    array: bool
    args_key: str
    short_ids: bool
    keys: JsonKeys = JsonKeys()
    pretty: bool = False  # the JSON is written over several lines (`tojson(indent=4)`)


def probe_json(template: ChatTemplate, end_texts: Collection[str]) -> JsonProbe | None:
    """The text before the call's JSON is its start marker, what follows it up to the end of
    the turn its end marker. None: no JSON call with the name in it is written."""
    body = call_section(template, (Call(),), end_texts)
    if body is None:
        body = rendered_calls(template, PROBE_TOOL, [PROBE_ARGS])
    if body is None:
        return None
    at = body.rfind("{", 0, body.index(PROBE_TOOL_NAME))
    if at < 0:
        return None
    try:
        data, length = json.JSONDecoder().raw_decode(body[at:])
    except (json.JSONDecodeError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    keys = learn_keys(template, data, end_texts)
    if keys is None:
        return None
    before, after = without_empty_thinking(body[:at].strip()), body[at + length :]
    array = before.endswith("[")
    if array:
        before, after = before[:-1].strip(), after.lstrip().removeprefix("]")
    end = up_to_turn_end(after, end_texts).strip()
    short_ids = not takes_long_ids(template, PROBE_TOOL, PROBE_ARGS)
    pretty = "\n" in body[at : at + length]
    return JsonProbe(before, end, array, keys.args, short_ids, keys, pretty)


def learn_keys(
    template: ChatTemplate, call: Mapping[str, Any], end_texts: Collection[str]
) -> JsonKeys | None:
    """The keys of `call` (the probe call's object), each found by the render that changes
    it alone; a render the template refuses leaves that key to its value's look."""
    other_name = _call_object(template, (Call(name=1),), end_texts, NAMES[1])
    if NAMES[0] in call:  # the name is the key: its value is the arguments
        if other_name is not None and NAMES[1] not in other_name:
            return None
        return JsonKeys("", "", "", ())
    named = [k for k in call if call[k] == NAMES[0]]
    if other_name is not None:
        named = [k for k in changed_keys(call, other_name) if k in named]
    other_args = _call_object(template, (Call(args=1),), end_texts, NAMES[0])
    holds_args = [k for k in call if "endmark_probe_arg" in json.dumps(call[k])]
    if other_args is not None:
        holds_args = [k for k in changed_keys(call, other_args) if k in holds_args]
    if len(named) != 1 or len(holds_args) != 1:
        return None
    id_key = _id_key(template, call, end_texts, {named[0], holds_args[0]})
    order = tuple(k for k in call if k in {named[0], holds_args[0], id_key})
    plain = not id_key and order == (named[0], holds_args[0])
    return JsonKeys(named[0], holds_args[0], id_key, () if plain else order)


def _id_key(
    template: ChatTemplate, call: Mapping[str, Any], end_texts: Collection[str], taken: set[str]
) -> str:
    """The key whose value changes with the call's id, or with its place in the turn
    (command-r7b numbers its calls); "" when the template writes no id."""
    other_id = _call_object(template, (Call(id=2),), end_texts, NAMES[0])
    if other_id is not None:
        changed = [k for k in changed_keys(call, other_id) if k not in taken]
        if changed:
            return changed[0]
    section = call_section(template, (Call(), Call(1, 1, 1)), end_texts)
    found = json_at(section or "", NAMES[1])
    items = found[2] if found and isinstance(found[2], list) else []
    if len(items) == 2 and all(isinstance(i, dict) for i in items):
        changed = [k for k in changed_keys(items[0], items[1]) if k not in taken]
        written = [k for k in changed if isinstance(call.get(k), str)]
        if written:
            return written[0]
    return next((k for k in call if k not in taken and call[k] in IDS), "")


def _call_object(
    template: ChatTemplate, calls: tuple[Call, ...], end_texts: Collection[str], needle: str
) -> dict[str, Any] | None:
    """The first call object of a render of `calls`: the JSON that holds `needle`."""
    found = json_at(call_section(template, calls, end_texts) or "", needle)
    value = found[2] if found else None
    if isinstance(value, list) and value:
        value = value[0]
    return value if isinstance(value, dict) else None
