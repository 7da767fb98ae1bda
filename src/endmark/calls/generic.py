"""endmark's generic format, for a model whose template knows no tools: the tools described in
a system message, and a call as `<tool_call>{"name", "arguments"}</tool_call>`.

A history's calls go to the template as `tool_calls`: a template that writes calls writes them
in its own format, with its own checks; one that cannot gets them written out in this format
by `chat_fit` (the same for every render, tools offered or not), its tool results kept."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from endmark.calls.base import Messages
from endmark.calls.json_tags import JsonInTags
from endmark.chat import ChatTemplate
from endmark.chat_fit import GENERIC_CALL_END, GENERIC_CALL_START
from endmark.tools import ToolRequest

GENERIC_INSTRUCTIONS = (
    "You can call tools. To call one, answer with <tool_call>, a JSON object with the tool's "
    '"name" and its "arguments", and </tool_call>; nothing else in that answer. The tools, as '
    "JSON Schema:\n{tools}"
)


def generic_system_prompt(request: ToolRequest) -> str:
    """What a model whose template knows no tools is told."""
    described = [t.as_openai()["function"] for t in request.callable]
    text = GENERIC_INSTRUCTIONS.format(tools=json.dumps(described, ensure_ascii=False))
    if request.forced:
        text += "\nThis answer must be a tool call."
    return text


def with_system_text(messages: Sequence[Mapping[str, Any]], text: str) -> list[dict[str, Any]]:
    """`text` added to the system message, or as one in front."""
    out = [dict(m) for m in messages]
    if out and out[0].get("role") == "system":
        out[0]["content"] = f"{out[0].get('content') or ''}\n\n{text}".strip()
        return out
    return [{"role": "system", "content": text}, *out]


@dataclass(frozen=True)
class Generic(JsonInTags):
    """Never learned: what endmark asks of a model whose template knows no tools."""

    name: str = "generic"
    start: str = GENERIC_CALL_START
    end: str = GENERIC_CALL_END

    kind: ClassVar[str] = "generic"
    learned_from_template: ClassVar[bool] = False

    @classmethod
    def learn(cls, template: ChatTemplate, end_texts: Collection[str]) -> Generic | None:
        return None

    def prompt_inputs(
        self, messages: Messages, request: ToolRequest
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return with_system_text(self.history(messages), generic_system_prompt(request)), {}


GENERIC = Generic()
