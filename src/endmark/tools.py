"""Tool calls, engine-neutral: what a request offers, and the grammar that makes a call valid.

The call's *format* (its markers) comes from the model's template (`chat.learn_call_format`)
or is endmark's generic one; splitting the output is `channels.py`'s job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from endmark.channels import CallFormat
from endmark.constraints import JSON_OPTIONS, closed_objects

Choice = str  # "auto", "none", "required", or the name of the one tool to call
MAX_CALLS = 8  # calls in one turn, at most
MAX_STRING = 1024  # characters in a string argument whose schema sets no bound


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
    def max_calls(self) -> int:
        """Calls the answer may make: one for a named tool (as OpenAI's forced function) or
        without parallel calls; else MAX_CALLS, since a small model may repeat one forever."""
        named = self.choice not in ("auto", "none", "required")
        return 1 if named or not self.parallel else MAX_CALLS

    @property
    def callable(self) -> tuple[Tool, ...]:
        if self.choice in ("auto", "none", "required"):
            return self.tools
        return tuple(t for t in self.tools if t.name == self.choice)


def closed(schema: Any) -> Any:
    """A tool's parameters as a constraint reads them: objects closed as every schema is
    (`constraints.closed_objects`), and a free string held to MAX_STRING characters unless
    the schema bounds it, so that a small model cannot ramble in one argument forever."""
    return closed_objects(schema, max_string=MAX_STRING)


def call_schema(tool: Tool, args_key: str = "arguments") -> dict[str, Any]:
    """One call of `tool`: its name, and arguments valid against its parameters."""
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, args_key: closed(tool.parameters)},
        "required": ["name", args_key],
        "additionalProperties": False,
    }


def _literal(text: str, control: Mapping[str, int]) -> str:
    """A marker in llguidance's Lark syntax: a special token as itself (`<|name|>`, or by id
    for one not written in angle brackets, like Mistral's `[TOOL_CALLS]`), else quoted text."""
    if text not in control:
        return json.dumps(text)
    if text.startswith("<") and text.endswith(">"):
        return text
    return f"<[{control[text]}]>"


@dataclass(frozen=True)
class Reasoning:
    """How a request wants thinking handled: llama-server's `reasoning_format` and budget."""

    format: str = "auto"  # none: thinking stays in content
    budget: int = -1  # tokens; 0 skips thinking, -1 has no limit


def call_grammar(
    fmt: CallFormat,
    request: ToolRequest,
    control: Mapping[str, int],
    lazy: bool = False,
) -> str:
    """The Lark grammar of an answer made of calls in `fmt` (`control`: the special tokens'
    texts and ids). With `lazy`, the grammar starts right after the first start marker, which
    the model has already written. A forced call in a bare-JSON format (Llama 3.x) is written
    as its template writes one: without the start marker."""
    calls = request.callable
    schema: dict[str, Any] = {"anyOf": [call_schema(t, fmt.args_key) for t in calls]}
    if fmt.array:
        schema = {"type": "array", "items": schema, "minItems": 1}
        schema["maxItems"] = request.max_calls
    schema["x-guidance"] = JSON_OPTIONS  # compact JSON: no runaway blanks
    start = _literal(fmt.start, control) if fmt.start and not fmt.bare_json else ""
    end = _literal(fmt.end, control) if fmt.end else ""
    nl = '"\\n"?'  # at most one line break around a call, as the templates write them
    body = f"{nl} call_json {nl} {end}" if end else f"{nl} call_json"
    one = f"{start} {body}".strip()
    first = body if lazy else one
    extra = request.max_calls - 1
    more = "" if fmt.array or not extra or not end else f" ({nl} {one}){{0,{extra}}}"
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


def flatten_calls(messages: Sequence[Mapping[str, Any]], fmt: CallFormat) -> list[dict[str, Any]]:
    """A history for a template that knows no tools: an assistant's calls written out in `fmt`
    (as the model would have written them), tool results as `tool` messages of plain text."""
    out = []
    for m in messages:
        m = dict(m)
        calls = m.pop("tool_calls", None) or []
        written = [
            fmt.start + json.dumps({"name": c["function"]["name"],
                                    fmt.args_key: c["function"]["arguments"]}) + fmt.end
            for c in calls
        ]  # fmt: skip
        if written:
            m["content"] = "".join([m.get("content") or "", *written])
        m.pop("tool_call_id", None)
        out.append(m)
    return out


def with_system_text(messages: Sequence[Mapping[str, Any]], text: str) -> list[dict[str, Any]]:
    """`text` added to the system message, or as one in front."""
    out = [dict(m) for m in messages]
    if out and out[0].get("role") == "system":
        out[0]["content"] = f"{out[0].get('content') or ''}\n\n{text}".strip()
        return out
    return [{"role": "system", "content": text}, *out]
