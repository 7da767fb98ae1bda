"""Literal values as templates write arguments (`literal_args.py`): gemma-4's `<|"|>text<|"|>`,
Python's `'text'`, `True`, `None`, JSON's; objects with bare or quoted keys, lists. Read
leniently, as a model may mix them; `Cut` where a text ends inside a value."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any

from endmark.calls.base import MalformedCall

_KEY = re.compile(r"\s*([A-Za-z_][\w\-]*)")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")


class Cut(Exception):
    """The text ends inside what is being read."""


@dataclass(frozen=True)
class Syntax:
    """How a template writes a call's arguments: around them, between a key and its value,
    between pairs, around a string; its words for true, false and null; keys sorted or not."""

    args_open: str
    args_close: str
    key_sep: str
    pair_sep: str
    quote: str
    words: tuple[str, str, str] = ("true", "false", "null")
    sorted_keys: bool = False

    def word_values(self) -> dict[str, Any]:
        true, false, null = self.words
        common = {"true": True, "false": False, "null": None, "True": True, "False": False,
                  "None": None}  # fmt: skip
        return {**common, true: True, false: False, null: None}

    def written(self, value: Any) -> str:
        """A value as the template writes it (a top-level one; containers as JSON)."""
        if isinstance(value, str):
            return f"{self.quote}{value}{self.quote}"
        if isinstance(value, bool) or value is None:
            return self.words[0 if value is True else 1 if value is False else 2]
        return json.dumps(value)


def read_value(syntax: Syntax, text: str, at: int) -> tuple[Any, int]:
    """The value written at `at` (after blanks), and where it ends. Raises Cut where the
    text ends inside it, MalformedCall where it is none."""
    while at < len(text) and text[at] in " \n\t":
        at += 1
    if at >= len(text):
        raise Cut
    quotes = (syntax.quote, '"', "'")
    quote = next((q for q in quotes if text.startswith(q, at)), "")
    if quote:
        return read_string(text, at, quote)
    if any(q.startswith(text[at:]) for q in quotes):
        raise Cut  # a quote cut short
    if text[at] in "{[":
        return read_container(syntax, text, at)
    for word, value in sorted(syntax.word_values().items(), key=lambda w: -len(w[0])):
        if text.startswith(word, at):
            return value, at + len(word)
        if word.startswith(text[at:]):
            raise Cut
    number = _NUMBER.match(text, at)
    if number is None:
        raise MalformedCall(f"a value that is none: {text[at:]!r}")
    if number.end() == len(text):
        raise Cut  # more digits may come
    raw = number.group(0)
    return (float(raw) if number.group(1) or number.group(2) else int(raw)), number.end()


def read_container(syntax: Syntax, text: str, at: int) -> tuple[Any, int]:
    """An object (keys bare or quoted, `:` or `=` before a value) or a list."""
    is_object, close = text[at] == "{", "}" if text[at] == "{" else "]"
    items: list[Any] = []
    pairs: dict[str, Any] = {}
    at += 1
    while True:
        at = skip(text, at, " \n\t,")
        if at >= len(text):
            raise Cut
        if text[at] == close:
            return (pairs if is_object else items), at + 1
        if not is_object:
            value, at = read_value(syntax, text, at)
            items.append(value)
            continue
        key, at = read_key(syntax, text, at)
        at = skip(text, at, " \n\t")
        if at >= len(text):
            raise Cut
        if text[at] not in ":=":
            raise MalformedCall("a key without a value")
        pairs[key], at = read_value(syntax, text, at + 1)


def read_key(syntax: Syntax, text: str, at: int) -> tuple[str, int]:
    at = skip(text, at, " \n\t")
    quote = next((q for q in (syntax.quote, '"', "'") if text.startswith(q, at)), "")
    if quote:
        key, at = read_string(text, at, quote)
        return str(key), at
    found = _KEY.match(text, at)
    if found is None:
        raise Cut if at >= len(text) else MalformedCall("no key")
    if found.end() == len(text):
        raise Cut
    return found.group(1), found.end()


def skip(text: str, at: int, chars: str) -> int:
    while at < len(text) and text[at] in chars:
        at += 1
    return at


def _as_written(inner: str, quote: str) -> str:
    """A quoted string's text that neither JSON nor Python reads (LFM2.5 on SmolLM2 wrote a
    newline inside `'...'`, which its grammar allows): its escaped quotes and backslashes
    undone, the rest as it is."""
    return re.sub(r"\\(.)", lambda m: m.group(1) if m.group(1) in (quote, "\\") else m.group(0),
                  inner)  # fmt: skip


def read_string(text: str, at: int, quote: str) -> tuple[str, int]:
    """A string opened by `quote` at `at`: JSON's and Python's with their escapes, any other
    quote (gemma's `<|"|>`) as it is written up to the next one."""
    start = at + len(quote)
    if quote in ('"', "'"):
        i = start
        while i < len(text):
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == quote:
                raw = text[at : i + 1]
                try:
                    value = json.loads(raw) if quote == '"' else ast.literal_eval(raw)
                except (ValueError, SyntaxError):  # a raw newline, an unknown escape: as written
                    value = _as_written(raw[1:-1], quote)
                return str(value), i + 1
            i += 1
        raise Cut
    end = text.find(quote, start)
    if end < 0:
        raise Cut
    return text[start:end], end + len(quote)


def in_string(rest: str, quote: str) -> bool:
    """Whether a cut top-level value `rest` ends inside its string."""
    text = rest.lstrip()
    return any(text.startswith(q) and len(text) >= len(q) for q in (quote, '"', "'"))


def closers(text: str) -> str:
    """What closes the containers (and a string) open at the end of `text`."""
    stack: list[str] = []
    in_string = ""
    i = 0
    while i < len(text):
        c = text[i]
        if in_string:
            if c == "\\":
                i += 1
            elif c == in_string:
                in_string = ""
        elif c in "\"'":
            in_string = c
        elif c in "{[":
            stack.append("}" if c == "{" else "]")
        elif c in "}]" and stack:
            stack.pop()
        i += 1
    fill = "null" if text.rstrip().endswith((":", "=")) else ""
    return in_string + fill + "".join(reversed(stack))
