"""A probe call's text found by diffing two renders, as llama.cpp's auto-parser finds it
(`common/chat-diff-analyzer.cpp`): the same conversation ending in an assistant turn with
calls and in one without, the text where they differ being the calls.

`rendered_calls` reads a call turn as the continuation of the generation prompt; a template
whose prompt opens a think block that a written turn closes its own way (GLM-4.7, Nemotron 3,
MiniMax-M2: the prompt ends in `<think>\\n`, the turn starts with `</think>`) is no such
continuation, and is diffed instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from endmark.calls.probe import PROBE_TOOL_NAME, PROBE_USER, call_turn, rendered_calls
from endmark.chat import ChatTemplate

_OPENERS = "<["  # a tag begins with one of these...
_CLOSERS = ">]"  # ...and ends with one of these
_LAST_TAG = re.compile(r"(<[^<>]+>|\[[^\[\]]+\])\s*$")


def common_prefix(a: str, b: str) -> int:
    """How many characters `a` and `b` begin with alike, backed off to the start of a tag
    cut there (`...<|im_end|>` against `...<tool_call>` share `<`, which is neither's)."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    opened = max(a.rfind(c, 0, n) for c in _OPENERS)
    closed = max(a.rfind(c, 0, n) for c in _CLOSERS)
    return opened if opened > closed else n


def common_suffix(a: str, b: str) -> int:
    """How many characters `a` and `b` end with alike, from the end of a tag cut there
    (`<|return|>` against `<|call|>` share `|>`, which is neither's)."""
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    tail = a[len(a) - n :]
    closer = min((tail.find(c) for c in _CLOSERS if c in tail), default=-1)
    opener = min((tail.find(c) for c in _OPENERS if c in tail), default=len(tail))
    return n - closer - 1 if 0 <= closer < opener else n


@dataclass(frozen=True)
class _Renders:
    """One probe conversation, rendered three ways: up to the generation prompt, ending in an
    assistant turn without calls, and ending in one with them."""

    prompt: str
    without: str
    full: str


def _renders(
    template: ChatTemplate, tool: dict[str, Any], arguments: list[dict[str, Any]]
) -> _Renders | None:
    plain = {"role": "assistant", "content": ""}
    try:
        return _Renders(
            template.render(PROBE_USER, True, tools=[tool]),
            template.render([*PROBE_USER, plain], False, tools=[tool]),
            template.render([*PROBE_USER, call_turn(arguments)], False, tools=[tool]),
        )
    except Exception:  # noqa: BLE001 - a template that fails on a probe teaches nothing
        return None


def diffed_calls(
    template: ChatTemplate, tool: dict[str, Any], arguments: list[dict[str, Any]]
) -> str | None:
    """The text a turn of these calls adds to a turn without them: from where the two renders
    part, to the end of the call turn's render. None: the template fails or writes no call."""
    renders = _renders(template, tool, arguments)
    if renders is None:
        return None
    section = renders.full[common_prefix(renders.without, renders.full) :]
    if PROBE_TOOL_NAME not in section:
        return None
    return section[_header_length(renders.prompt, section) :]


def _header_length(prompt: str, section: str) -> int:
    """How much of `section` is the assistant's header that the generation prompt ends with
    (the prompt perhaps opening a think block after it): a template that writes no empty
    turn parts from a call turn before the header (Nemotron Nano v2)."""
    bare = _LAST_TAG.sub("", prompt)
    for n in range(len(section), 0, -1):
        if prompt.endswith(section[:n]) or bare.endswith(section[:n]):
            return n
    return 0


def call_section(
    template: ChatTemplate, tool: dict[str, Any], arguments: list[dict[str, Any]]
) -> str | None:
    """What the template writes for a turn of these calls after its generation prompt, or,
    when the turn does not continue that prompt, where it parts from a turn without calls;
    without the end of the turn that both turns end with (MiniMax's `[e~[`, which need not
    be a special token of the model's to end its turn)."""
    section = rendered_calls(template, tool, arguments) or diffed_calls(template, tool, arguments)
    renders = _renders(template, tool, arguments) if section else None
    if section is None or renders is None:
        return section
    end = renders.full[len(renders.full) - common_suffix(renders.full, renders.without) :]
    return section[: len(section) - len(end)] if end.strip() and section.endswith(end) else section
