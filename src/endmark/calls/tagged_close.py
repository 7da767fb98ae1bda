"""Pieces of closing a tagged-arguments call cut short (`TaggedArgs.closing`): the rest of a
tag the cut fell inside, the argument a cut key tag begins, the rest of a cut value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from endmark.json_close import json_closing


def after_tag(text: str, tag: str) -> str | None:
    """What follows `tag` at the start of `text`; None if `text` does not start with it."""
    return text[len(tag) :] if text.startswith(tag) else None


def tag_rest(text: str, tag: str) -> str | None:
    """The rest of `tag`, when `text` is a start of it (empty: all of it)."""
    return tag[len(text) :] if tag.startswith(text) and len(text) < len(tag) else None


def cut_at(text: str, close: str) -> tuple[str, bool, str]:
    """`text` up to `close` and whether it came; when it did not, what is missing of a close
    tag the text ends inside (`Paris\n</para` -> `meter>`)."""
    before, found, after = text.partition(close)
    if found:
        return before, True, after
    for k in range(min(len(close) - 1, len(text)), 0, -1):
        if text.endswith(close[:k]):
            return text[:-k], False, close[k:]
    return text, False, close


def unwritten_all(params: Mapping[str, Any], written: list[str]) -> list[str]:
    props = params.get("properties")
    names = list(props) if isinstance(props, Mapping) else []
    required = [k for k in params.get("required") or [] if k in names]
    return [k for k in [*required, *names] if k not in written]


def unwritten(params: Mapping[str, Any], written: list[str]) -> str:
    """The key of an argument the cut began without naming: a required one not written."""
    return next(iter(unwritten_all(params, written)), "")


def empty_value(text: bool) -> str:
    """The value of an argument whose key was written and no more: empty text, or `null`."""
    return "" if text else "null"


def value_rest(value: str, schema: Any, text: bool) -> str | None:
    """What finishes a cut value: text as it is (an enum's value finished), JSON closed."""
    if text:
        values = schema.get("enum", []) if isinstance(schema, Mapping) else []
        fits = [v for v in values if isinstance(v, str) and v.startswith(value)]
        return fits[0][len(value) :] if fits and value else ""
    if not value.strip():
        return "null"
    return json_closing(value.strip())
