"""Tool calls, engine-neutral: what a request offers, and the grammar that makes a call valid.

The call's *format* (its markers) comes from the model's template (`chat.learn_call_format`)
or is endmark's generic one; splitting the output is `channels.py`'s job.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from endmark.channels import CallFormat
from endmark.constraints import JSON_OPTIONS

Choice = str  # "auto", "none", "required", or the name of the one tool to call


@dataclass(frozen=True)
class Tool:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})

    def as_openai(self) -> dict[str, Any]:
        """The shape Hugging Face chat templates expect in `tools`."""
        function = {"name": self.name, "description": self.description}
        return {"type": "function", "function": {**function, "parameters": self.parameters}}


@dataclass(frozen=True)
class ToolRequest:
    tools: tuple[Tool, ...]
    choice: Choice = "auto"
    parallel: bool = True

    @property
    def forced(self) -> bool:
        """The whole answer must be calls (`required`, or a named tool)."""
        return self.choice not in ("auto", "none")

    @property
    def callable(self) -> tuple[Tool, ...]:
        if self.choice in ("auto", "none", "required"):
            return self.tools
        return tuple(t for t in self.tools if t.name == self.choice)


def call_schema(tool: Tool, args_key: str = "arguments") -> dict[str, Any]:
    """One call of `tool`: its name, and arguments valid against its parameters."""
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, args_key: tool.parameters},
        "required": ["name", args_key],
        "additionalProperties": False,
    }


def _literal(text: str, control_texts: Collection[str]) -> str:
    """A marker in llguidance's Lark syntax: a special token as `<...>`, else quoted text."""
    if text in control_texts and text.startswith("<") and text.endswith(">"):
        return text
    return json.dumps(text)


def call_grammar(
    fmt: CallFormat, request: ToolRequest, control_texts: Collection[str], lazy: bool = False
) -> str:
    """The Lark grammar of an answer made of calls in `fmt`. With `lazy`, the grammar starts
    right after the first start marker, which the model has already written."""
    calls = request.callable
    schema: dict[str, Any] = {"anyOf": [call_schema(t, fmt.args_key) for t in calls]}
    if fmt.array:
        schema = {"type": "array", "items": schema, "minItems": 1}
        if not request.parallel:
            schema["maxItems"] = 1
    schema["x-guidance"] = JSON_OPTIONS  # compact JSON: no runaway blanks
    start = _literal(fmt.start, control_texts) if fmt.start else ""
    end = _literal(fmt.end, control_texts) if fmt.end else ""
    nl = '"\\n"?'  # at most one line break around a call, as the templates write them
    body = f"{nl} call_json {nl} {end}" if end else f"{nl} call_json"
    one = f"{start} {body}".strip()
    first = body if lazy else one
    more = "" if fmt.array or not request.parallel or not end else f" ({nl} {one})*"
    return f"%llguidance {{}}\nstart: {first}{more}\ncall_json: %json {json.dumps(schema)}\n"


GENERIC_INSTRUCTIONS = (
    "You can call tools. To call one, answer with <tool_call>, a JSON object with the tool's "
    '"name" and its "arguments", and </tool_call>; nothing else in that answer. The tools, as '
    "JSON Schema:\n{tools}"
)


def generic_system_prompt(request: ToolRequest) -> str:
    """What a model whose template knows no tools is told (endmark's generic format)."""
    described = [t.as_openai()["function"] for t in request.callable]
    text = GENERIC_INSTRUCTIONS.format(tools=json.dumps(described, ensure_ascii=False))
    if request.forced:
        text += "\nThis answer must be a tool call."
    return text
