"""Pieces of llguidance Lark grammars that every call format builds on."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from endmark.constraints import closed_objects

MAX_STRING = 1024  # characters in a string argument whose schema sets no bound
GRAMMAR_HEAD = "%llguidance {}\n"
NL = '"\\n"?'  # at most one line break around a call, as the templates write them


def closed(schema: Any) -> Any:
    """A tool's parameters as a constraint reads them: objects closed as every schema is
    (`constraints.closed_objects`), and a free string held to MAX_STRING characters unless
    the schema bounds it, so that a small model cannot ramble in one argument forever."""
    return closed_objects(schema, max_string=MAX_STRING)


def literal(text: str, control: Mapping[str, int]) -> str:
    """A marker in llguidance's Lark syntax: a special token as itself (`<|name|>`, or by id
    for one not written in angle brackets, like Mistral's `[TOOL_CALLS]`), else quoted text."""
    if text not in control:
        return json.dumps(text)
    if text.startswith("<") and text.endswith(">"):
        return text
    return f"<[{control[text]}]>"


_REGEX_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "/": "\\/"}


def regex_text(text: str) -> str:
    """`text` matched literally inside a Lark `/regex/`."""
    out = []
    for ch in text:
        if ch in _REGEX_ESCAPES:
            out.append(_REGEX_ESCAPES[ch])
        elif ch in "\\.+*?()|[]{}^$":
            out.append("\\" + ch)
        else:  # `<` and `>` stay as they are: escaped, they are word boundaries
            out.append(ch)
    return "".join(out)


def text_until(rule: str, close: str, min_chars: int = 0, max_chars: int = MAX_STRING) -> str:
    """A Lark rule: free text of `min_chars..max_chars` characters, then `close`. The rule is
    lazy, so the text ends at the first `close` (and holds none); once it is `max_chars`
    long, only `close` may follow. (A regex that excludes `close` with `~` instead is too
    complex for llguidance's lexer once it is bounded.)"""
    return f"{rule}[lazy]: /(?s:.{{{min_chars},{max_chars}}}){regex_text(close)}/"
