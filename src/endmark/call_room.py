"""Room for a tool call near the token limit, decided before a token is kept.

Two places where a call the turn must (or may) make would otherwise be cut before its
arguments: thinking that runs on while a forced call waits for its end (it closes while the
call still fits), and a section of several calls (Kimi's, Mistral's) where the model would
begin another call that cannot fit (the section ends instead). Between sections the same rule
is `Generation._no_room_for_another_call`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from endmark.calls.base import CallClose, MalformedCall
from endmark.channels import ChannelSplitter

CALL_ROOM = 8  # tokens a forced call's values get beyond its room (`room`), after thinking


def thinking_must_close(
    channels: ChannelSplitter | None,
    think_close: Sequence[int],
    answer_waits: bool,
    left: int,
    room: Callable[[], int],
) -> bool:
    """Thinking, with a forced call waiting for its end (`answer_waits`), and `left` tokens
    before the limit (negative: none): once they are down to the close of thinking, the
    room a call needs and more for its values, the thinking closes (as a spent reasoning budget
    closes it), so that the call is written within the limit rather than never begun."""
    if channels is None or not channels.in_reasoning or not think_close or not answer_waits:
        return False
    if not channels.required or channels.calls_format is None or not channels.callable:
        return False
    return 0 <= left <= len(think_close) + room() + CALL_ROOM


def begins_another_call(channels: ChannelSplitter, written: bytes, close: CallClose) -> bool:
    """Whether `written` goes on from the open call (closed as it stands by `close`) into
    another one (Command R's `},` in a JSON list): closed, the calls written with it are more
    than those without."""
    fmt = channels.calls_format
    assert fmt is not None
    twin = channels.peek_copy()
    try:  # (pushed, a call the token ends is parsed: it may not be one)
        twin.push(written.decode(errors="ignore"))
        after = twin.closing()
        if after is None or not twin.in_call:
            return False
        before = fmt.parse(channels.call_text + channels.held + close.text, channels.tools)
        later = fmt.parse(twin.call_text + twin.held + after.text, channels.tools)
    except MalformedCall:
        return False
    return len(later) > len(before)


def section_end(
    channels: ChannelSplitter,
    written: bytes,
    left: int,
    room: Callable[[], int],
    tokenize: Callable[[str, str], list[int]],
) -> list[int] | None:
    """Between whole calls of a section (or at a token that finishes one and goes on), with
    `left` tokens that cannot hold another whole call (`room`: whichever tool it names), a
    token whose bytes (`written`, after those of an unfinished character) would go on to
    another call is not kept: what finishes the call and the rest of the section's end marker
    are written instead ([] where the section runs to the end of the turn, which
    ends there). None: the token is kept (not between whole calls, room enough, or the start
    of the end marker)."""
    fmt = channels.calls_format
    if fmt is None or not channels.in_call or not channels.call_text.strip():
        return None
    if left >= room():
        return None
    # in bytes: a marker's character may be cut between tokens (DeepSeek's `▁` on SmolLM2)
    pending = (channels.held.encode() + written).lstrip()
    if pending and fmt.end and fmt.end.encode().startswith(pending):
        return None  # (a space may be a format's own `between`: the grammar tells, not here)
    close = channels.closing(here=True)
    if close is None:
        return None
    if close.text and not begins_another_call(channels, written, close):
        return None  # inside a call, or closing it: the limit's own closing sees to it
    return tokenize(close.text, close.end) if close.text or close.end else []
