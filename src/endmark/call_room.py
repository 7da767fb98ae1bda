"""Room for a tool call near the token limit, decided before a token is kept.

Two places where a call the turn must (or may) make would otherwise be cut before its
arguments: thinking that runs on while a forced call waits for its end (it closes while the
call still fits), and a section of several calls (Kimi's, Mistral's) where the model would
begin another call that cannot fit (the section ends instead). Between sections the same rule
is `Generation._no_room_for_another_call`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


def section_end(
    channels: ChannelSplitter,
    written: bytes,
    left: int,
    room: Callable[[], int],
    tokenize: Callable[[str, str], list[int]],
) -> list[int] | None:
    """Between whole calls of a section, with `left` tokens that cannot hold another whole
    call (`room`: whichever tool it names), a token whose bytes (`written`, after those of an
    unfinished character) would go on to another call is not kept: the rest of the section's
    end marker is written instead ([] where the section runs to the end of the turn, which
    ends there). None: the token is kept (not between whole calls, room enough, or the start
    of the end marker)."""
    fmt = channels.calls_format
    if fmt is None or not channels.in_call or not channels.call_text.strip():
        return None
    close = channels.closing()
    if close is None or close.text or left >= room():
        return None
    # in bytes: a marker's character may be cut between tokens (DeepSeek's `▁` on SmolLM2)
    pending = (channels.held.encode() + written).lstrip()
    if pending and fmt.end and fmt.end.encode().startswith(pending):
        return None  # (a space may be a format's own `between`: the grammar tells, not here)
    return tokenize("", close.end) if close.end else []
