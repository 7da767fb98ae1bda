"""Which channel each piece of a generation's text belongs to: content, reasoning or a tool call.

The one place that decides it (DESIGN.md, "Channels"), incrementally: text is pushed as it is
released, and what might be the start of a marker is held back until it is known, as stop
strings are. Markup (think tags, call markers) is structure, never content (ending rule 7).
Everything about one call format (its markers, its body, when a marker is a value's own text,
how a cut call closes) is the call strategy's (`calls/`); this is the state machine around it.

A call is never dropped and never becomes content: one the turn cuts short is closed so that
it parses (`CallClose`), and a turn that must call (`required`) and made no call gets one.
Every call is checked against its tool's schema, and says what is wrong (`ToolCall.problem`).
A call written inside reasoning is reasoning text (ending rule 7): only the end of thinking
acts there.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from endmark.calls.base import CallClose, CallStrategy, MalformedCall, ToolCall
from endmark.calls.check import call_problem
from endmark.calls.think import ThinkFormat
from endmark.endings import StopMatcher
from endmark.json_close import Reach
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
        callable: Sequence[Tool] | None = None,
        required: bool = False,
    ) -> None:
        self.calls_format = calls
        self.think = think
        self.tools = tuple(tools)  # what the request offers: the tagged kinds type arguments by it
        self.callable = tuple(tools if callable is None else callable)  # what a call may name
        self.required = required  # the turn must make a call (`required`, a named tool)
        opens = self._content_markers(think, calls)
        self._acts_on: dict[str, frozenset[str]] = {  # the marker texts each state acts on
            "content": frozenset(opens),
            "reasoning": frozenset([think.end] if think else []),
            "call": frozenset([calls.end] if calls and calls.end else []),
        }
        self._inner = {state: _pieces(marks) for state, marks in self._acts_on.items()}
        self._inner["call"] |= frozenset(calls.body_tokens if calls else ())
        self.calls: list[ToolCall] = []
        self._state: Channel | Literal["call"] = "reasoning" if think and think.open else "content"
        self._matcher = self._matcher_for(self._state)
        self._body: list[str] = []
        self.cut_call = ""
        self._at_start = True  # nothing but whitespace written in the content channel yet
        self._head = ""  # the answer's beginning, held while it may open a bare call or not
        self.closed_by_endmark = False  # a call was cut short, and closed here
        self._closing: CallClose | None = None  # the close being written for the open call

    def with_think(self, think: ThinkFormat) -> ChannelSplitter:
        """The same calls, with thinking split out too."""
        return ChannelSplitter(self.calls_format, think, self.tools, self.callable, self.required)

    @staticmethod
    def _content_markers(think: ThinkFormat | None, calls: CallStrategy | None) -> list[str]:
        """What acts in content: thinking's start and its markup (its end too: a close with
        nothing open is markup all the same, never content), every start of a call, and a
        call's end marker that is a tag (`</tool_call>`, with a letter: not a `]` or a
        fence, which are an answer's own text too)."""
        marks = [think.start, think.end, *think.markup] if think else []
        marks += calls.starts if calls else []
        if calls and any(c.isalpha() for c in calls.end):
            marks.append(calls.end)
        return list(dict.fromkeys(m for m in marks if m))

    def _matcher_for(self, state: str) -> StopMatcher:
        if state == "reasoning":
            assert self.think is not None
            return StopMatcher([self.think.end])
        if state == "call":
            end = self.calls_format.end if self.calls_format else ""
            return StopMatcher([end] if end else [])
        return StopMatcher(self._content_markers(self.think, self.calls_format))

    def push(self, text: str) -> list[Piece]:
        fmt = self.calls_format
        if self._state == "content" and self._at_start and fmt is not None:
            head = self._head + text
            self._head = head if fmt.undecided_head(head) else ""
            if self._head:
                return []  # a call without a marker, or content: not told yet
            text = head
        return self._push(text)

    def _push(self, text: str) -> list[Piece]:
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
        return self._acts_on[self._state] | self._inner[self._state]

    @property
    def held(self) -> str:
        """The text held back for now (it may begin a marker, or a call without one)."""
        return self._head + self._matcher.held

    def peek_copy(self) -> ChannelSplitter:
        """A copy to push text into and see where it would lead, this one left as it is."""
        twin = copy.copy(self)
        twin._matcher, twin._body, twin.calls = copy.copy(self._matcher), list(self._body), []
        return twin

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

    def closing(self, here: bool = False) -> CallClose | None:
        """What closes the open call here (None: no call is open, or it cannot be closed).
        Text held back as a possible end marker is the call's own when it fits in a value;
        after a whole body it is the end marker's start. With `here`, held text that may
        begin either the end marker or another call (MiniMax's `<` after `</invoke>`) is the
        end marker's: the section ends where it stands."""
        fmt = self.calls_format
        if self._state != "call" or fmt is None:
            return None
        body, held = self.call_text, self._matcher.held
        if here and held:
            close = fmt.closing(body, self.callable)
            if close is not None and not close.text and close.end.startswith(held):
                return replace(close, end=close.end[len(held) :])
        close = fmt.closing(body + held, self.callable)
        if close is None and held:
            close = fmt.closing(body, self.callable)
            if close is None or close.text or not close.end.startswith(held):
                return None
            close = replace(close, end=close.end[len(held) :])
        return close

    def reaching(self) -> tuple[Reach, CallClose] | None:
        """What ends the open call's running value and names a required argument it lacks
        (`CallStrategy.reach`), with the closing that would follow it before the model writes
        the value; None where nothing is missing or text is held back."""
        fmt = self.calls_format
        if self._state != "call" or fmt is None or self._matcher.held:
            return None
        reach = fmt.reach(self.call_text, self.callable)
        if reach is None:
            return None
        after = fmt.closing(self.call_text + reach.text, self.callable)
        return None if after is None else (reach, after)

    def closing_written(self, close: CallClose) -> None:
        """The generation writes `close` now: the call it ends was closed by endmark."""
        self._closing = close

    def finish(self, cut: bool = False) -> list[Piece]:
        """Release what is held back. A call still open is parsed now, and closed first if it
        was cut short; the start of a marker that the limit cut off (`cut`) is no content
        (kept in `cut_call`). A turn that must call and made none gets one here."""
        out: list[Piece] = []
        if self._head:  # the answer ended before it told: text, or a call's start cut off
            head, self._head = self._head, ""
            if cut:
                self.cut_call = head
            else:
                out += self._push(head)
        if self._state == "call":
            out += self._finish_call(cut)
        else:
            held = self._matcher.flush()
            if cut and held:
                self.cut_call = held
            elif held:
                out.append(Piece(self._state, held))
        if self.required and not self.calls and self.calls_format and self.callable:
            close = self.calls_format.closing("", self.callable)
            if close is not None:
                note = "the turn ended before the model began a call: endmark wrote this one"
                out += self._close_call(close.text, close, note)
        return out

    def _finish_call(self, cut: bool = False) -> list[Piece]:
        """The open call at the end of the turn: whole (one that runs to the end of the turn,
        or one endmark closed but for its marker), else closed here; the text held back is
        the call's own, or the start of its end marker. Cut inside its end marker's
        character (a `｜` of DeepSeek's, three tokens on SmolLM2), the body is whole without
        that marker's start and the character's replacement."""
        close, written = self.closing(), self._closing
        body, held = self.call_text, self._matcher.flush()
        if close is None or not close.text:  # whole: as it is, or without a cut marker
            tries = [(body + held, written), (body, written)]
        else:
            tries = [(body + held + close.text, close), (body + close.text, close)]
        end = self.calls_format.end if self.calls_format else ""
        whole = (body + held).rstrip("\ufffd")
        marker = max((k for k in range(1, len(end)) if whole.endswith(end[:k])), default=0)
        if cut and marker:
            tries.append((whole[:-marker], written))
        for text, closed in tries:
            try:
                if text.strip():
                    return self._close_call(text, closed)
            except MalformedCall:
                continue
        self.cut_call = body + held
        self._enter("content")
        return []

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
        elif self._state == "content" and fmt is not None and marker in fmt.starts:
            self._enter("call")
        elif self._state == "call":
            assert fmt is not None
            if fmt.inside_value("".join(self._body)):
                # inside an argument's value (a string the grammar lets run on): its text
                self._body.append(marker)
                self._matcher = self._matcher_for("call")
                return []
            return self._close_call("".join(self._body), self._closing)
        return []

    def _enter(self, state: Channel | Literal["call"]) -> None:
        self._state = state
        self._matcher = self._matcher_for(state)
        self._body = []

    def _close_call(self, body: str, close: CallClose | None = None, note: str = "") -> list[Piece]:
        """The calls in `body`, each checked against its tool; `close`: endmark closed it."""
        assert self.calls_format is not None
        self._enter("content")
        self._closing = None
        body = body.strip()
        if not body:
            return []
        calls = self.calls_format.parse(body, self.tools)
        if close is not None:
            self.closed_by_endmark = True
            if close.guessed and not note:
                note = "the model had not named the tool yet: endmark chose it"
        checked = []
        for i, call in enumerate(calls):
            problems = [call_problem(call.name, call.arguments, self.tools)]
            if i == len(calls) - 1 and note:
                problems = [note, *problems]
            cut = close is not None and i == len(calls) - 1
            checked.append(replace(call, problem="; ".join(p for p in problems if p), cut=cut))
        self.calls += checked
        return [Piece("tool_call", call=c) for c in checked]


def _pieces(markers: frozenset[str]) -> frozenset[str]:
    """What a special token inside a marker of several tags may be: its texts of two
    characters or more (harmony's `<|channel|>` in `<|channel|>analysis<|message|>`,
    MiniMax-M3's `]<]minimax[>[` and `<tool_call>` in `]<]minimax[>[<tool_call>`). Each
    must reach the splitter as its text; a marker of one tag does already."""
    glued = [m for m in markers if "<" in m[1:] or "[" in m[1:]]
    return frozenset(
        m[i:j] for m in glued for i in range(len(m)) for j in range(i + 2, len(m) + 1)
        if j - i < len(m)
    )  # fmt: skip
