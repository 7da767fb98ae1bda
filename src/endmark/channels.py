"""Which channel each piece of a generation's text belongs to: content, reasoning or a tool call.

The one place that decides it (DESIGN.md, "Channels"), incrementally: text is pushed as it is
released, and what might be the start of a marker is held back until it is known, as stop
strings are. Markup (think tags, call markers) is structure, never content (ending rule 7).
Everything about one call format (its markers, its body, when a marker is a value's own text)
is the call strategy's (`calls/`); this is the state machine around it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from endmark.calls.base import CallStrategy, MalformedCall, ToolCall
from endmark.calls.think import ThinkFormat
from endmark.endings import StopMatcher
from endmark.tools import Tool

Channel = Literal["content", "reasoning"]


@dataclass(frozen=True)
class Piece:
    """Text of one channel, or one finished tool call."""

    channel: Channel | Literal["tool_call"]
    text: str = ""
    call: ToolCall | None = None


class ChannelSplitter:
    """One generation's text, split as it arrives. `push` returns what is decided so far;
    `finish` the rest, when the generation has ended."""

    def __init__(
        self,
        calls: CallStrategy | None = None,
        think: ThinkFormat | None = None,
        tools: Sequence[Tool] = (),
    ) -> None:
        self.calls_format = calls
        self.think = think
        self.tools = tuple(tools)  # what the request offers: the tagged kinds type arguments by it
        opens = [f.start for f in (think, calls) if f is not None]
        self._acts_on: dict[str, frozenset[str]] = {  # the marker texts each state acts on
            "content": frozenset(m for m in opens if m),
            "reasoning": frozenset([think.end] if think else []),
            "call": frozenset([calls.end] if calls and calls.end else []),
        }
        self.calls: list[ToolCall] = []
        self._state: Channel | Literal["call"] = "reasoning" if think and think.open else "content"
        self._matcher = self._matcher_for(self._state)
        self._body: list[str] = []
        self.cut_call = ""
        self._at_start = True  # nothing but whitespace written in the content channel yet

    def _matcher_for(self, state: str) -> StopMatcher:
        if state == "reasoning":
            assert self.think is not None
            return StopMatcher([self.think.end])
        if state == "call":
            end = self.calls_format.end if self.calls_format else ""
            return StopMatcher([end] if end else [])
        markers = [m.start for m in (self.think, self.calls_format) if m is not None and m.start]
        return StopMatcher(markers)

    def push(self, text: str) -> list[Piece]:
        out: list[Piece] = []
        while text:
            if self._state == "content" and self._bare_call(text):
                self._enter("call")
            released, marker = self._matcher.push(text)
            text = ""
            if self._state == "call":
                self._body.append(released)
            elif released:
                out.append(Piece(self._state, released))
                if self._state == "content" and released.strip():
                    self._at_start = False
            if marker is None:
                break
            text = self._matcher.after_stop  # what followed the marker in this push
            out += self._switch(marker)
        return out

    @property
    def markers(self) -> frozenset[str]:
        """The marker texts that act here and now; a marker out of place (a close with nothing
        open) is markup all the same, and is not written as content."""
        return self._acts_on[self._state]

    @property
    def in_reasoning(self) -> bool:
        return self._state == "reasoning"

    @property
    def in_call(self) -> bool:
        return self._state == "call"

    @property
    def call_text(self) -> str:
        """The open call's text so far (after its start marker)."""
        return "".join(self._body)

    def finish(self, cut: bool = False) -> list[Piece]:
        """Release what is held back; a call that runs to the end of the turn is parsed now.
        A call the generation was cut off in (`cut`: a token limit) is not a call: its text
        is kept in `cut_call`, never released as content; so is the start of a marker that
        the limit cut off (a `<tool_` after the last call)."""
        out: list[Piece] = []
        held = self._matcher.flush()
        if cut and held and self._state != "call":
            self.cut_call = held
        elif self._state == "call":
            self._body.append(held)
            body = self.call_text
            try:
                out += self._close_call()
            except MalformedCall:
                self.cut_call = body
        elif held:
            out.append(Piece(self._state, held))
        return out

    # -- the state machine ------------------------------------------------------------------

    def _bare_call(self, text: str) -> bool:
        fmt = self.calls_format
        return bool(fmt and self._at_start and fmt.opens_bare(text))

    def _switch(self, marker: str) -> list[Piece]:
        think, fmt = self.think, self.calls_format
        if self._state == "content" and think is not None and marker == think.start:
            self._enter("reasoning")
        elif self._state == "reasoning":
            self._enter("content")
        elif self._state == "content" and fmt is not None and marker == fmt.start:
            self._enter("call")
        elif self._state == "call":
            assert fmt is not None
            if fmt.inside_value("".join(self._body)):
                # inside an argument's value (a string the grammar lets run on): its text
                self._body.append(marker)
                self._matcher = self._matcher_for("call")
                return []
            return self._close_call()
        return []

    def _enter(self, state: Channel | Literal["call"]) -> None:
        self._state = state
        self._matcher = self._matcher_for(state)
        self._body = []

    def _close_call(self) -> list[Piece]:
        assert self.calls_format is not None
        body = "".join(self._body).strip()
        self._enter("content")
        if not body:
            return []
        calls = self.calls_format.parse(body, self.tools)
        self.calls += calls
        return [Piece("tool_call", call=c) for c in calls]
