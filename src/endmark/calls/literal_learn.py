"""Learning the literal-arguments kind (`literal_args.py`) from a template: one probe call with
a value of each type, its keys given unsorted, and the same call twice, are rendered
(`turn_diff.call_section`); the texts around the name, keys and values are the syntax."""

from __future__ import annotations

import json
import re
from collections.abc import Collection

from endmark.calls.diff import MARKER
from endmark.calls.literal_args import LiteralArgs, Syntax
from endmark.calls.probe import PROBE_TOOL_NAME, probe_tool, up_to_turn_end
from endmark.calls.turn_diff import call_section
from endmark.chat import ChatTemplate

TEXT = "endmark-literal-text"
# given unsorted: a template that sorts keys writes `endmark_a` first
PROBE_ARGS = {"endmark_b": TEXT, "endmark_a": 7, "endmark_c": True, "endmark_d": None}
# a special token's text, gemma-4's half-open ones too (`<|tool_call>`, `<tool_call|>`)
MARK = re.compile(r"<[|｜]?[A-Za-z_][\w:.\-]*[|｜]?>|" + MARKER.pattern)
TYPES = {"endmark_b": "string", "endmark_a": "integer", "endmark_c": "boolean", "endmark_d": "null"}
PROBE_TOOL = probe_tool({key: {"type": kind} for key, kind in TYPES.items()})


def learn_literal_args(template: ChatTemplate, end_texts: Collection[str]) -> LiteralArgs | None:
    one = call_section(template, PROBE_TOOL, [PROBE_ARGS])
    if not one or "{" + '"endmark_' in one.replace(" ", "") or '"endmark_b": ' in one:
        return None  # JSON arguments: another kind's
    one = up_to_turn_end(one, end_texts).strip()
    named = one.find(PROBE_TOOL_NAME)
    keys = sorted(PROBE_ARGS, key=lambda k: one.find(k, named))
    if named < 0 or any(one.find(k, named) < 0 for k in keys):
        return None
    head = one[:named]
    at = {k: one.find(k, named) for k in keys}
    args_open = one[named + len(PROBE_TOOL_NAME) : at[keys[0]]]
    after_a = one[at["endmark_a"] + len("endmark_a") :]
    if "7" not in after_a:
        return None
    key_sep = after_a[: after_a.index("7")]
    after_b = one[at["endmark_b"] + len("endmark_b") :]
    if not after_b.startswith(key_sep) or TEXT not in after_b:
        return None
    quote = after_b[len(key_sep) : after_b.index(TEXT)]
    if not quote or not after_b[after_b.index(TEXT) + len(TEXT) :].startswith(quote):
        return None
    written = {k: _value_text(one, at[k] + len(k) + len(key_sep), keys, i, at)
               for i, k in enumerate(keys)}  # fmt: skip
    pair_sep = _pair_sep(one, keys, at, key_sep, written)
    if pair_sep is None or not args_open or not key_sep:
        return None
    last = keys[-1]
    tail = one[at[last] + len(last) + len(key_sep) + len(written[last]) :]
    words = (written["endmark_c"], _false_word(written["endmark_c"]), written["endmark_d"])
    found = MARK.match(head)
    start = found.group(0) if found else head
    call_open = head[len(start) :]
    two = call_section(template, PROBE_TOOL, [PROBE_ARGS, PROBE_ARGS]) or ""
    second = two.find(PROBE_TOOL_NAME, two.find(PROBE_TOOL_NAME) + 1)
    mid = two[:second]
    end_of_first = mid.rfind(written[last]) + len(written[last]) if written[last] else -1
    mid = mid[end_of_first:] if end_of_first > 0 else ""
    if mid and mid.endswith(head):  # each call in its own start ... end
        close_and_end = mid[: len(mid) - len(head)]
        marker = MARK.search(close_and_end)
        if marker is None:
            return None
        args_close, end = close_and_end[: marker.start()], close_and_end[marker.start() :].strip()
        between = ""
    else:
        start, call_open = head, ""
        args_close = _shared_start(tail, mid) if mid else tail[:1]
        between = mid[len(args_close) :] if mid else ""
        end = tail[len(args_close) :].strip()
    syntax = Syntax(args_open, args_close, key_sep, pair_sep, quote, words,
                    keys[0] == "endmark_a")  # fmt: skip
    learned = LiteralArgs("learned", start.strip(), end, call_open, syntax, between)
    body = one[len(start.strip()) :]
    body = body[: body.rindex(end)] if end and end in body else body
    try:
        calls = learned.parse(body)
    except Exception:  # noqa: BLE001 - the probe is not this kind's
        return None
    if [(c.name, json.loads(c.arguments)) for c in calls] != [(PROBE_TOOL_NAME, PROBE_ARGS)]:
        return None
    return learned


def _value_text(one: str, value_at: int, keys: list[str], i: int, at: dict[str, int]) -> str:
    """The text of the value written at `value_at`: up to the next key's pair separator (the
    longest blank-free run that the next key's text is preceded by), or, for the last, the
    run of word characters."""
    if i + 1 < len(keys):
        span = one[value_at : at[keys[i + 1]]]
        cut = min((span.find(c) for c in ",; \n" if c in span), default=len(span))
        return span[:cut]
    rest = one[value_at:]
    n = 0
    while n < len(rest) and (rest[n].isalnum() or rest[n] in "_-<|\"'>"):
        n += 1
    return rest[:n]


def _pair_sep(one: str, keys: list[str], at: dict[str, int], key_sep: str,
              written: dict[str, str]) -> str | None:  # fmt: skip
    seps = {one[at[k] + len(k) + len(key_sep) + len(written[k]) : at[keys[i + 1]]]
            for i, k in enumerate(keys[:-1])}  # fmt: skip
    return seps.pop() if len(seps) == 1 else None


def _false_word(true: str) -> str:
    return {"true": "false", "True": "False", "TRUE": "FALSE"}.get(true, "false")


def _shared_start(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    shared = a[:n]
    marker = MARK.search(shared)
    return shared[: marker.start()] if marker else shared
