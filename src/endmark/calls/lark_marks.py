"""Markup in a Lark grammar, written as the model writes it: a marker text may hold special
tokens among plain text (gpt-oss's `<|channel|>commentary to=functions.`, a wrapper's
`</invoke>\\n<invoke name="`), and each special token must be matched as the token it is."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from endmark.calls.lark import literal


def marked(text: str, control: Mapping[str, int]) -> str:
    """`text` as a sequence of Lark items: its special tokens' texts as themselves (see
    `lark.literal`), the text between them quoted. `""` for an empty text."""
    names = sorted((t for t in control if t and t in text), key=len, reverse=True)
    if not names:
        return json.dumps(text)
    pieces = re.split("(" + "|".join(re.escape(n) for n in names) + ")", text)
    items = [literal(p, control) if p in control else json.dumps(p) for p in pieces if p]
    return " ".join(items) or '""'
