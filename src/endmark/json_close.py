"""The shortest text that makes a cut JSON text parse.

When the token budget runs out under a JSON schema or `json_object`, the answer would be cut
mid-value and fail `json.loads`. Just before that, generation writes this instead: the open
string, number or literal finished, a missing value as `null`, and every open array and
object closed. It is JSON, not always valid against the schema (a required key may still be
missing): the response says so.
"""

from __future__ import annotations

import re

LITERALS = ("true", "false", "null")
NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def json_closing(text: str) -> str | None:
    """What to append to `text` (a prefix of one JSON value) so that it parses; "" when it
    already does, None when it is not a JSON prefix at all."""
    stack: list[str] = []  # "{" or "["
    # what the innermost container expects next: value, key, colon, comma (after a value)
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
                tail = _string_tail(text[i + 1 :])
                after = ": null" if expect == "key" else ""
                return tail + after + _closers(stack)
            if expect not in ("value", "key"):
                return None
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
            stack.append(c)
            expect = "key" if c == "{" else "value"
            i += 1
            continue
        if c in "}]":
            if not stack or (c == "}") != (stack[-1] == "{"):
                return None
            if expect == "key" and not _just_opened(text, i, "{"):
                return None  # `{"a": 1, }`: no key after a comma
            stack.pop()
            expect, i = "comma", i + 1
            continue
        if c == ",":
            if expect != "comma" or not stack:
                return None
            expect = "key" if stack[-1] == "{" else "value"
            i += 1
            continue
        if expect != "value":
            return None
        j = i
        while j < n and text[j] not in ' \t\r\n,]}:"{[':
            j += 1
        word = text[i:j]
        if j == n:  # the text ends inside this number or literal
            done = _finish_scalar(word)
            return None if done is None else done + _closers(stack)
        if not _is_scalar(word):
            return None
        expect, i = "comma", j
    if not stack and expect == "comma":
        return ""
    if expect == "value":
        missing = "" if stack and _just_opened(text, n, "[") else "null"
        return missing + _closers(stack)
    if expect == "key":
        return ('"": null' if not _just_opened(text, n, "{") else "") + _closers(stack)
    if expect == "colon":
        return ": null" + _closers(stack)
    return _closers(stack)


def _closers(stack: list[str]) -> str:
    return "".join("}" if c == "{" else "]" for c in reversed(stack))


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
