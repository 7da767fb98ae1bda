"""Learning the tagged-arguments kind (`tagged_args.py`) from a template: probe calls are
rendered (`turn_diff.call_section`), and the texts around a call's name, keys and values are
its tags."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from endmark.calls.probe import PROBE_TOOL_NAME, probe_tool, up_to_turn_end, without_empty_thinking

PROBE_ARGS = {"endmark_key_a": "endmark-value-a", "endmark_key_b": "endmark-value-b"}
PROBE_TOOL = probe_tool({k: {"type": "string"} for k in PROBE_ARGS})
KEY = "\x00"  # in a value's close tag: the value's key (MiniMax-M3's `</city>`)
TYPED_ARGS = {"endmark_key_a": 7}
TYPED_TOOL = probe_tool({"endmark_key_a": {"type": "integer"}})
_TAG_AT_START = re.compile(r"^(<[^<>]+>|\[[^\[\]]+\])")
_TAG_AT_END = re.compile(r"(<[^<>]+>|\[[^\[\]]+\])$")
_OPEN_TAG = re.compile(r"^<[\w:-]+ [\w:-]+=\"?$")  # the name is in the tag: `<function name="`


def flat(arguments: Mapping[str, str]) -> list[str]:
    return [text for pair in arguments.items() for text in pair]


def between(text: str, needles: list[str]) -> list[str] | None:
    """The texts before, between and after `needles`, found in order in `text`."""
    parts, at = [], 0
    for needle in needles:
        found = text.find(needle, at)
        if found < 0:
            return None
        parts.append(text[at:found])
        at = found + len(needle)
    return [*parts, text[at:]]


def _common_suffix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return a[len(a) - n :]


def _from_a_boundary(tag: str) -> str:
    """`tag` from its first blank or bracket on: the `>` that closes a function's name and a
    value's close tag alike is theirs, not the key's (Qwen3-Coder's `>\n<parameter=`)."""
    starts = [tag.find(c) for c in "\n <[" if c in tag]
    return tag[min(starts, default=len(tag)) :]


def _close_tag(start: str) -> str:
    """The tag that closes `start` (`</tool_call>` for `<tool_call>` or `<tool_call name="`)."""
    name = re.match(r"<([^\s<>/=]+)", start)
    return f"</{name.group(1).rstrip('>')}>" if name else ""


def _namespace(body: str) -> str:
    """The text a template writes before every tag of a call (MiniMax-M3's `]<]minimax[>[`,
    one special token), or ""."""
    head = without_empty_thinking(body).lstrip()
    first = re.search(r"<[\w/]", head)
    space = head[: first.start()] if first else ""
    if not space or any(c.isspace() for c in space):
        return ""
    tags = re.findall(r"<[\w/]", head)
    return space if head.count(space + "<") == len(tags) else ""


def read_tags(body: str, end_texts: Collection[str]) -> tuple[str, ...] | None:
    """The tags of one rendered probe call, in `TaggedArgs`' order (see its `learn`); None:
    not this kind. A
    call may start with a whole tag (`<tool_call>`) or inside one that holds the name
    (MiniCPM5's `<function name="NAME">`). A value's close tag may name its key (MiniMax-M3's
    `<city>Paris</city>`), and every tag may follow a namespace: read without it, then
    written back before each tag."""
    space = _namespace(body)
    plain = body.replace(space, "") if space else body
    parts = between(plain, [PROBE_TOOL_NAME, *flat(PROBE_ARGS)])
    if parts is None:
        return None
    head, after_name, key_close, gap, key_close_b, tail = parts
    head = without_empty_thinking(head).lstrip()
    start = _TAG_AT_START.match(head) or _OPEN_TAG.match(head)
    key_open = _from_a_boundary(_common_suffix(after_name, gap))
    value_close = gap[: len(gap) - len(key_open)]
    key_a, key_b = list(PROBE_ARGS)
    value_close = value_close.replace(key_a, KEY)  # a close tag that names its key
    if not (start and key_open and key_close and value_close) or key_close != key_close_b:
        return None
    if not tail.startswith(value_close.replace(KEY, key_b)):
        return None
    rest = tail[len(value_close.replace(KEY, key_b)) :]
    rest = up_to_turn_end(rest, end_texts).rstrip()
    closing = _close_tag(start.group(0))  # what closes the start tag ends the calls
    if closing in rest:
        rest = rest[: rest.rindex(closing) + len(closing)]
    end = _TAG_AT_END.search(rest)
    if end is None:
        return None
    pieces = (
        start.group(0), end.group(0), head[start.end() :],
        after_name[: len(after_name) - len(key_open)], key_open, key_close, value_close,
        rest[: end.start()],
    )  # fmt: skip
    return tuple(p.replace("<", space + "<") for p in pieces) if space else pieces
