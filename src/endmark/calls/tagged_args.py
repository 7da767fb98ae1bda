"""Tagged arguments: Qwen3-Coder, GLM and Seed-OSS write a call's arguments one by one between
tags, not as JSON:

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    </function>
    </tool_call>

A string value is written as it is, any other value as JSON (the tool's schema says which), so
a parsed call's arguments are a JSON object that matches the schema. The tags are learned by
diffing a probe call's render: what lies between its name, keys and values.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, ClassVar

from endmark.calls.base import (
    CallClose,
    CallStrategy,
    MalformedCall,
    Messages,
    ToolCall,
    new_call_id,
)
from endmark.calls.json_body import json_text, loads_exact
from endmark.calls.lark import GRAMMAR_HEAD, MAX_STRING, NL, closed, text_until
from endmark.calls.lark_marks import marked
from endmark.calls.probe import PROBE_TOOL_NAME
from endmark.calls.tagged_close import (
    after_tag,
    cut_at,
    empty_value,
    tag_rest,
    unwritten,
    unwritten_all,
    value_rest,
)
from endmark.calls.tagged_learn import (
    KEY,
    PROBE_ARGS,
    PROBE_TOOL,
    TYPED_ARGS,
    TYPED_TOOL,
    between,
    flat,
    read_tags,
)
from endmark.calls.turn_diff import call_section
from endmark.chat import ChatTemplate
from endmark.constraints import JSON_OPTIONS
from endmark.tools import Tool, ToolRequest

PYTHON_WORDS = {"True": True, "False": False, "None": None}  # Jinja's `|string` of them


def takes_text(schema: Any) -> bool:
    """Whether a value of `schema` is written as plain text (a string, or anything: a schema
    that says nothing), not as JSON."""
    if not isinstance(schema, Mapping):
        return True
    kind = schema.get("type")
    if isinstance(kind, str):
        return kind == "string"
    if isinstance(kind, list):
        return "string" in kind
    values = schema.get("enum", [schema["const"]] if "const" in schema else None)
    if values is not None:
        return all(isinstance(v, str) for v in values)
    branches = schema.get("anyOf", schema.get("oneOf"))
    if isinstance(branches, list):
        return any(takes_text(b) for b in branches)
    return True


def typed_value(text: str, schema: Any) -> Any:
    """A written value, read as its schema types it: text as it is, anything else as JSON
    (or the Python word a template's `|string` wrote for a boolean or null)."""
    if takes_text(schema):
        return text
    try:
        return loads_exact(text.strip())
    except json.JSONDecodeError:
        return PYTHON_WORDS.get(text.strip(), text)


@dataclass(frozen=True)
class TaggedArgs(CallStrategy):
    """`start name_open NAME name_close (key_open KEY key_close VALUE value_close)* call_close
    end`, one call per `start ... end`; or, with `again`, one `start ... end` around all the
    turn's calls, `again` written between one call's arguments and the next one's NAME. A
    value written as JSON may have a key close of its own (`json_key_close`)."""

    name: str
    start: str
    end: str
    name_open: str
    name_close: str
    key_open: str
    key_close: str
    value_close: str
    call_close: str
    again: str = ""
    json_key_close: str = ""  # a JSON value's key close, where not a text's (DSML `string=`)

    kind: ClassVar[str] = "tagged_args"

    @classmethod
    def learn(cls, template: ChatTemplate, end_texts: Collection[str]) -> TaggedArgs | None:
        """Diff a probe call with two string arguments: the texts around its name, keys and
        values are the tags (`_between` names them). The key's open tag is what precedes both
        keys; what precedes the second key beyond it closes the first value. Two calls tell
        whether each call has its own start marker, or one wrapper holds them all (MiniMax's
        `<minimax:tool_call>`), and then what lies between two calls."""
        body = call_section(template, PROBE_TOOL, [PROBE_ARGS])
        pieces = read_tags(body, end_texts) if body else None
        if pieces is None:
            return None
        learned = cls("tagged", *pieces)
        typed = call_section(template, TYPED_TOOL, [TYPED_ARGS]) or ""
        if learned.written(PROBE_TOOL_NAME, TYPED_ARGS).strip() not in typed:
            # a number written with another key close than text's (DSML's `string="false"`)
            key, value = next(iter(TYPED_ARGS.items()))
            parts = between(typed, [f"{learned.key_open}{key}", f"{value}{learned.close_of(key)}"])
            if parts is None or not parts[1]:
                return None
            learned = replace(learned, json_key_close=parts[1])
            if learned.written(PROBE_TOOL_NAME, TYPED_ARGS).strip() not in typed:
                return None
        two = call_section(template, PROBE_TOOL, [PROBE_ARGS, PROBE_ARGS]) or ""
        if two.count(learned.start) == 1:
            needles = [PROBE_TOOL_NAME, *flat(PROBE_ARGS), PROBE_TOOL_NAME]
            parts = between(two, needles)
            again = parts[-2] if parts else ""
            close = learned.close_of(list(PROBE_ARGS)[-1])
            if not again.startswith(close) or again == close:
                return None
            return replace(learned, name="wrapped", again=again[len(close) :])
        if two.count(learned.start) != 2:
            return None
        known = learned.fields() == QWEN3_CODER.fields()
        return replace(learned, name="qwen3_coder") if known else learned

    def fields(self) -> tuple[str, ...]:
        return (self.start, self.end, self.name_open, self.name_close, self.key_open,
                self.key_close, self.value_close, self.call_close)  # fmt: skip

    def written(self, name: str, arguments: Mapping[str, Any]) -> str:
        """One call as this format writes it (and as its template does)."""
        args = "".join(
            f"{self.key_open}{k}{self.key_close_of(isinstance(v, str))}"
            f"{v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}{self.close_of(k)}"
            for k, v in arguments.items()
        )
        head = f"{self.start}{self.name_open}{name}{self.name_close}"
        return f"{head}{args}{self.call_close}{self.end}"

    @cached_property
    def body_tokens(self) -> frozenset[str]:  # type: ignore[override]
        """Every text a special token in a call's tags may have (GLM's `<arg_key>`): inside
        a call, each reaches the splitter as its text."""
        tags = (
            self.name_open,
            self.name_close,
            self.key_open,
            self.key_close,
            *self.value_close.split(KEY),
            self.call_close,
            self.again,
            self.json_key_close,
        )
        return frozenset(
            t[i:j] for t in tags for i in range(len(t)) for j in range(i + 2, len(t) + 1)
        )  # fmt: skip

    def close_of(self, key: str) -> str:
        """The tag that closes the value of `key`."""
        return self.value_close.replace(KEY, key)

    def argument_markup(self, key: str) -> str:
        close = max(self.key_close, self.json_key_close, key=len)
        return f"{self.key_open}{key}{close}{self.close_of(key)}"

    def key_close_of(self, text: bool) -> str:
        """What closes a key whose value is written as text, or as JSON."""
        return self.key_close if text or not self.json_key_close else self.json_key_close

    def _split_key(self, text: str) -> tuple[str, bool, str]:
        """The key up to the first of its close tags, whether one came, and what follows."""
        closes = [c for c in (self.key_close, self.json_key_close) if c and c in text]
        if not closes:
            return text, False, ""
        close = min(closes, key=text.find)
        key, _, rest = text.partition(close)
        return key, True, rest

    # -- splitting --------------------------------------------------------------------------

    def inside_value(self, body: str) -> bool:
        """As the grammar and the parser read a value: it runs to the first whole close of its
        key (`close_of`, with its blanks: Qwen3.5 on SmolLM2 wrote `France</parameter>`
        inside a value that closes with a newline and `</parameter>`)."""
        # tags that begin as a key's does (MiniMax-M3's `]<]minimax[>[<invoke`) open no value
        heads = [m.strip() for m in (self.name_open, self.call_close, self.again) if m.strip()]
        at = body.find(self.key_open)
        while at >= 0:
            after = at + len(self.key_open)
            if any(body.startswith(h, at) for h in heads) or body.startswith("/", after):
                at = body.find(self.key_open, at + 1)
                continue
            key, closed, rest = self._split_key(body[after:])
            if not closed:
                return False  # in a key's tag
            close = self.close_of(key.strip())
            end = body.find(close, len(body) - len(rest))
            if end < 0:
                return True
            at = body.find(self.key_open, end + len(close))
        return False

    def parse(self, body: str, tools: Sequence[Tool] = ()) -> list[ToolCall]:
        rest = body.lstrip()
        opener = self.name_open.lstrip()
        if not rest.startswith(opener):
            raise MalformedCall(f"a {self.name} tool call names no function")
        rest = rest[len(opener) :]
        calls = []
        while True:
            name, rest = self._read_name(rest)
            if not name:
                raise MalformedCall(f"a {self.name} tool call names no function")
            args, rest = self._read_arguments(rest, name, tools)
            calls.append(ToolCall(name, json_text(args), new_call_id()))
            again = self.again.strip()
            if not again or not rest.lstrip().startswith(again):
                break
            rest = rest.lstrip()[len(again) :]
        if rest.strip() != self.call_close.strip():
            raise MalformedCall(f"a {self.name} tool call has text after its arguments")
        return calls

    def _read_arguments(
        self, rest: str, name: str, tools: Sequence[Tool]
    ) -> tuple[dict[str, Any], str]:
        """The arguments written from `rest` on, typed by the named tool's schema; and what
        follows them."""
        parameters = next((t.parameters for t in tools if t.name == name), {})
        properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
        args: dict[str, Any] = {}
        # a close tag that begins as a key's open tag does (MiniMax-M3's `NS</invoke>`)
        closers = [m for m in (self.call_close, self.again, self.end) if m[: len(self.key_open)]
                   == self.key_open]  # fmt: skip
        while rest.startswith(self.key_open) and not any(
            rest.startswith(m.strip()) for m in closers
        ):
            key, closed_key, rest = self._split_key(rest[len(self.key_open) :])
            value, closed_value, rest = rest.partition(self.close_of(key.strip()))
            if not (closed_key and closed_value):
                raise MalformedCall(f"a {self.name} tool call has an argument left open")
            schema = properties.get(key.strip()) if isinstance(properties, Mapping) else None
            args[key.strip()] = typed_value(value, schema)
        return args, rest

    def closing(self, body: str, tools: Sequence[Tool]) -> CallClose | None:
        """The tags the cut left open, finished in order: the function's name (as the tool it
        begins), the argument's key (as a property it begins), its value (text as it is, JSON
        closed, an enum finished; `null` where none was written), then the call's close."""
        if not tools:
            return None
        at = body.rfind(self.again) if self.again else -1
        while at >= 0 and self.inside_value(body[:at]):  # a value's own text (DeepSeek V4)
            at = body.rfind(self.again, 0, at)
        if at >= 0:  # the calls before the last one are whole
            body = self.name_open + body[at + len(self.again) :]
        rest = after_tag(body, self.name_open)
        if rest is None:
            missing = tag_rest(body, self.name_open)
            if missing is None:
                return None
            text = f"{missing}{tools[0].name}{self.name_close}{self.call_close}"
            return CallClose(text, self.end, guessed=len(tools) > 1)
        name, closed_name, rest = self._cut_name(rest)
        fits = [t for t in tools if t.name == name or (not closed_name and t.name.startswith(name))]
        tool = (fits or [Tool(name)])[0]
        if not closed_name:
            text = tool.name[len(name) :] + rest + self.call_close
            return CallClose(text, self.end, guessed=len(fits) != 1)
        params = tool.parameters if isinstance(tool.parameters, Mapping) else {}
        props = params.get("properties")
        props = props if isinstance(props, Mapping) else {}
        written: list[str] = []
        closes_as_key = self.call_close.startswith(self.key_open)  # MiniMax-M3's `NS</invoke>`
        while True:
            if rest == "":
                return CallClose(self.call_close, self.end, boundary=True)
            in_key = after_tag(rest, self.key_open)
            past_close = after_tag(rest, self.call_close)
            missing = tag_rest(rest, self.call_close)
            if past_close is not None or missing is not None:
                in_key = None if closes_as_key else in_key
            if in_key is None and past_close is not None and not past_close.strip():
                return CallClose("", self.end, boundary=True)
            if in_key is None and missing is not None:
                return CallClose(missing, self.end)
            missing = tag_rest(rest, self.again) if self.again else None
            if in_key is None and missing is not None:  # the next call, named by endmark
                text = f"{missing}{tools[0].name}{self.name_close}{self.call_close}"
                return CallClose(text, self.end, guessed=len(tools) > 1)
            if in_key is None:
                missing = tag_rest(rest, self.key_open)
                key = unwritten(params, written)
                if missing is None or not key or tag_rest(rest, self.end) is not None:
                    return None  # (where the end marker may begin, the splitter closes)
                as_text = takes_text(props.get(key))
                text = missing + key + self.key_close_of(as_text) + empty_value(as_text)
                return CallClose(text + self.close_of(key) + self.call_close, self.end)
            key, closed_key, after = self._split_key(in_key)
            rest = after if closed_key else cut_at(in_key, self.key_close)[2]
            if not closed_key:
                key = cut_at(in_key, self.key_close)[0]
                full = next((k for k in unwritten_all(params, written) if k.startswith(key)), key)
                if not takes_text(props.get(full)) and self.json_key_close:
                    key, _, rest = cut_at(in_key, self.json_key_close)
                text = full[len(key) :] + rest + empty_value(takes_text(props.get(full)))
                return CallClose(text + self.close_of(full) + self.call_close, self.end)
            written.append(key.strip())
            value, closed_value, rest = cut_at(rest, self.close_of(key.strip()))
            if not closed_value:
                schema = props.get(key.strip())
                finish = value_rest(value, schema, takes_text(schema))
                if finish is None:
                    return None
                return CallClose(finish + rest + self.call_close, self.end)

    def _cut_name(self, text: str) -> tuple[str, bool, str]:
        """The name so far and whether its close tag came; then what follows it, or (when
        it did not come) what is missing of the close tag."""
        if not self.name_close:
            name, rest = self._read_name(text)
            return name, bool(rest), rest
        return cut_at(text, self.name_close)

    def _read_name(self, text: str) -> tuple[str, str]:
        if self.name_close:
            name, found, rest = text.partition(self.name_close)
            return (name.strip(), rest) if found else ("", text)
        marks = [m for m in (self.key_open, self.call_close, self.again.strip(), self.end) if m]
        at = min((text.find(m) for m in marks if m in text), default=len(text))
        if at == len(text):  # no mark yet: a cut one's start is none of the name
            cut = [k for m in marks for k in range(1, len(m)) if text.endswith(m[:k])]
            at -= max(cut, default=0)
        return text[:at].strip(), text[at:]

    # -- constraining -----------------------------------------------------------------------

    def grammar(self, request: ToolRequest, control: Mapping[str, int], lazy: bool = False) -> str:
        """Each tool's required arguments in the order its schema lists them, optional ones
        where they fall; a string is free text up to the first close tag (held to its
        maxLength or MAX_STRING characters), any other value is JSON."""
        rules = []
        alternatives = []
        for i, tool in enumerate(request.callable):
            alternatives.append(f"fn_{i}")
            rules += self._function_rules(i, tool, control)
        extra = request.max_calls - 1
        if self.again:  # one wrapper: `again` between calls, the close and end after them
            opener = marked(self.name_open, control)
            first = f"{opener} fn" if lazy else f"{marked(self.start, control)} {opener} fn"
            again = marked(self.again, control)
            if self.call_close and self.again.startswith(self.call_close):
                # the call's close, then the next call's open: one lexeme may not begin
                # another, or llguidance's lexer would not stop at the shorter one
                rest = self.again[len(self.call_close) :]
                again = f"{marked(self.call_close, control)} {marked(rest, control)}"
            more = f" ({again} fn){{0,{extra}}}" if extra else ""
            tail = f" {marked(self.call_close, control)}" if self.call_close else ""
            start = f"{first}{more}{tail} {marked(self.end, control)}"
            head = f"{GRAMMAR_HEAD}start: {start}\n"
        else:
            call = f"{marked(self.start, control)} fn"
            more = f" ({NL} call){{0,{extra}}}" if extra else ""
            head = f"{GRAMMAR_HEAD}start: {'fn' if lazy else call}{more}\ncall: {call}\n"
        return head + f"fn: {' | '.join(alternatives)}\n" + "\n".join(rules) + "\n"

    def _function_rules(self, i: int, tool: Tool, control: Mapping[str, int]) -> list[str]:
        params = tool.parameters if isinstance(tool.parameters, Mapping) else {}
        properties = params.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = set(params.get("required") or [])
        opener = "" if self.again else self.name_open  # a wrapper's: before or between calls
        parts = [marked(f"{opener}{tool.name}{self.name_close}", control)]
        rules = []
        for j, (key, schema) in enumerate(properties.items()):
            rule = f"arg_{i}_{j}"
            parts.append(rule if key in required else f"{rule}?")
            close = self.key_close_of(takes_text(closed(schema)))
            opener = marked(f"{self.key_open}{key}{close}", control)
            rules += value_rules(rule, opener, self.close_of(key), schema, control)
        if not self.again:
            if self.call_close:
                parts.append(marked(self.call_close, control))
            parts.append(marked(self.end, control))
        return [f"fn_{i}: {' '.join(parts)}", *rules]

    # -- the prompt -------------------------------------------------------------------------

    def history(self, messages: Messages) -> list[dict[str, Any]]:
        return object_arguments(messages)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "array": False, "arguments_key": ""}


def value_rules(
    rule: str, opener: str, close_text: str, schema: Any, control: Mapping[str, int]
) -> list[str]:
    """The Lark rules of one argument, `opener` to `close_text`: a string is free text up to
    the close (held to its maxLength or MAX_STRING characters; an enum's values as written),
    any other value is JSON."""
    close = marked(close_text, control)
    schema = closed(schema) if isinstance(schema, Mapping) else {}
    values = schema.get("enum", [schema["const"]] if "const" in schema else None)
    if takes_text(schema) and values is not None:
        written = " | ".join(json.dumps(v) for v in values)
        return [f"{rule}: {opener} ({written}) {close}"]
    if takes_text(schema):
        low, high = schema.get("minLength", 0), schema.get("maxLength", MAX_STRING)
        if any(close_text.startswith(t) for t in control):  # a special token ends it
            free = f"{rule}_text: /(?s:.{{{low},{high}}})/"
            return [f"{rule}: {opener} {rule}_text {close}", free]
        text = text_until(f"{rule}_text", close_text, low, high)
        return [f"{rule}: {opener} {rule}_text", text]
    typed = {**schema, "x-guidance": JSON_OPTIONS}
    return [f"{rule}: {opener} {rule}_json {close}", f"{rule}_json: %json {json.dumps(typed)}"]


def object_arguments(messages: Messages) -> list[dict[str, Any]]:
    """The template writes each argument by key: arguments sent as a JSON text are read
    into the object it expects."""
    out = []
    for m in messages:
        m = dict(m)
        if m.get("tool_calls"):
            m["tool_calls"] = [with_object_arguments(c) for c in m["tool_calls"]]
        out.append(m)
    return out


def with_object_arguments(call: Mapping[str, Any]) -> dict[str, Any]:
    call = dict(call)
    function = dict(call.get("function") or {})
    args = function.get("arguments")
    if isinstance(args, str):
        try:
            function["arguments"] = json.loads(args)
        except json.JSONDecodeError:
            pass
    call["function"] = function
    return call


QWEN3_CODER = TaggedArgs(
    "qwen3_coder", "<tool_call>", "</tool_call>", "\n<function=", ">", "\n<parameter=", ">\n",
    "\n</parameter>", "\n</function>\n",
)  # fmt: skip
