"""Probe renders: how a template writes an assistant turn of tool calls, read off the text it
renders (as the end of a turn is read, DESIGN.md), so that no format is hand-written."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Collection, Mapping
from typing import Any

from endmark.chat import ChatTemplate

log = logging.getLogger("endmark")

PROBE_TOOL_NAME = "endmark_probe_fn"
PROBE_USER = [{"role": "user", "content": "Hello"}]
# what a template may write before a call when thinking is empty or was opened by the prompt
_EMPTY_THINKING = re.compile(
    r"^\s*(<(\w+:)?think>)?\s*</(\w+:)?think>\s*"
    r"|^\s*(<\|open\|>think<\|sep\|>)?\s*<\|close\|>think<\|sep\|>\s*"  # Kimi K3's XTML
)
_OPENING_TAG = re.compile(r"<[^<>/\s]+>|\[[^\[\]/\s]+\]|<\|[^<>|\s]+\|>")


def probe_tool(properties: Mapping[str, Any]) -> dict[str, Any]:
    parameters = {"type": "object", "properties": dict(properties)}
    function = {"name": PROBE_TOOL_NAME, "description": "probe", "parameters": parameters}
    return {"type": "function", "function": function}


def call_turn(arguments: list[dict[str, Any]], call_id: str = "probe0001") -> dict[str, Any]:
    """An assistant turn that calls the probe tool once per entry of `arguments`."""
    calls = [
        {"id": call_id if i == 0 else f"probe000{i + 1}", "type": "function",
         "function": {"name": PROBE_TOOL_NAME, "arguments": args}}
        for i, args in enumerate(arguments)
    ]  # fmt: skip
    return {"role": "assistant", "content": "", "tool_calls": calls}


def rendered_calls(
    template: ChatTemplate, tool: dict[str, Any], arguments: list[dict[str, Any]]
) -> str | None:
    """What the template writes for a turn of these calls, after its generation prompt; None
    if it does not render them, or not as a continuation of that prompt. A generation prompt
    that opens thinking (`enable_thinking`, as llama.cpp renders) may differ from the turn
    in that opening only. The calls are given as clients send them; the template's render
    fits their arguments and ids to what it takes (`chat_fit`)."""
    try:
        prefix = template.render(PROBE_USER, True, tools=[tool])
        full = template.render([*PROBE_USER, call_turn(arguments)], False, tools=[tool])
    except Exception as exc:  # noqa: BLE001 - a template that fails on a probe teaches nothing
        log.debug("the chat template (%s) refused a probe call: %s", template.name, exc)
        return None
    at = _continues_at(prefix, full)
    if at is None or PROBE_TOOL_NAME not in full[at:]:
        return None
    return full[at:]


def _continues_at(prompt: str, full: str) -> int | None:
    """Where `full` goes on from the generation `prompt`: at its end, or where they part when
    what the prompt has beyond that is only an opening thinking tag."""
    if full.startswith(prompt):
        return len(prompt)
    common = len(os.path.commonprefix([prompt, full]))
    tail = prompt[common:].strip()
    return common if not tail or _OPENING_TAG.fullmatch(tail) else None


def takes_long_ids(template: ChatTemplate, tool: dict[str, Any], arguments: dict[str, Any]) -> bool:
    """Whether the template takes OpenAI's call ids (Mistral's refuse any but 9 characters)."""
    return not template.caps.id_length


def without_empty_thinking(text: str) -> str:
    """`text` without the empty thinking block a template writes in front of a call (Qwen3)."""
    return _EMPTY_THINKING.sub("", text, count=1)


def up_to_turn_end(text: str, end_texts: Collection[str]) -> str:
    """`text` cut where the first of `end_texts` (what ends a turn) begins."""
    ends = [text.find(t) for t in end_texts if t and t in text]
    return text[: min(ends)] if ends else text
