"""The name outside the JSON: the tool's name is markup, only the arguments are JSON.

    Mistral Small 3.2  [TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{"city": "Paris"}
    Devstral           [TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}
    Kimi K2            <|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0
                       <|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|>...
    DeepSeek V3.1      <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{...}
                       <｜tool▁call▁end｜><｜tool▁calls▁end｜>   (R1: the JSON fenced in ```json)
    functionary v3.1   <function=get_weather>{"city": "Paris"}</function>
    Solar Open         <|tool_calls|><|tool_call:begin|>ID<|tool_call:name|>get_weather...

One shape covers them: `start call (between call)* end`, a call being `call_open NAME
name_close JSON call_close`, with the call's id (or its place in the turn) written in
`call_open` or `name_close` where the template writes it. The pieces are learned by diffing
probe renders (`calls/diff.py`): one call and two, another name, another id. The parser, the
closing of a cut call and the grammar all read the one scan of a body (`_scan`).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from endmark.calls.base import CallClose, CallStrategy, MalformedCall, ToolCall, new_call_id
from endmark.calls.diff import (
    ARGS,
    IDS,
    NAMES,
    Call,
    call_section,
    common_prefix,
    content_head,
    first_marker,
    json_at,
    marker_start,
)
from endmark.calls.json_body import NumberText, json_text
from endmark.calls.json_probe import PROBE_ARGS, PROBE_TOOL
from endmark.calls.lark import GRAMMAR_HEAD, closed, literal
from endmark.calls.probe import takes_long_ids
from endmark.chat import ChatTemplate
from endmark.constraints import JSON_OPTIONS
from endmark.json_close import FILL, Reach, json_closing, json_reach
from endmark.tools import Tool, ToolRequest

ID = "{id}"  # where a call's id is written, in `call_open` or `name_close`
ID_CHARS = {"id": r"[A-Za-z0-9_\-]", "index": r"[0-9]"}
_DECODER = json.JSONDecoder(parse_float=NumberText, parse_int=NumberText)


@dataclass
class Scan:
    """A body read as far as it goes: its whole calls (name, id, arguments), then where the
    rest stands: `done` (nothing more), `end` (a start of the end marker), `between` (a start
    of the next call's markup), `head` (inside a call's markup before its JSON), `json`
    (inside its JSON: `name` is known), `close` (inside the markup after the JSON); `rest`
    is the text of that part."""

    calls: list[tuple[str, str, Any]]
    state: str
    rest: str = ""
    name: str = ""


@dataclass(frozen=True)
class NamedJson(CallStrategy):
    name: str
    start: str
    end: str
    call_open: str
    name_close: str
    call_close: str = ""
    between: str = ""
    ids: str = ""  # "": none written; "id": the call's id; "index": its place in the turn
    short_ids: bool = False  # ids of 9 letters and digits, which Mistral's templates demand
    # the generation prompt ends in `start`: the answer's first call comes without it
    # (functionary v3.2's `>>>`)
    opened: bool = False
    content_head: str = ""  # with `opened`, what the prompt's marker is followed by for text

    kind: ClassVar[str] = "named_json"

    # -- learning ---------------------------------------------------------------------------

    @classmethod
    def learn(cls, template: ChatTemplate, end_texts: Collection[str]) -> NamedJson | None:
        one = call_section(template, (Call(),), end_texts)
        if one is None:
            return None
        two = call_section(template, (Call(), Call(1, 1, 1)), end_texts)
        learned = learned_from(one, two, not takes_long_ids(template, PROBE_TOOL, PROBE_ARGS))
        if learned is not None and learned.opened:
            return replace(learned, content_head=content_head(template).lstrip())
        return learned

    # -- reading ----------------------------------------------------------------------------

    def opens_bare(self, text: str) -> bool:
        """With `opened`, an answer that begins with a name, the markup after it and the
        JSON's `{` (and not with the header its plain text has: functionary's `all\\n`)."""
        if not self.opened or text.lstrip().startswith(self.content_head or "\0"):
            return False
        return (
            re.match(r"\s*[A-Za-z_][\w.\-]*" + re.escape(self.name_close) + "{", text) is not None
        )

    def undecided_head(self, text: str) -> bool:
        """With `opened`, an answer that may still be a start of a call's markup."""
        if not self.opened or len(text) > 80 or self.opens_bare(text):
            return False
        if self.content_head and text.lstrip().startswith(self.content_head):
            return False
        name = re.match(r"\s*[A-Za-z_][\w.\-]*", text)
        rest = text[name.end() :] if name else ""
        return name is not None and (self.name_close + "{").startswith(rest)

    def _scan(self, body: str) -> Scan:
        calls: list[tuple[str, str, Any]] = []
        rest, head = body, _head(self.call_open, self.name_close, self.ids or "id")
        while True:
            found = head.match(rest)
            if found is None:
                return Scan(calls, "head", rest.lstrip())
            name, call_id = found.group("name"), found.groupdict().get("id") or ""
            rest = rest[found.end() :]
            try:
                args, length = _DECODER.raw_decode(rest)
            except ValueError:
                return Scan(calls, "json", rest, name)
            calls.append((name, call_id, args))
            rest = rest[length:].lstrip()
            close = self.call_close.strip()
            if rest.startswith(close):
                rest = rest[len(close) :].lstrip()
            elif close.startswith(rest):
                return Scan(calls, "close", rest)
            if not rest:
                return Scan(calls, "done")
            if self.end.startswith(rest):  # the end marker's start (or the next call's?)
                return Scan(calls, "end", rest)
            between = self.between.strip()
            if between and rest.startswith(between):
                rest = rest[len(between) :]
            elif between.startswith(rest):
                return Scan(calls, "between", rest)
            elif between:
                raise MalformedCall(f"a {self.name} tool call has text after its arguments")

    def parse(self, body: str, tools: Sequence[Tool] = ()) -> list[ToolCall]:
        scan = self._scan(body)
        whole = scan.state == "done" or (scan.state == "close" and not scan.rest)
        if not whole or not scan.calls:
            raise MalformedCall(f"a {self.name} tool call is not whole")
        out = []
        for name, call_id, args in scan.calls:
            text = args if isinstance(args, str) else json_text(args)
            written = self.ids == "id" and call_id and (not self.short_ids or _short(call_id))
            out.append(ToolCall(name, text, call_id if written else new_call_id(self.short_ids)))
        return out

    def inside_value(self, body: str) -> bool:
        scan = self._scan(body)
        return scan.state == "json" and bool(json_closing(scan.rest.strip()))

    def closing(self, body: str, tools: Sequence[Tool]) -> CallClose | None:
        """The open call finished: a cut marker, a cut name (as the tool it begins), a cut id
        and the JSON (closed as the tool's schema guides it); then the end marker."""
        if not tools:
            return None
        try:
            scan = self._scan(body)
        except MalformedCall:
            return None
        if scan.state == "done":
            return CallClose("", self.end, boundary=bool(scan.calls))
        if scan.state == "end":  # held back as the end marker's start: the splitter's to say
            return None
        if scan.state == "close":
            return CallClose(self.call_close.strip()[len(scan.rest) :], self.end)
        if scan.state == "json":
            tool = next((t for t in tools if t.name == scan.name), Tool(scan.name))
            text = json_closing(scan.rest, _args_schema(tool))
            return None if text is None else CallClose(text + self.call_close, self.end)
        markup = self.between.strip() if scan.state == "between" else ""
        rest = scan.rest if scan.state == "head" else ""
        if scan.state == "between":
            markup = markup[len(scan.rest) :]
        fits = [(t, done) for t in tools if (done := self._head_rest(rest, t.name)) is not None]
        if not fits:
            return None
        tool, head = fits[0]
        args = json_closing("", _args_schema(tool)) or "{}"
        return CallClose(markup + head + args + self.call_close, self.end, len(fits) != 1)

    def reach(self, body: str, tools: Sequence[Tool]) -> Reach | None:
        try:
            scan = self._scan(body)
        except MalformedCall:
            return None
        if scan.state != "json":
            return None
        tool = next((t for t in tools if t.name == scan.name), Tool(scan.name))
        return json_reach(scan.rest, _args_schema(tool))

    def _head_rest(self, written: str, name: str) -> str | None:
        """What finishes a call's markup of the tool `name`, `written` so far (None: it is
        not a start of it): an id cut short is finished, a missing one made up."""
        whole = f"{self.call_open}{name}{self.name_close}"
        made_up = "0" if self.ids == "index" else new_call_id(self.short_ids)
        before, slot, after = whole.partition(ID)
        if not slot or len(written) <= len(before):
            full = whole.replace(ID, made_up)
            return full[len(written) :] if full.startswith(written) else None
        if not written.startswith(before):
            return None
        cut = written[len(before) :]
        so_far = re.match(f"{ID_CHARS[self.ids or 'id']}*", cut)
        call_id = so_far.group(0) if so_far else ""
        if not after.startswith(cut[len(call_id) :]):
            return None
        more = made_up[len(call_id) :] if self.short_ids else ("" if call_id else made_up)
        return more + after[len(cut) - len(call_id) :]

    # -- constraining -----------------------------------------------------------------------

    def grammar(self, request: ToolRequest, control: Mapping[str, int], lazy: bool = False) -> str:
        """The markup exactly as the template writes it, each tool's name and its arguments
        valid against its parameters; at most `max_calls` calls."""
        rules = []
        for i, tool in enumerate(request.callable):
            head = self._lark(f"{self.call_open}{tool.name}{self.name_close}", control)
            close = self._lark(self.call_close, control)
            rules.append(f"fn_{i}: {head} args_{i} {close}".rstrip())
            schema = {**closed(tool.parameters), "x-guidance": JSON_OPTIONS}
            rules.append(f"args_{i}: %json {json.dumps(schema)}")
        calls = " | ".join(f"fn_{i}" for i in range(len(request.callable)))
        extra = request.max_calls - 1
        more = f" ({self._lark(self.between, control)} call){{0,{extra}}}" if extra else ""
        end = f" {self._lark(self.end, control)}" if self.end else ""
        start = "" if lazy or self.opened else f"{self._lark(self.start, control)} "
        id_rule = {"": "", "index": "/[0-9]{1,2}/", "id": "/[a-zA-Z0-9_\\-]{1,40}/"}[self.ids]
        if self.ids and self.short_ids:
            id_rule = "/[a-zA-Z0-9]{9}/"
        rules += [f"call_id: {id_rule}"] if id_rule else []
        return (
            f"{GRAMMAR_HEAD}start: {start}call{more}{end}\ncall: {calls}\n"
            + "\n".join(rules)
            + "\n"
        )

    @staticmethod
    def _lark(text: str, control: Mapping[str, int]) -> str:
        """`text` as Lark: its special tokens as themselves, the rest quoted, an id by rule."""
        if not text:
            return ""
        markers = sorted((m for m in control if m and m in text), key=len, reverse=True)
        pattern = "|".join([re.escape(ID), *(re.escape(m) for m in markers)])
        parts = [p for p in re.split(f"({pattern})", text) if p]
        return " ".join("call_id" if p == ID else literal(p, control) for p in parts)

    def describe(self) -> dict[str, Any]:
        pieces = ("call_open", "name_close", "call_close", "between", "ids", "opened")
        return {**super().describe(), **{p: getattr(self, p) for p in pieces}}


def learned_from(one: str, two: str | None, short_ids: bool) -> NamedJson | None:
    """The pieces of a probe call's render `one` (and of two calls, `two`): the JSON that
    holds the argument is the arguments, the text before it holds the name."""
    one, two = one.replace(IDS[0], ID), (two or "").replace(IDS[0], ID).replace(IDS[1], ID)
    found = json_at(one, next(iter(ARGS[0])))
    if found is None or found[2] != ARGS[0]:
        return None
    at, end, _ = found
    head, tail = one[:at], one[end:]
    named = head.rfind(NAMES[0])
    if named < 0:
        return None
    before, name_close = head[:named], head[named + len(NAMES[0]) :]
    start = first_marker(before) or before
    call_open = before[len(start) :]
    opened = not before  # the call starts the answer: the prompt wrote its marker
    if not name_close or not (opened or start.startswith(("<", "["))):
        return None
    ids = "id" if ID in call_open + name_close else ""
    call_close, between, last_tail = "", "", tail
    if two:
        first = json_at(two, next(iter(ARGS[0])))
        second_name = two.find(NAMES[1], first[1] if first else len(two))
        second = json_at(two[second_name:], next(iter(ARGS[1]))) if second_name >= 0 else None
        if first is not None and second is not None:
            mid = two[first[1] : second_name]
            close2 = two[second_name + len(NAMES[1]) : second_name + second[0]]
            if close2 != name_close and not ids:
                at_digit = common_prefix(name_close, close2)
                if name_close[at_digit : at_digit + 1] == "0" and close2[at_digit:].startswith("1"):
                    name_close = name_close[:at_digit] + ID + name_close[at_digit + 1 :]
                    ids = "index"
            if mid.endswith(call_open):
                both = mid[: len(mid) - len(call_open)]
                last_tail = two[second_name + second[1] :]
                shared = marker_start(both, common_prefix(both, last_tail))
                call_close, between = both[:shared], both[shared:]
    end = last_tail[len(call_close) :].strip()
    if opened:  # the marker between two calls is the one the prompt ended in
        if not between.strip() or end or name_close.strip():
            return None
        start = between
    known = KNOWN.get((start, end, call_open, name_close, call_close, between, ids))
    return NamedJson(known or "learned", start, end, call_open, name_close, call_close, between,
                     ids, short_ids, opened)  # fmt: skip


@functools.lru_cache(maxsize=64)
def _head(call_open: str, name_close: str, ids: str) -> re.Pattern[str]:
    """A call's markup up to its JSON: the name, and the id where one is written."""

    def pieces(text: str, id_pattern: str) -> str:
        parts = re.split(f"({re.escape(ID)})", text)
        return "".join(f"(?P<id>{id_pattern})" if p == ID else _loose(p) for p in parts)

    # a blank name close (functionary v3.2's `\n`) ends nothing: the name runs as far as it can
    lazy = "?" if name_close.strip() else ""
    name = rf"(?P<name>[^\s{{}}\[\]<>\"]+{lazy})"
    pattern = (
        pieces(call_open, ID_CHARS[ids] + "+?") + name + pieces(name_close, ID_CHARS[ids] + "+")
    )
    return re.compile(r"\s*" + pattern + r"\s*")


def _loose(text: str) -> str:
    """`text` as a regex, its blanks optional (a model may write a call on one line)."""
    return "".join(r"\s*" if c.isspace() else re.escape(c) for c in text)


def _short(call_id: str) -> bool:
    return len(call_id) == 9 and call_id.isalnum()


def _args_schema(tool: Tool) -> dict[str, Any]:
    params = tool.parameters if isinstance(tool.parameters, dict) else {}
    return {**params, FILL: {}}


KNOWN: dict[tuple[str, ...], str] = {
    ("[TOOL_CALLS]", "", "", "[ARGS]", "", "[TOOL_CALLS]", ""): "devstral",
    ("[TOOL_CALLS]", "", "", f"[CALL_ID]{ID}[ARGS]", "", "[TOOL_CALLS]", "id"): "mistral_small",
    ("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", "<|tool_call_begin|>functions.",
     f":{ID}<|tool_call_argument_begin|>", "<|tool_call_end|>", "", "index"): "kimi_k2",
    ("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>",
     "<｜tool▁call▁end｜>", "", ""): "deepseek_v3_1",
    ("<function=", "", "", ">", "</function>", "<function=", ""): "functionary_v3_1",
}  # fmt: skip
