"""What the JSON kinds share: a call is `{"name", "arguments" | "parameters"}` (or an array of
them), parsed with its numbers kept as written, and constrained by the tool's JSON Schema."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from endmark.calls.base import CallClose, CallStrategy, MalformedCall, ToolCall, new_call_id
from endmark.calls.lark import GRAMMAR_HEAD, NL, closed, literal
from endmark.calls.probe import (
    PROBE_TOOL_NAME,
    probe_tool,
    rendered_calls,
    takes_long_ids,
    up_to_turn_end,
    without_empty_thinking,
)
from endmark.chat import ChatTemplate
from endmark.constraints import JSON_OPTIONS
from endmark.json_close import FILL, Reach, json_closing, json_reach
from endmark.tools import Tool, ToolRequest

# A call object's name, written or cut: `{"name": "get_w`
CALL_NAME = re.compile(r'\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)(")?')


class NumberText(str):
    """A JSON number as the model wrote it: read as a float, `1e999` would come back out as
    `Infinity`, which is not JSON; read as an int, 5000 digits would not read at all."""


def json_text(value: Any) -> str:
    """`value` as JSON, its numbers exactly as they were written."""
    if isinstance(value, NumberText):
        return str(value)
    if isinstance(value, dict):
        items = (f"{json.dumps(k, ensure_ascii=False)}: {json_text(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(json_text(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def loads_exact(text: str) -> Any:
    """JSON, its numbers kept as NumberText (see `json_text`)."""
    return json.loads(text, parse_float=NumberText, parse_int=NumberText)


def call_schema(tool: Tool, args_key: str = "arguments") -> dict[str, Any]:
    """One call of `tool`: its name, and arguments valid against its parameters."""
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, args_key: closed(tool.parameters)},
        "required": ["name", args_key],
        "additionalProperties": False,
    }


@dataclass(frozen=True)
class JsonProbe:
    """How a template writes a probe call as JSON: the text before the JSON (`before`), after
    it up to the end of the turn (`end`), whether the JSON sits in an array, the key of the
    arguments, and whether the template takes OpenAI's long call ids."""

    before: str
    end: str
    array: bool
    args_key: str
    short_ids: bool


PROBE_ARGS = {"endmark_probe_arg": 1}
PROBE_TOOL = probe_tool({"endmark_probe_arg": {"type": "integer"}})


def probe_json(template: ChatTemplate, end_texts: Collection[str]) -> JsonProbe | None:
    """The JSON kinds' one analysis: the text before the call's JSON is its start marker, what
    follows it up to the end of the turn its end marker. None: no JSON call is written."""
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
    args_key = next((k for k in data if k != "name"), "arguments")
    before, after = without_empty_thinking(body[:at].strip()), body[at + length :]
    array = before.endswith("[")
    if array:
        before, after = before[:-1].strip(), after.lstrip().removeprefix("]")
    end = up_to_turn_end(after, end_texts).strip()
    short_ids = not takes_long_ids(template, PROBE_TOOL, PROBE_ARGS)
    return JsonProbe(before, end, array, args_key, short_ids)


@dataclass(frozen=True)
class JsonCalls(CallStrategy):
    """A call is one JSON object between `start` and `end` (or an array of them: `array`)."""

    name: str
    start: str
    end: str = ""
    args_key: str = "arguments"  # Llama 3.x writes "parameters"
    short_ids: bool = False  # call ids of 9 letters and digits, which Mistral's templates demand

    array: ClassVar[bool] = False

    @property
    def bare(self) -> bool:
        """Whether a call is written without its start marker (Llama 3.x's forced call)."""
        return not self.start

    def inside_value(self, body: str) -> bool:
        return bool(json_closing(body.strip()))

    def parse(self, body: str, tools: Sequence[Tool] = ()) -> list[ToolCall]:
        """The calls in one call body: `{"name", "arguments" | "parameters"}`, or a list."""
        try:
            data = loads_exact(body)
        except json.JSONDecodeError as exc:
            raise MalformedCall(f"a {self.name} tool call is not JSON: {exc.msg}") from None
        items = data if isinstance(data, list) else [data]
        calls = []
        for item in items:
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str) or isinstance(name, NumberText):
                raise MalformedCall(f"a {self.name} tool call has no name")
            args = item.get("arguments", item.get("parameters", {}))
            plain_text = isinstance(args, str) and not isinstance(args, NumberText)
            text = args if plain_text else json_text(args)
            calls.append(ToolCall(name, text, new_call_id(self.short_ids)))
        return calls

    def closing(self, body: str, tools: Sequence[Tool]) -> CallClose | None:
        """The JSON closed as its tool's schema guides it (`json_close`): a cut name finished
        as the tool it begins, a missing name or arguments object written (`{}`), the
        arguments' own cut string, value or object finished; then the end marker."""
        if not tools:
            return None
        tool, guessed = self._named_tool(body, tools)
        text = json_closing(body, self._call_schema(tool))
        if text is None:
            return None
        boundary = bool(body.strip()) and not text.strip("]} \t\r\n")
        return CallClose(text, self.end, guessed, boundary)

    def reach(self, body: str, tools: Sequence[Tool]) -> Reach | None:
        if not tools:
            return None
        return json_reach(body, self._call_schema(self._named_tool(body, tools)[0]))

    def _call_schema(self, tool: Tool) -> dict[str, Any]:
        """The schema of the call's JSON (one call object, or the array of them) with the
        values the closing fills in where the model wrote none (`json_close.FILL`)."""
        params = tool.parameters if isinstance(tool.parameters, dict) else {}
        call: dict[str, Any] = {
            "type": "object",
            "properties": {"name": {"const": tool.name, FILL: tool.name},
                           self.args_key: {**params, FILL: {}}},
            "required": ["name", self.args_key],
            FILL: {"name": tool.name, self.args_key: {}},
        }  # fmt: skip
        return {"type": "array", "items": call, FILL: [call[FILL]]} if self.array else call

    def _named_tool(self, body: str, tools: Sequence[Tool]) -> tuple[Tool, bool]:
        """The tool the open call names, and whether endmark had to guess it (no name yet,
        or a cut one that more than one tool's name begins with)."""
        depth = int(self.array)  # where a call object sits: at the top, or in the array
        found = [m for m in CALL_NAME.finditer(body) if _depth_at(body, m.start()) == depth]
        if self.array and _depth_at(body, len(body)) == depth:
            found = []  # between an array's calls: the next one names none yet
        if not found:
            return tools[0], len(tools) > 1
        name, closed_name = found[-1].group(1), found[-1].group(2)
        if closed_name:
            return next((t for t in tools if t.name == name), Tool(name)), False
        fits = [t for t in tools if t.name.startswith(name)]
        return (fits or list(tools))[0], len(fits) != 1

    def grammar(self, request: ToolRequest, control: Mapping[str, int], lazy: bool = False) -> str:
        """A forced call in a bare format (Llama 3.x) is written as its template writes one:
        without the start marker."""
        one_of = [call_schema(t, self.args_key) for t in request.callable]
        schema: dict[str, Any] = {"anyOf": one_of}
        if self.array:
            schema = {"type": "array", "items": schema, "minItems": 1}
            schema["maxItems"] = request.max_calls
        schema["x-guidance"] = JSON_OPTIONS  # compact JSON: no runaway blanks
        start = literal(self.start, control) if self.start and not self.bare else ""
        end = literal(self.end, control) if self.end else ""
        body = f"{NL} call_json {NL} {end}" if end else f"{NL} call_json"
        one = f"{start} {body}".strip()
        first = body if lazy else one
        extra = request.max_calls - 1
        more = "" if self.array or not extra or not end else f" ({NL} {one}){{0,{extra}}}"
        return f"{GRAMMAR_HEAD}start: {first}{more}\ncall_json: %json {json.dumps(schema)}\n"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "array": self.array, "arguments_key": self.args_key}


def _depth_at(text: str, at: int) -> int:
    """How many arrays and objects are open at `at` (strings skipped)."""
    depth, i, in_string = 0, 0, False
    while i < at:
        c = text[i]
        if in_string:
            if c == "\\":
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
        i += 1
    return depth
