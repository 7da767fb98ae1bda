"""Kimi K3's calls: XTML tags, each `<|open|>TAG attr="..."<|sep|>` ... `<|close|>TAG<|sep|>`,
and attributes that change from call to call (its index) and argument to argument (its type):

    <|open|>tools<|sep|><|open|>call tool="get_weather" index="1"<|sep|>
    <|open|>argument key="city" type="string"<|sep|>Paris<|close|>argument<|sep|>
    <|open|>argument key="days" type="number"<|sep|>3<|close|>argument<|sep|>
    <|close|>call<|sep|><|close|>tools<|sep|>

A text value is written as it is, any other as JSON (`type` says which). The tag syntax is the
template's own macros'; a template is read as this kind when its render of a probe call is
exactly what `written` writes. The parser, the closing of a cut call and the grammar read the
one scan of a body (`_scan`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from endmark.calls.base import CallClose, CallStrategy, MalformedCall, Messages, ToolCall
from endmark.calls.json_body import json_text
from endmark.calls.lark import GRAMMAR_HEAD
from endmark.calls.lark_marks import marked
from endmark.calls.probe import PROBE_TOOL_NAME
from endmark.calls.tagged_args import object_arguments, takes_text, value_rules
from endmark.calls.tagged_close import unwritten
from endmark.calls.tagged_learn import PROBE_ARGS, PROBE_TOOL, TYPED_ARGS, TYPED_TOOL
from endmark.calls.turn_diff import call_section
from endmark.chat import ChatTemplate
from endmark.json_close import json_closing
from endmark.tools import Tool, ToolRequest

OPEN, SEP, CLOSE = "<|open|>", "<|sep|>", "<|close|>"
_CALL_HEAD = re.compile(r'<\|open\|>call tool="([^"]*)" index="(\d+)"<\|sep\|>')
_ARG_HEAD = re.compile(r'<\|open\|>argument key="([^"]*)" type="([a-z]+)"<\|sep\|>')


def open_tag(tag: str, **attrs: object) -> str:
    written = "".join(f' {k}="{_escape(str(v))}"' for k, v in attrs.items())
    return f"{OPEN}{tag}{written}{SEP}"


def close_tag(tag: str) -> str:
    return f"{CLOSE}{tag}{SEP}"


CALL_CLOSE = close_tag("call")
VALUE_CLOSE = close_tag("argument")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;")


def _unescape(text: str) -> str:
    return text.replace("&quot;", '"').replace("&amp;", "&")


def xtml_type(value: Any) -> str:
    """The `type` the template writes for a value (its `xtml_type` macro)."""
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object" if isinstance(value, Mapping) else "array"


def schema_type(schema: Any) -> str | None:
    """The `type` a value of `schema` is written with; None where the schema leaves it open."""
    kind = schema.get("type") if isinstance(schema, Mapping) else None
    names = {"integer": "number", "number": "number", "string": "string", "boolean": "boolean",
             "object": "object", "array": "array", "null": "null"}  # fmt: skip
    return names.get(kind) if isinstance(kind, str) else None


@dataclass
class Scan:
    """A body read as far as it goes: its whole calls, then where the rest stands: `between`
    (calls), `head` (in a call's open tag), `args` (after a call's head or an argument),
    `arg_head` (in an argument's open tag), `value` (in a value of `key`, written as `type`);
    `rest` is the text of that part."""

    calls: list[tuple[str, dict[str, Any]]]
    state: str
    rest: str = ""
    name: str = ""
    index: int = 1
    args: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    type: str = ""


def _typed(raw: str, kind: str) -> Any:
    if kind == "string":
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _scan(body: str) -> Scan:
    calls: list[tuple[str, dict[str, Any]]] = []
    at = 0
    while True:
        rest = body[at:].lstrip()
        at = len(body) - len(rest)
        if not rest:
            return Scan(calls, "between")
        head = _CALL_HEAD.match(body, at)
        if head is None:
            if SEP not in rest:
                opens = rest.startswith(OPEN) or OPEN.startswith(rest)
                return Scan(calls, "head" if opens else "between", rest, index=len(calls) + 1)
            raise MalformedCall("a Kimi K3 tool call does not open as its template's")
        name, index, at = _unescape(head.group(1)), int(head.group(2)), head.end()
        args: dict[str, Any] = {}
        while True:
            rest = body[at:].lstrip()
            at = len(body) - len(rest)
            if rest.startswith(CALL_CLOSE):
                at += len(CALL_CLOSE)
                break
            arg = _ARG_HEAD.match(body, at)
            if arg is None:
                if SEP not in rest and not CALL_CLOSE.startswith(rest):
                    return Scan(calls, "arg_head", rest, name, index, args)
                if CALL_CLOSE.startswith(rest):
                    return Scan(calls, "args", rest, name, index, args)
                raise MalformedCall("a Kimi K3 tool call has text between its arguments")
            key, kind = _unescape(arg.group(1)), arg.group(2)
            end = body.find(VALUE_CLOSE, arg.end())
            if end < 0:
                return Scan(calls, "value", body[arg.end() :], name, index, args, key, kind)
            args[key] = _typed(body[arg.end() : end], kind)
            at = end + len(VALUE_CLOSE)
        calls.append((name, args))


@dataclass(frozen=True)
class XtmlCalls(CallStrategy):
    name: str = "kimi_k3"
    start: str = open_tag("tools")
    end: str = close_tag("tools")

    kind: ClassVar[str] = "xtml"
    body_tokens: ClassVar[Collection[str]] = (OPEN, SEP, CLOSE)

    @classmethod
    def learn(cls, template: ChatTemplate, end_texts: Collection[str]) -> XtmlCalls | None:
        """This kind where the template writes a probe call, and a typed one, exactly as
        `written` does."""
        learned = cls()
        for tool, args in ((PROBE_TOOL, PROBE_ARGS), (TYPED_TOOL, TYPED_ARGS)):
            section = call_section(template, tool, [args]) or ""  # (its end may be cut off)
            calls = learned.written([(PROBE_TOOL_NAME, args)])[: -len(learned.end)]
            if calls not in section:
                return None
        return learned

    def written(self, calls: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
        """A turn's calls as this format writes them (and as its template does)."""
        out = []
        for i, (name, arguments) in enumerate(calls, 1):
            args = "".join(
                f"{open_tag('argument', key=k, type=xtml_type(v))}"
                f"{v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}{VALUE_CLOSE}"
                for k, v in arguments.items()
            )
            out.append(f"{open_tag('call', tool=name, index=i)}{args}{CALL_CLOSE}")
        return f"{self.start}{''.join(out)}{self.end}"

    def argument_markup(self, key: str) -> str:
        return open_tag("argument", key=key, type="string") + VALUE_CLOSE

    # -- splitting --------------------------------------------------------------------------

    def inside_value(self, body: str) -> bool:
        try:
            return _scan(body).state == "value"
        except MalformedCall:
            return False

    def parse(self, body: str, tools: Sequence[Tool] = ()) -> list[ToolCall]:
        scan = _scan(body)
        if scan.state != "between" or scan.rest.strip():
            raise MalformedCall("a Kimi K3 tool call was cut short")
        return [ToolCall(name, json_text(args)) for name, args in scan.calls]

    def closing(self, body: str, tools: Sequence[Tool]) -> CallClose | None:
        """The open tag, key or value the cut left open, finished (a key as the property it
        begins, a required one where none was begun; a value as text, or its JSON closed,
        `null` where none was written), then the call's close."""
        if not tools:
            return None
        try:
            scan = _scan(body)
        except MalformedCall:
            return None
        if scan.state == "between" and not scan.calls:  # a block with no call yet: one
            return self._head_rest(scan.rest, 1, tools) if not scan.rest else None
        if scan.state == "between":
            if not scan.rest:
                return CallClose("", self.end, boundary=True)
            return None  # (where the end marker may begin, the splitter holds it back)
        if scan.state == "head":
            return self._head_rest(scan.rest, scan.index, tools)
        tool = next((t for t in tools if t.name == scan.name), Tool(scan.name))
        params = tool.parameters if isinstance(tool.parameters, Mapping) else {}
        props = params.get("properties")
        props = props if isinstance(props, Mapping) else {}
        if scan.state == "args":
            missing = CALL_CLOSE[len(scan.rest) :]
            return CallClose(missing, self.end, boundary=not scan.rest)
        if scan.state == "arg_head":
            return self._arg_rest(scan, params, props)
        raw = scan.rest
        cut = max((k for k in range(1, len(VALUE_CLOSE)) if raw.endswith(VALUE_CLOSE[:k])),
                  default=0)  # fmt: skip
        if cut:
            return CallClose(VALUE_CLOSE[cut:] + CALL_CLOSE, self.end)
        if scan.type == "string":
            return CallClose(VALUE_CLOSE + CALL_CLOSE, self.end)
        rest = json_closing(raw, props.get(scan.key)) if raw.strip() else "null"
        if rest is None:
            return None
        return CallClose(rest + VALUE_CLOSE + CALL_CLOSE, self.end)

    def _head_rest(self, rest: str, index: int, tools: Sequence[Tool]) -> CallClose | None:
        """A call's open tag cut: the tool it begins to name (the first, where none yet)."""
        typed = re.match(r'<\|open\|>call tool="([^"]*)', rest)
        begun = _unescape(typed.group(1)) if typed else ""
        fits = [t for t in tools if t.name.startswith(begun)]
        for tool in fits or tools[:1]:
            head = open_tag("call", tool=tool.name, index=index)
            if head.startswith(rest):
                return CallClose(head[len(rest) :] + CALL_CLOSE, self.end, guessed=len(fits) != 1)
        return None

    def _arg_rest(
        self, scan: Scan, params: Mapping[str, Any], props: Mapping[str, Any]
    ) -> CallClose | None:
        typed = re.match(r'<\|open\|>argument key="([^"]*)', scan.rest)
        begun = _unescape(typed.group(1)) if typed else ""
        left = [k for k in props if k not in scan.args]
        fits = [k for k in left if k.startswith(begun)] if typed else []
        key = fits[0] if fits else unwritten(params, list(scan.args)) or begun
        schema = props.get(key)
        text = takes_text(schema)
        kind = "string" if text else schema_type(schema) or "null"
        head = open_tag("argument", key=key, type=kind)
        if not head.startswith(scan.rest):
            return None
        value = "" if text else "null"
        return CallClose(head[len(scan.rest) :] + value + VALUE_CLOSE + CALL_CLOSE, self.end)

    # -- constraining -----------------------------------------------------------------------

    def grammar(self, request: ToolRequest, control: Mapping[str, int], lazy: bool = False) -> str:
        """Each tool's required arguments in its schema's order, optional ones where they fall;
        a call's index as any number, a value's type as its schema's (any, where it says
        none); the calls of a turn in one `tools` block."""
        rules: list[str] = []
        alternatives = []
        for i, tool in enumerate(request.callable):
            alternatives.append(f"fn_{i}")
            rules += self._function_rules(i, tool, control)
        extra = request.max_calls - 1
        more = f" fn{{0,{extra}}}" if extra else ""
        # under a forced call, the (empty) answer block the model writes before its calls
        answer = marked(open_tag("response") + close_tag("response"), control)
        first = "fn" if lazy else f"({answer})? {marked(self.start, control)} fn"
        start = f"{first}{more} {marked(self.end, control)}"
        index = "xtml_index: /[1-9][0-9]{0,3}/\nxtml_type: /[a-z]+/\n"
        head = f"{GRAMMAR_HEAD}start: {start}\nfn: {' | '.join(alternatives)}\n{index}"
        return head + "\n".join(rules) + "\n"

    def _function_rules(self, i: int, tool: Tool, control: Mapping[str, int]) -> list[str]:
        params = tool.parameters if isinstance(tool.parameters, Mapping) else {}
        properties = params.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = set(params.get("required") or [])
        opener = marked(f'{OPEN}call tool="{_escape(tool.name)}" index="', control)
        parts = [f"{opener} xtml_index {marked(chr(34) + SEP, control)}"]
        rules = []
        for j, (key, schema) in enumerate(properties.items()):
            rule = f"arg_{i}_{j}"
            parts.append(rule if key in required else f"{rule}?")
            kind = "string" if takes_text(schema) else schema_type(schema)
            head = marked(f'{OPEN}argument key="{_escape(key)}" type="', control)
            kind_rule = json.dumps(kind) if kind else "xtml_type"
            typed = f"{head} {kind_rule} {marked(chr(34) + SEP, control)}"
            rules += value_rules(rule, typed, VALUE_CLOSE, schema, control)
        parts.append(marked(CALL_CLOSE, control))
        return [f"fn_{i}: {' '.join(parts)}", *rules]

    # -- the prompt -------------------------------------------------------------------------

    def history(self, messages: Messages) -> list[dict[str, Any]]:
        return object_arguments(messages)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "array": False, "arguments_key": ""}


KIMI_K3 = XtmlCalls()
