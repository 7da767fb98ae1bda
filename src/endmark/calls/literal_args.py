"""Arguments as literals, not JSON: the name outside, then `key SEP value` pairs in the
template's own literal syntax.

    gemma-4   <|tool_call>call:get_weather{city:<|"|>Paris<|"|>,days:3}<tool_call|>
    LFM2.5    <|tool_call_start|>[get_weather(city='Paris', days=3), get_time()]<|tool_call_end|>

One shape covers them: `start call (between call)* end`, a call being `call_open NAME
args_open (KEY key_sep VALUE (pair_sep KEY key_sep VALUE)*)? args_close`. The pieces, the
string quote, the words for true, false and null, and whether keys are sorted are learned by
diffing the renders of one probe call with a value of each type (`literal_learn.py`). Values
inside a container (an object, a list) are read leniently: the learned quote, JSON's and
Python's strings, bare or quoted keys. The parser, the closing of a cut call and the grammar
read the one scan of a body (`_scan`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from endmark.calls.base import CallClose, CallStrategy, MalformedCall, ToolCall, new_call_id
from endmark.calls.json_body import json_text
from endmark.calls.lark import GRAMMAR_HEAD, MAX_STRING, regex_text
from endmark.calls.lark_marks import marked
from endmark.calls.literal_values import (
    Cut,
    Syntax,
    closers,
    in_string,
    read_key,
    read_value,
    skip,
)
from endmark.chat import ChatTemplate
from endmark.tools import Tool, ToolRequest

_NAME = re.compile(r"\s*([A-Za-z_][\w.\-]*)")
_MAX_PROPERTIES = 24  # a grammar's pairs grow with the square of a tool's optional ones


@dataclass
class Scan:
    """A body read as far as it goes: its whole calls (name, arguments), then where the rest
    stands: `done`, `name` (in a call's markup up to its arguments), `key` (before or in a
    key), `value` (after a key's separator: `key` is known), `after` (after a value: a pair
    separator or the close may come), `between` (in the markup between calls); `rest` is
    the text of that part."""

    calls: list[tuple[str, dict[str, Any]]]
    state: str
    rest: str = ""
    name: str = ""
    args: dict[str, Any] | None = None
    key: str = ""


@dataclass(frozen=True)
class LiteralArgs(CallStrategy):
    name: str
    start: str
    end: str
    call_open: str
    syntax: Syntax
    between: str = ""  # "": each call has its own `start ... end`

    kind: ClassVar[str] = "literal_args"

    @classmethod
    def learn(cls, template: ChatTemplate, end_texts: Collection[str]) -> LiteralArgs | None:
        from endmark.calls.literal_learn import learn_literal_args

        return learn_literal_args(template, end_texts)

    # -- reading ----------------------------------------------------------------------------

    def _scan(self, body: str) -> Scan:
        calls: list[tuple[str, dict[str, Any]]] = []
        syntax, at = self.syntax, 0
        while True:
            head = f"{self.call_open}"
            rest = body[at:].lstrip()
            at = len(body) - len(rest)
            if not rest.startswith(head + " ") and not rest.startswith(head):
                if head.startswith(rest):
                    return Scan(calls, "name", rest)
                raise MalformedCall(f"a {self.name} tool call does not open as its template's")
            at += len(head)
            found = _NAME.match(body, at)
            if found is None or found.end() == len(body):
                return Scan(calls, "name", body[at - len(head) :])
            name, at = found.group(1), found.end()
            if not body.startswith(syntax.args_open, at):
                if syntax.args_open.startswith(body[at:]):
                    return Scan(calls, "name", body[at - len(head) - len(name) :])
                raise MalformedCall(f"a {self.name} tool call has text after its name")
            at += len(syntax.args_open)
            args: dict[str, Any] = {}
            while True:
                at = skip(body, at, " \n\t")
                if body.startswith(syntax.args_close, at):
                    at += len(syntax.args_close)
                    break
                if at >= len(body):
                    return Scan(calls, "key", "", name, args)
                try:
                    key, key_end = read_key(self.syntax, body, at)
                except Cut:
                    return Scan(calls, "key", body[at:], name, args)
                sep = skip(body, key_end, " ")
                if not body.startswith(syntax.key_sep.strip(), sep):
                    if syntax.key_sep.strip().startswith(body[sep:]):
                        return Scan(calls, "key", body[at:], name, args)
                    raise MalformedCall(f"a {self.name} tool call has a key without a value")
                value_at = sep + len(syntax.key_sep.strip())
                try:
                    args[key], at = read_value(self.syntax, body, value_at)
                except Cut:
                    return Scan(calls, "value", body[value_at:], name, args, key)
                at = skip(body, at, " \n\t")
                pair_sep = syntax.pair_sep.strip()
                if pair_sep and body.startswith(pair_sep, at):
                    at += len(pair_sep)
                elif not body.startswith(syntax.args_close, at):
                    if syntax.args_close.startswith(body[at:]):
                        return Scan(calls, "after", body[at:], name, args)
                    raise MalformedCall(f"a {self.name} tool call has text after a value")
            calls.append((name, args))
            rest = body[at:]
            if not rest.strip():
                return Scan(calls, "done")
            between = self.between.strip()
            if between and rest.lstrip().startswith(between):
                at = len(body) - len(rest.lstrip()) + len(between)
                continue
            if between and between.startswith(rest.lstrip()):
                return Scan(calls, "between", rest.lstrip())
            raise MalformedCall(f"a {self.name} tool call has text after its arguments")

    def parse(self, body: str, tools: Sequence[Tool] = ()) -> list[ToolCall]:
        try:
            scan = self._scan(body)
        except Cut:
            scan = Scan([], "cut")
        if scan.state != "done" or not scan.calls:
            raise MalformedCall(f"a {self.name} tool call is not whole")
        return [ToolCall(name, json_text(args), new_call_id()) for name, args in scan.calls]

    def inside_value(self, body: str) -> bool:
        try:
            scan = self._scan(body)
        except (MalformedCall, Cut):
            return False
        return scan.state == "value" and in_string(scan.rest, self.syntax.quote)

    def closing(self, body: str, tools: Sequence[Tool]) -> CallClose | None:
        """The open call finished: a cut name as the tool it begins, a cut string closed, a
        cut key dropped back to the pairs before it (a key is finished only when it is one of
        the tool's), a value left out written as its type's empty one; then the close."""
        if not tools:
            return None
        try:
            scan = self._scan(body)
        except MalformedCall:
            return None
        close = self.syntax.args_close
        if scan.state == "done":
            return CallClose("", self.end, boundary=bool(scan.calls))
        if scan.state in ("name", "between"):
            markup = self.between.strip()[len(scan.rest) :] if scan.state == "between" else ""
            written = scan.rest if scan.state == "name" else ""
            head = f"{self.call_open}"
            for tool in tools:
                whole = f"{head}{tool.name}{self.syntax.args_open}"
                if whole.startswith(written.lstrip()):
                    text = markup + whole[len(written.lstrip()) :] + close
                    return CallClose(text, self.end, guessed=len(tools) > 1)
            return None
        tool = next((t for t in tools if t.name == scan.name), Tool(scan.name))
        properties = _properties(tool)
        if scan.state == "after":
            return CallClose(close[len(scan.rest) :], self.end, boundary=True)
        if scan.state == "key":
            key = scan.rest.strip().strip("\"'")
            fits = [k for k in properties if k.startswith(key) and k not in (scan.args or {})]
            if not scan.rest.strip():
                return CallClose(close, self.end)
            if not fits:
                return None
            rest = fits[0][len(key) :] + self.syntax.key_sep
            return CallClose(rest + self._empty(properties[fits[0]]) + close, self.end)
        if scan.state == "value":
            finish = self._value_rest(scan.rest, properties.get(scan.key, {}))
            return None if finish is None else CallClose(finish + close, self.end)
        return None

    def _value_rest(self, rest: str, schema: Any) -> str | None:
        """What finishes a cut top-level value: its string closed, a word finished, a number
        made whole, containers closed; nothing written yet: the type's empty value."""
        text = rest.lstrip()
        if not text:
            return self._empty(schema)
        quotes = (self.syntax.quote, '"', "'")
        cut_quote = next((q for q in quotes if q.startswith(text) and len(text) < len(q)), "")
        if cut_quote:
            return cut_quote[len(text) :] + cut_quote
        quote = next((q for q in quotes if text.startswith(q)), "")
        if quote:  # the string's own text, perhaps ending in a start of its close
            inner = text[len(quote) :]
            shared = next((k for k in range(len(quote) - 1, 0, -1) if inner.endswith(quote[:k])), 0)
            return quote[shared:]
        for word in self.syntax.words:
            if word.startswith(text):
                return word[len(text) :]
        if text[0] in "{[":
            return closers(text)
        if re.fullmatch(r"-?\d*\.?\d*([eE][-+]?)?", text):
            return "0" if text[-1] in "-.eE+" else ""
        return None

    def _empty(self, schema: Any) -> str:
        kind = schema.get("type") if isinstance(schema, Mapping) else None
        values = schema.get("enum") if isinstance(schema, Mapping) else None
        if isinstance(values, list) and values:
            return self.syntax.written(values[0])
        _, false, null = self.syntax.words
        empty = {"integer": "0", "number": "0", "boolean": false, "object": "{}", "array": "[]",
                 "null": null}  # fmt: skip
        return empty.get(kind, f"{self.syntax.quote}{self.syntax.quote}")

    # -- constraining -----------------------------------------------------------------------

    def grammar(self, request: ToolRequest, control: Mapping[str, int], lazy: bool = False) -> str:
        """Each tool's name, then its arguments: its properties in the template's order
        (sorted, or as the schema lists them), each required one written, each value of its
        type; at most `max_calls` calls."""
        s = self.syntax
        words = [marked(w, control) for w in s.words]
        key_re = "/[A-Za-z_][A-Za-z0-9_\\-]{0,63}/"
        rules = [
            f"qstr[lazy]: /(?s:.{{0,{MAX_STRING}}}){regex_text(s.quote)}/",
            "num: /-?[0-9]{1,16}(\\.[0-9]{1,16})?([eE][-+]?[0-9]{1,3})?/",
            "int: /-?[0-9]{1,16}/",
            f"lit: {marked(s.quote, control)} qstr | num | {' | '.join(words)}"
            ' | "{" (lit_key /[:=] ?/ lit ("," " "? lit_key /[:=] ?/ lit)*)? "}"'
            ' | "[" (lit (", " lit | "," lit)*)? "]"',
            f'lit_key: {key_re} | "\\"" {key_re} "\\""',
        ]
        calls = []
        for i, tool in enumerate(request.callable):
            head = marked(f"{self.call_open}{tool.name}{s.args_open}", control)
            pairs = []
            properties = list(_properties(tool).items())[:_MAX_PROPERTIES]
            if s.sorted_keys:
                properties.sort()
            required = set(_required(tool))
            for k, (key, schema) in enumerate(properties):
                value = self._value_rule(schema, control)
                rules.append(f"p_{i}_{k}: {marked(key + s.key_sep, control)} {value}")
                pairs.append((f"p_{i}_{k}", key in required))
            body = _pairs(pairs, marked(s.pair_sep, control)) if pairs else ""
            close = marked(s.args_close, control)
            rules.append(f"fn_{i}: {head} {body} {close}".replace("  ", " "))
            calls.append(f"fn_{i}")
        extra = request.max_calls - 1
        start = "" if lazy else f"{marked(self.start, control)} "
        end = f" {marked(self.end, control)}" if self.end else ""
        if self.between:
            more = f" ({marked(self.between, control)} call){{0,{extra}}}" if extra else ""
            top = f"start: {start}call{more}{end}"
        else:
            again = f' ("\\n"? {marked(self.start, control)} call{end}){{0,{extra}}}'
            top = f"start: {start}call{end}{again if extra else ''}"
        return GRAMMAR_HEAD + "\n".join([top, f"call: {' | '.join(calls)}", *rules]) + "\n"

    def _value_rule(self, schema: Any, control: Mapping[str, int]) -> str:
        s = self.syntax
        if not isinstance(schema, Mapping):
            return "lit"
        values = schema.get("enum")
        if isinstance(values, list) and values and all(isinstance(v, str | int) for v in values):
            texts = [marked(s.written(v), control) for v in values]
            return "(" + " | ".join(f"({t})" for t in texts) + ")"
        kind = schema.get("type")
        if kind == "string":
            return f"{marked(s.quote, control)} qstr"
        if kind == "integer":
            return "int"
        if kind == "number":
            return "num"
        if kind == "boolean":
            return f"({marked(s.words[0], control)} | {marked(s.words[1], control)})"
        if kind == "null":
            return marked(s.words[2], control)
        return "lit"

    def describe(self) -> dict[str, Any]:
        syntax = {k: getattr(self.syntax, k) for k in ("args_open", "args_close", "key_sep",
                  "pair_sep", "quote", "words", "sorted_keys")}  # fmt: skip
        return {**super().describe(), "call_open": self.call_open, "between": self.between,
                "syntax": syntax}  # fmt: skip


def _pairs(pairs: list[tuple[str, bool]], sep: str) -> str:
    """The pairs in order, each optional one left out or not, `sep` between two written."""

    def rest(k: int) -> str:
        if k == len(pairs):
            return ""
        rule, needed = pairs[k]
        step = f"{sep} {rule}"
        return f"{step} {rest(k + 1)}" if needed else f"({step})? {rest(k + 1)}"

    def first(k: int) -> str:
        rule, needed = pairs[k]
        with_it = f"{rule} {rest(k + 1)}".strip()
        if needed or k + 1 == len(pairs):
            return with_it
        return f"(({with_it}) | ({first(k + 1)}))"

    whole = first(0)
    return whole if any(n for _, n in pairs) else f"({whole})?"


def _properties(tool: Tool) -> dict[str, Any]:
    params = tool.parameters if isinstance(tool.parameters, Mapping) else {}
    props = params.get("properties")
    return dict(props) if isinstance(props, Mapping) else {}


def _required(tool: Tool) -> list[str]:
    params = tool.parameters if isinstance(tool.parameters, Mapping) else {}
    required = params.get("required")
    return [k for k in required if isinstance(k, str)] if isinstance(required, list) else []
