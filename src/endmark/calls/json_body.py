"""What the JSON kinds share: a call is `{"name", "arguments" | "parameters"}` (or an array of
them), parsed with its numbers kept as written, and constrained by the tool's JSON Schema."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from endmark.calls.base import CallClose, CallStrategy, MalformedCall, ToolCall, new_call_id
from endmark.calls.lark import GRAMMAR_HEAD, NL, closed, literal
from endmark.constraints import JSON_OPTIONS
from endmark.json_close import FILL, Reach, json_closing, json_reach
from endmark.tools import Tool, ToolRequest

# A call object's name, written or cut: `{"name": "get_w`
CALL_NAME = re.compile(r'\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)(")?')
KEY_NAME = re.compile(r'"\s*:\s*"((?:[^"\\]|\\.)*)(")?')  # after a name key of another word
NAME_AS_KEY = re.compile(r'\{\s*"((?:[^"\\]|\\.)*)(")?')  # `{"get_w`: the name is the key


# JSON over lines, as a template writes it with `tojson(indent=...)`: blanks between tokens,
# a line break and an indent at most
PRETTY_JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": True,
                                       "whitespace_pattern": "[ ]{0,1}|\\n[ ]{0,32}"}  # fmt: skip


class NumberText(str):
    """A JSON number as the model wrote it: read as a float, `1e999` would come back out as
    `Infinity`, which is not JSON; read as an int, 5000 digits would not read at all."""


_DECODER = json.JSONDecoder(parse_float=NumberText, parse_int=NumberText)


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


def call_schema(
    tool: Tool, args_key: str = "arguments", name_key: str = "name", order: Sequence[str] = ()
) -> dict[str, Any]:
    """One call of `tool`: its name, and arguments valid against its parameters, keyed as
    the template keys them (`name_key` "": the name is the key of the arguments), in its
    `order`; any other key of `order` is the call's id, a string that may be left out."""
    if not name_key:
        properties = {tool.name: closed(tool.parameters)}
        return {"type": "object", "properties": properties, "required": [tool.name],
                "additionalProperties": False}  # fmt: skip
    fields = {name_key: {"const": tool.name}, args_key: closed(tool.parameters)}
    keys = [*order] if set(fields) <= set(order) else [name_key, args_key]
    properties = {k: fields.get(k, {"type": "string", "maxLength": 40}) for k in keys}
    return {
        "type": "object",
        "properties": properties,
        "required": [name_key, args_key],
        "additionalProperties": False,
    }


@dataclass(frozen=True)
class JsonCalls(CallStrategy):
    """A call is one JSON object between `start` and `end` (or an array of them: `array`)."""

    name: str
    start: str
    end: str = ""
    args_key: str = "arguments"  # Llama 3.x writes "parameters"
    short_ids: bool = False  # call ids of 9 letters and digits, which Mistral's templates demand
    name_key: str = "name"  # "": the name is the key, its value the arguments (Apertus)
    keys: tuple[str, ...] = ()  # the keys in the template's order (the id's too); () as above
    pretty: bool = False  # written over lines, as the template writes it (Command R+)
    lines: bool = False  # the turn's calls one after another in one `start ... end` (MiniMax-M1)

    array: ClassVar[bool] = False

    @property
    def bare(self) -> bool:
        """Whether a call is written without its start marker (Llama 3.x's forced call)."""
        return not self.start

    def inside_value(self, body: str) -> bool:
        whole, rest = self._open_part(body)
        return not (whole and not rest.strip()) and bool(json_closing(rest.strip()))

    def _open_part(self, body: str) -> tuple[list[Any], str]:
        """With `lines`, the whole calls a body begins with and the text after them (the
        call being written); else none, and the body."""
        if not self.lines:
            return [], body
        values: list[Any] = []
        at = 0
        while True:
            rest = body[at:]
            stripped = rest.lstrip()
            if not stripped:
                return values, ""
            try:
                value, length = _DECODER.raw_decode(stripped)
            except json.JSONDecodeError:
                return values, rest
            values.append(value)
            at = len(body) - len(stripped) + length

    def parse(self, body: str, tools: Sequence[Tool] = ()) -> list[ToolCall]:
        """The calls in one call body: `{"name", "arguments" | "parameters"}`, or a list."""
        if self.lines:
            items, rest = self._open_part(body)
            if rest.strip() or not items:
                raise MalformedCall(f"a {self.name} tool call is not JSON: {rest.strip()[:40]!r}")
            return [self._call(item) for item in items]
        try:
            data = loads_exact(body)
        except json.JSONDecodeError as exc:
            raise MalformedCall(f"a {self.name} tool call is not JSON: {exc.msg}") from None
        return [self._call(item) for item in (data if isinstance(data, list) else [data])]

    def _call(self, item: Any) -> ToolCall:
        name, args = self._name_and_args(item)
        if not isinstance(name, str) or isinstance(name, NumberText):
            raise MalformedCall(f"a {self.name} tool call has no name")
        plain_text = isinstance(args, str) and not isinstance(args, NumberText)
        return ToolCall(name, args if plain_text else json_text(args), self._call_id(item))

    def _name_and_args(self, item: Any) -> tuple[Any, Any]:
        if not isinstance(item, dict):
            return None, None
        if not self.name_key:  # the name is the key: `{"get_weather": {...}}`
            return next(iter(item.items())) if len(item) == 1 else (None, None)
        args = item.get(self.args_key, item.get("arguments", item.get("parameters", {})))
        return item.get(self.name_key), args

    def _call_id(self, item: Any) -> str:
        """The id the model wrote, where the template has one that fits; else a new one."""
        ids = [item.get(k) for k in self.keys if k not in (self.name_key, self.args_key)]
        written = ids[0] if ids and isinstance(ids[0], str) else ""
        fits = len(written) == 9 and written.isalnum() if self.short_ids else len(written) > 8
        return written if fits else new_call_id(self.short_ids)

    def closing(self, body: str, tools: Sequence[Tool]) -> CallClose | None:
        """The JSON closed as its tool's schema guides it (`json_close`): a cut name finished
        as the tool it begins, a missing name or arguments object written (`{}`), the
        arguments' own cut string, value or object finished; then the end marker."""
        if not tools:
            return None
        whole, body = self._open_part(body)
        if whole and not body.strip():
            return CallClose("", self.end, boundary=True)
        tool, guessed = self._named_tool(body, tools)
        text = json_closing(body, self._call_schema(tool))
        if text is None:
            return None
        boundary = bool(body.strip()) and not text.strip("]} \t\r\n")
        return CallClose(text, self.end, guessed, boundary)

    def reach(self, body: str, tools: Sequence[Tool]) -> Reach | None:
        """Only within the arguments: a call cut before its arguments object is closed as it
        stands (`{}`), where naming them would leave the model no room to write them."""
        if not tools:
            return None
        body = self._open_part(body)[1]
        tool = self._named_tool(body, tools)[0]
        reach = json_reach(body, self._call_schema(tool))
        heads = (self.name_key, self.args_key) if self.name_key else (tool.name,)
        return None if reach is None or reach.key in heads else reach

    def _call_schema(self, tool: Tool) -> dict[str, Any]:
        """The schema of the call's JSON (one call object, or the array of them) with the
        values the closing fills in where the model wrote none (`json_close.FILL`)."""
        params = tool.parameters if isinstance(tool.parameters, dict) else {}
        properties: dict[str, Any] = {tool.name: {**params, FILL: {}}}  # the name as the key
        if self.name_key:
            properties = {self.name_key: {"const": tool.name, FILL: tool.name},
                          self.args_key: {**params, FILL: {}}}  # fmt: skip
        fill = {k: v[FILL] for k, v in properties.items()}
        call = {"type": "object", "properties": properties, "required": list(fill), FILL: fill}
        return {"type": "array", "items": call, FILL: [call[FILL]]} if self.array else call

    def _named_tool(self, body: str, tools: Sequence[Tool]) -> tuple[Tool, bool]:
        """The tool the open call names, and whether endmark had to guess it (no name yet,
        or a cut one that more than one tool's name begins with)."""
        depth = int(self.array)  # where a call object sits: at the top, or in the array
        pattern = NAME_AS_KEY if not self.name_key else CALL_NAME
        if self.name_key not in ("", "name"):  # a key among others: inside the call object
            pattern = re.compile(r'"' + re.escape(self.name_key) + KEY_NAME.pattern)
            depth += 1
        found = [m for m in pattern.finditer(body) if _depth_at(body, m.start()) == depth]
        if self.array and _depth_at(body, len(body)) == int(self.array):
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
        one_of = [call_schema(t, self.args_key, self.name_key, self.keys) for t in request.callable]
        options = PRETTY_JSON_OPTIONS if self.pretty else JSON_OPTIONS  # no runaway blanks
        schema: dict[str, Any] = {"anyOf": one_of, "x-guidance": options}
        start = literal(self.start, control) if self.start and not self.bare else ""
        end = literal(self.end, control) if self.end else ""
        extra = request.max_calls - 1
        # an array's brackets and commas as templates write them: `[{...}]`, or one call a line
        more_items = f' ("," pad call_json){{0,{extra}}}' if extra else ""  # {0,0}: refused
        items = f'"[" pad call_json{more_items} pad "]"'
        lines = f' ("\\n" call_json){{0,{extra}}}' if self.lines and extra else ""
        json_part = items if self.array else f"call_json{lines}"
        body = f"{NL} {json_part} {NL} {end}" if end else f"{NL} {json_part}"
        one = f"{start} {body}".strip()
        first = body if lazy else one
        repeat = not (self.array or self.lines) and extra and end
        more = f" ({NL} {one}){{0,{extra}}}" if repeat else ""
        rules = f"call_json: %json {json.dumps(schema)}\n"
        rules += "pad: /[ \\n]{0,8}/\n" if self.array else ""
        return f"{GRAMMAR_HEAD}start: {first}{more}\n{rules}"

    def describe(self) -> dict[str, Any]:
        keys = {"name_key": self.name_key, "keys": list(self.keys), "pretty": self.pretty,
                "lines": self.lines}  # fmt: skip
        return {**super().describe(), "array": self.array, "arguments_key": self.args_key, **keys}


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
