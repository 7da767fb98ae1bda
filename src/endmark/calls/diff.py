"""Probe renders diffed, as llama.cpp's auto-parser learns a format (`chat-diff-analyzer.cpp`):
two renders of a conversation that differ in one thing (a call or plain text, another name,
another argument, another id, one call or two) show where that thing is written, and the text
around it is the format's markup. Every render that fails teaches nothing: nothing raises.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from endmark.calls.probe import (
    PROBE_USER,
    probe_tool,
    up_to_turn_end,
    without_empty_thinking,
)
from endmark.chat import ChatTemplate

NAMES = ("endmark_probe_fn", "endmark_other_fn")
ARGS = ({"endmark_probe_arg": 1}, {"endmark_other_arg": 2})
# ids of 9 letters and digits: Mistral's templates refuse any other
IDS = ("call00001", "call00002", "call00003")
CONTENT = "ENDMARK_PLAIN_TEXT"
_EMPTY_BLOCK = re.compile(
    r"^\s*<\|START_(\w+)\|>\s*<\|END_\1\|>\s*"
    r"|^\s*<\|open\|>(response)<\|sep\|>\s*<\|close\|>\2<\|sep\|>\s*"  # Kimi K3's XTML
)
# a special token's text: `<|...|>`, `<｜...｜>`, `[NAME]`, `<tag>`, `</tag>`
MARKER = re.compile(r"<[|｜][^<>]*?[|｜]>|\[/?[A-Z][A-Z_]*\]|</?[A-Za-z_][\w:.\-]*>")


def probe_tools() -> list[dict[str, Any]]:
    """The two probe tools, each with its own integer argument."""
    tools = []
    for name, args in zip(NAMES, ARGS, strict=True):
        tool = probe_tool({key: {"type": "integer"} for key in args})
        tools.append({**tool, "function": {**tool["function"], "name": name}})
    return tools


@dataclass(frozen=True)
class Call:
    """One probe call: which name, which arguments, which id."""

    name: int = 0
    args: int = 0
    id: int = 0

    def as_message(self, as_text: bool) -> dict[str, Any]:
        args: Any = ARGS[self.args]
        function = {"name": NAMES[self.name], "arguments": json.dumps(args) if as_text else args}
        return {"id": IDS[self.id], "type": "function", "function": function}


def _render(template: ChatTemplate, turn: dict[str, Any]) -> str | None:
    try:
        return template.render([*PROBE_USER, turn], False, tools=probe_tools())
    except Exception:  # noqa: BLE001 - a template that fails on a probe teaches nothing
        return None


def marker_start(text: str, at: int) -> int:
    """`at`, moved back to the start of a marker it falls inside (`<|tool_ca` | `ll|>`)."""
    opener = max(text.rfind("<", 0, at), text.rfind("[", 0, at))
    closer = max(text.rfind(">", 0, at), text.rfind("]", 0, at))
    return opener if opener > closer else at


def _boundary_after(text: str, at: int) -> int:
    """`at`, moved on past the end of a marker it falls inside."""
    opener = max(text.rfind("<", 0, at), text.rfind("[", 0, at))
    closer = max(text.rfind(">", 0, at), text.rfind("]", 0, at))
    if opener <= closer:
        return at
    ends = [i for i in (text.find(">", at), text.find("]", at)) if i >= 0]
    return min(ends) + 1 if ends else at


def without_empty_blocks(text: str) -> str:
    """`text` without an empty thinking block in front (`<think></think>`, Cohere's
    `<|START_THINKING|><|END_THINKING|>`), or an empty answer's (Kimi K3's `response`)."""
    return _EMPTY_BLOCK.sub("", without_empty_thinking(text), count=1)


def common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def common_suffix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def call_section(
    template: ChatTemplate,
    calls: tuple[Call, ...],
    end_texts: Collection[str] = (),
) -> str | None:
    """What the template writes for an assistant turn of `calls`, where it would write plain
    text: the diff of the two renders, cut where the turn ends (`end_texts`). The arguments
    go as an object, else as a JSON text (as clients send them), the content as "" else
    None, whichever the template renders with the first call's name in it; None if none."""
    plain = _render(template, {"role": "assistant", "content": CONTENT})
    if plain is None:
        return None
    for as_text in (False, True):
        for content in ("", None):
            turn = {"role": "assistant", "content": content,
                    "tool_calls": [c.as_message(as_text) for c in calls]}  # fmt: skip
            with_calls = _render(template, turn)
            if with_calls is None:
                continue
            start = marker_start(with_calls, common_prefix(with_calls, plain))
            tail = min(common_suffix(with_calls, plain), len(with_calls) - start)
            end = _boundary_after(with_calls, len(with_calls) - tail)
            section = without_empty_blocks(with_calls[start:end])
            section = up_to_turn_end(section, end_texts).strip()
            if NAMES[calls[0].name] in section:
                return section
    return None


def first_marker(text: str) -> str:
    """The special-token-like marker `text` begins with ("" if none)."""
    found = MARKER.match(text)
    return found.group(0) if found else ""


def json_at(text: str, needle: str) -> tuple[int, int, Any] | None:
    """The first JSON object or array in `text` that holds `needle` (as a key or a value):
    where it starts, where it ends, and its value."""
    decoder = json.JSONDecoder()
    for at, ch in enumerate(text):
        if ch not in "{[":
            continue
        try:
            value, end = decoder.raw_decode(text, at)
        except ValueError:
            continue
        if needle in json.dumps(value):
            return at, end, value
    return None


def changed_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ between two renders of one call object."""
    return [k for k in a if k in b and a[k] != b[k]]


def content_head(template: ChatTemplate) -> str:
    """What a plain answer begins with after the generation prompt (functionary's `all\n`,
    muse-glimmer's ` to=user<|message|>`); empty where the probe teaches nothing."""
    turn = {"role": "assistant", "content": CONTENT}
    try:
        prompt = template.render(PROBE_USER, True)
        full = template.render([*PROBE_USER, turn], False)
    except Exception:  # noqa: BLE001 - a template that fails on a probe teaches nothing
        return ""
    if not full.startswith(prompt) or CONTENT not in full[len(prompt) :]:
        return ""
    return full[len(prompt) : full.index(CONTENT, len(prompt))]
