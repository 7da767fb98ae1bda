"""endmark's generic format, for a model whose template knows no tools: the tools described in
a system message, a call as `<tool_call>{"name", "arguments"}</tool_call>`, and a history's
calls written out in that format as the model would have written them."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from endmark.calls.base import Messages
from endmark.calls.json_tags import JsonInTags
from endmark.chat import ChatTemplate
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
    start: str = "<tool_call>"
    end: str = "</tool_call>"

    kind: ClassVar[str] = "generic"
    learned_from_template: ClassVar[bool] = False

    @classmethod
    def learn(cls, template: ChatTemplate, end_texts: Collection[str]) -> Generic | None:
        return None

    def history(self, messages: Messages) -> list[dict[str, Any]]:
        """An assistant's calls written out in this format, tool results as `tool` messages
        of plain text: a template that knows no tools renders both as text."""
        out = []
        for m in messages:
            m = dict(m)
            calls = m.pop("tool_calls", None) or []
            written = [
                self.start + json.dumps({"name": c["function"]["name"],
                                         self.args_key: c["function"]["arguments"]}) + self.end
                for c in calls
            ]  # fmt: skip
            if written:
                m["content"] = "".join([m.get("content") or "", *written])
            m.pop("tool_call_id", None)
            out.append(m)
        return out

    def prompt_inputs(
        self, messages: Messages, request: ToolRequest
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return with_system_text(self.history(messages), generic_system_prompt(request)), {}


GENERIC = Generic()
