"""The shortest text that makes a cut JSON text parse.

When the token budget runs out under a JSON schema or `json_object`, the answer would be cut
mid-value and fail `json.loads`. Just before that, generation writes this instead: the open
string, number or literal finished, a missing value as `null`, and every open array and
object closed. It is JSON, not always valid against the schema (a required key may still be
missing): the response says so.

Given a schema (a tool call's, `calls/`), the closing follows it where the text leaves a
choice: a cut key or enum string is completed to one the schema names, and a required
property whose schema carries a `FILL` value is written with it (a call's name and its
arguments object; never an argument the model did not write).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

LITERALS = ("true", "false", "null")
NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
FILL = "x-endmark-fill"  # in a schema: the value written where this value is missing


@dataclass
class _Frame:
    """An open object or array: its schema (None: unknown), the keys written, the key whose
    value comes next."""

    opener: str
    schema: Any
    keys: list[str] = field(default_factory=list)
    key: str | None = None


@dataclass
class _Scan:
    """Where a JSON prefix stands: its open containers, what comes next (value, key, colon,
    comma: after a value), and the string (`cut_string`, its body so far) or number or
    literal (`cut_word`) it ends inside, if any."""

    stack: list[_Frame]
    expect: str
    cut_string: str | None = None
    cut_word: str | None = None


def json_closing(text: str, schema: Any = None) -> str | None:
    """What to append to `text` (a prefix of one JSON value) so that it parses; "" when it
    already does, None when it is not a JSON prefix at all. `schema` guides the choices (see
    the module's docstring)."""
    scan = _scan(text, schema)
    if scan is None:
        return None
    stack, expect = scan.stack, scan.expect
    if scan.cut_string is not None:
        return _cut_string(scan.cut_string, expect == "key", stack, schema)
    if scan.cut_word is not None:
        done = _finish_scalar(scan.cut_word)
        return None if done is None else done + _closers(stack)
    if not stack and expect == "comma":
        return ""
    if expect == "value":
        if stack and _just_opened(text, len(text), "["):  # empty, unless its schema fills it
            fill = stack[-1].schema.get(FILL) if isinstance(stack[-1].schema, dict) else None
            items = fill if isinstance(fill, list) else []
            return ", ".join(json.dumps(x, ensure_ascii=False) for x in items) + _closers(stack)
        return _missing(_value_schema(stack, schema)) + _closers(stack)
    if expect == "key":
        if _just_opened(text, len(text), "{"):
            return _closers(stack)
        key = _next_key(stack[-1])
        stack[-1].keys.append(key)
        value = _missing(_property(stack[-1].schema, key))
        return f"{json.dumps(key)}: {value}{_closers(stack)}"
    if expect == "colon":
        value = _missing(_property(stack[-1].schema, stack[-1].key))
        return f": {value}{_closers(stack)}"
    return _closers(stack)


@dataclass(frozen=True)
class Reach:
    """How to reach a required property the text has not: `text` finishes the value being
    written (and any container inside the object that lacks it) and writes the property's
    key; `key` is that property, `keys` all the required ones still missing in the open
    objects."""

    text: str
    key: str
    keys: tuple[str, ...]


def json_reach(text: str, schema: Any) -> Reach | None:
    """When a value runs long (a string that loops, a number without end), the budget may
    run out before a required property is written. This is the text that ends the value
    where it stands and names the innermost missing property, so that the model writes its
    value while it still can; a key cut where it begins a missing property is finished.
    None: nothing is missing, or the text stands where no key can follow yet (inside another
    key, before a value has begun)."""
    scan = _scan(text, schema)
    if scan is None:
        return None
    stack = scan.stack
    missing = [(i, k) for i, frame in enumerate(stack) for k in _unreached(frame)]
    if not missing:
        return None
    if scan.cut_string is not None and scan.expect == "key":  # the model is naming one
        return _key_reach(scan.cut_string, stack, missing)
    depth = missing[-1][0]  # the innermost object that lacks one: its first
    key = next(k for i, k in missing if i == depth)
    inner = stack[depth + 1 :]
    if scan.cut_string is not None:
        rest = _enum_rest(_value_schema(stack, schema), scan.cut_string)
        finish = rest + '"' if rest else _string_tail(scan.cut_string)
    elif scan.cut_word is not None:
        done = _finish_scalar(scan.cut_word)
        if done is None:
            return None
        finish = done
    elif scan.expect == "comma":
        finish = ""
    elif scan.expect == "key" and not inner:  # after `{` or a comma: the key comes next
        space = " " if text.endswith(",") else ""
        return Reach(f"{space}{json.dumps(key)}: ", key, tuple(k for _, k in missing))
    else:
        return None
    sep = ", " if stack[depth].keys else ""
    keys = tuple(k for _, k in missing)
    return Reach(f"{finish}{_closers(inner)}{sep}{json.dumps(key)}: ", key, keys)


def _key_reach(written: str, stack: list[_Frame], missing: list[tuple[int, str]]) -> Reach | None:
    """A key cut where it begins a missing required property of the innermost object: the
    rest of it, so that the model writes the value while it still can. None for any other
    key (the closing names it)."""
    depth = len(stack) - 1
    for i, key in missing:
        raw = json.dumps(key, ensure_ascii=False)[1:-1]
        if i == depth and raw.startswith(written):
            return Reach(f'{raw[len(written) :]}": ', key, tuple(k for _, k in missing))
    return None


def _unreached(frame: _Frame) -> list[str]:
    """An object's required properties not written yet, in the order of its properties."""
    schema = frame.schema
    if frame.opener != "{" or not isinstance(schema, dict):
        return []
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = [k for k in schema.get("required") or [] if isinstance(k, str)]
    order = [k for k in props if k in required] + [k for k in required if k not in props]
    return [k for k in order if k not in frame.keys]


def _scan(text: str, schema: Any) -> _Scan | None:
    """Read `text` as the prefix of one JSON value; None when it is not one."""
    stack: list[_Frame] = []
    expect = "value"
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
            continue
        if c == '"':
            end, closed = _string_end(text, i + 1)
            if not closed:
                return _Scan(stack, expect, cut_string=text[i + 1 :])
            if expect not in ("value", "key"):
                return None
            if expect == "key":
                stack[-1].key = _decoded(text[i:end])
                stack[-1].keys.append(stack[-1].key)
            expect = "colon" if expect == "key" else "comma"
            i = end
            continue
        if expect == "colon":
            if c != ":":
                return None
            expect, i = "value", i + 1
            continue
        if c in "{[":
            if expect != "value":
                return None
            stack.append(_Frame(c, _value_schema(stack, schema)))
            expect = "key" if c == "{" else "value"
            i += 1
            continue
        if c in "}]":
            if not stack or (c == "}") != (stack[-1].opener == "{"):
                return None
            if expect == "key" and not _just_opened(text, i, "{"):
                return None  # `{"a": 1, }`: no key after a comma
            stack.pop()
            expect, i = "comma", i + 1
            continue
        if c == ",":
            if expect != "comma" or not stack:
                return None
            expect = "key" if stack[-1].opener == "{" else "value"
            i += 1
            continue
        if expect != "value":
            return None
        j = i
        while j < n and text[j] not in ' \t\r\n,]}:"{[':
            j += 1
        word = text[i:j]
        if j == n:  # the text ends inside this number or literal
            return _Scan(stack, expect, cut_word=word)
        if not _is_scalar(word):
            return None
        expect, i = "comma", j
    return _Scan(stack, expect)


def _cut_string(body: str, is_key: bool, stack: list[_Frame], root: Any) -> str:
    """What finishes a string cut after `body` (and the value after a cut key), then closes."""
    if is_key:
        frame = stack[-1]
        rest = _key_rest(frame, body)
        frame.keys.append(_decoded(f'"{body}{rest}"'))
        tail = rest + '"' if rest else _string_tail(body)
        value = _missing(_property(frame.schema, frame.keys[-1]))
        return f"{tail}: {value}{_closers(stack)}"
    rest = _enum_rest(_value_schema(stack, root), body)
    return (rest + '"' if rest else _string_tail(body)) + _closers(stack)


def _closers(stack: list[_Frame]) -> str:
    """Each open container closed, innermost first; an object first gets the required
    properties it lacks that its schema fills."""
    out = []
    for frame in reversed(stack):
        if frame.opener == "[":
            out.append("]")
            continue
        for key in _fills(frame.schema):
            if key not in frame.keys:
                value = json.dumps(frame.schema["properties"][key][FILL], ensure_ascii=False)
                out.append(f"{', ' if frame.keys else ''}{json.dumps(key)}: {value}")
                frame.keys.append(key)
        out.append("}")
    return "".join(out)


# -- the schema's guidance (no schema: none) ------------------------------------------------


def _fills(schema: Any) -> list[str]:
    """The required properties of an object's schema that have a FILL value, in order."""
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        return []
    props = schema["properties"]
    required = schema.get("required") or []
    return [k for k in required if isinstance(props.get(k), dict) and FILL in props[k]]


def _property(schema: Any, key: str | None) -> Any:
    if not isinstance(schema, dict) or key is None:
        return None
    props = schema.get("properties")
    return props.get(key) if isinstance(props, dict) else None


def _value_schema(stack: list[_Frame], root: Any) -> Any:
    """The schema of the value that comes next."""
    if not stack:
        return root
    frame = stack[-1]
    if frame.opener == "{":
        return _property(frame.schema, frame.key)
    items = frame.schema.get("items") if isinstance(frame.schema, dict) else None
    return items


def _missing(schema: Any) -> str:
    """A value the text never reached: the schema's FILL, else null."""
    if isinstance(schema, dict) and FILL in schema:
        return json.dumps(schema[FILL], ensure_ascii=False)
    return "null"


def _next_key(frame: _Frame) -> str:
    """The key after a comma the cut left dangling: a required one not written yet, else any
    property not written yet, else the empty key."""
    schema = frame.schema if isinstance(frame.schema, dict) else {}
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    unwritten = [k for k in [*(schema.get("required") or []), *props] if k not in frame.keys]
    return unwritten[0] if unwritten else ""


def _key_rest(frame: _Frame, written: str) -> str:
    """The rest of a cut key: of the first property it begins (required ones first) that is
    not written yet."""
    schema = frame.schema if isinstance(frame.schema, dict) else {}
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    for key in [*(schema.get("required") or []), *props]:
        raw = json.dumps(key, ensure_ascii=False)[1:-1]
        if key not in frame.keys and raw.startswith(written):
            return raw[len(written) :]
    return ""


def _enum_rest(schema: Any, written: str) -> str:
    """The rest of a cut string that its schema's enum or const allows (the first that fits)."""
    if not isinstance(schema, dict):
        return ""
    values = schema.get("enum", [schema["const"]] if "const" in schema else [])
    for value in values if isinstance(values, list) else []:
        raw = json.dumps(value, ensure_ascii=False)[1:-1] if isinstance(value, str) else None
        if raw is not None and raw.startswith(written):
            return raw[len(written) :]
    return ""


def _decoded(quoted: str) -> str:
    try:
        value = json.loads(quoted)
    except json.JSONDecodeError:
        return quoted[1:-1]
    return value if isinstance(value, str) else quoted[1:-1]


# -- the text itself ------------------------------------------------------------------------


def _just_opened(text: str, at: int, opener: str) -> bool:
    """The last non-blank character before `at` is `opener`: an empty container."""
    return text[:at].rstrip().endswith(opener)


def _string_end(text: str, i: int) -> tuple[int, bool]:
    """Where the string starting at `i` (after its quote) ends, and whether it does."""
    n = len(text)
    while i < n:
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i + 1, True
        i += 1
    return n, False


def _string_tail(body: str) -> str:
    """What finishes an open string: a dangling escape completed, then the quote."""
    k = len(body) - len(body.rstrip("\\"))
    if k % 2 == 1:
        return 'n"'  # `\` alone: make it `\n`
    u = body.rfind("\\u")
    if u >= 0 and (u == 0 or body[u - 1] != "\\"):
        digits = body[u + 2 :]
        if len(digits) < 4:
            return "0" * (4 - len(digits)) + '"'
    return '"'


def _is_scalar(word: str) -> bool:
    return word in LITERALS or NUMBER.fullmatch(word) is not None


def _finish_scalar(word: str) -> str | None:
    """What completes a number or literal cut short: `tr` -> `ue`, `1.` -> `0`."""
    for literal in LITERALS:
        if literal.startswith(word):
            return literal[len(word) :]
    if _is_scalar(word) and not word.endswith((".", "e", "E", "+", "-")):
        return ""
    if _is_scalar(word + "0"):
        return "0"
    return None
