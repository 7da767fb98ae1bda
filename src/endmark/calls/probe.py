"""Probe renders: how a template writes an assistant turn of tool calls, read off the text it
renders (as the end of a turn is read, DESIGN.md), so that no format is hand-written."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from endmark.chat import ChatTemplate

PROBE_TOOL_NAME = "endmark_probe_fn"
PROBE_USER = [{"role": "user", "content": "Hello"}]
# what a template may write before a call when thinking is empty or was opened by the prompt
_EMPTY_THINKING = re.compile(r"^\s*(<(\w+:)?think>)?\s*</(\w+:)?think>\s*")


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
    if it does not render them, or not as a continuation of that prompt."""
    try:
        prefix = template.render(PROBE_USER, True, tools=[tool])
        full = template.render([*PROBE_USER, call_turn(arguments)], False, tools=[tool])
    except Exception:  # noqa: BLE001 - a template that fails on a probe teaches nothing
        return None
    if not full.startswith(prefix) or PROBE_TOOL_NAME not in full[len(prefix) :]:
        return None
    return full[len(prefix) :]


def takes_long_ids(template: ChatTemplate, tool: dict[str, Any], arguments: dict[str, Any]) -> bool:
    """Whether the template takes OpenAI's call ids (Mistral's refuse any but 9 characters)."""
    try:
        template.render([*PROBE_USER, call_turn([arguments], "call_endmark_probe")], False,
                        tools=[tool])  # fmt: skip
    except Exception:  # noqa: BLE001 - refused, as Mistral's do, or failed: not taken
        return False
    return True


def without_empty_thinking(text: str) -> str:
    """`text` without the empty thinking block a template writes in front of a call (Qwen3)."""
    return _EMPTY_THINKING.sub("", text, count=1)


def up_to_turn_end(text: str, end_texts: Collection[str]) -> str:
    """`text` cut where the first of `end_texts` (what ends a turn) begins."""
    ends = [text.find(t) for t in end_texts if t and t in text]
    return text[: min(ends)] if ends else text
