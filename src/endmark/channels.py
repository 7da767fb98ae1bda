"""Which channel each piece of a generation's text belongs to: content, reasoning or a tool call.

The one place that decides it (DESIGN.md, "Channels"), incrementally: text is pushed as it is
released, and what might be the start of a marker is held back until it is known, as stop
strings are. Markup (think tags, call markers) is structure, never content (ending rule 7).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from endmark.endings import StopMatcher

Channel = Literal["content", "reasoning"]


@dataclass(frozen=True)
class CallFormat:
    """How a model writes tool calls.

    `start` opens a call and `end` closes it; an empty `end` means the call runs to the end of
    the turn. The body is one JSON object per call, or a JSON array of them (`array`). With
    `bare_json`, a turn that starts with `{` is a call even without `start` (Llama 3.x)."""

    name: str
    start: str
    end: str = ""
    array: bool = False
    bare_json: bool = False
    args_key: str = "arguments"  # Llama 3.x writes "parameters"


HERMES = CallFormat("hermes", "<tool_call>", "</tool_call>")
LLAMA3 = CallFormat("llama3", "<|python_tag|>", bare_json=True, args_key="parameters")
MISTRAL = CallFormat("mistral", "[TOOL_CALLS]", array=True)
GENERIC = CallFormat("generic", "<tool_call>", "</tool_call>")  # what endmark asks for


@dataclass(frozen=True)
class ThinkFormat:
    """The markers around reasoning; `open` when the generation prompt already opened it."""

    start: str = "<think>"
    end: str = "</think>"
    open: bool = False


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # a JSON text, as OpenAI's `function.arguments`
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def as_openai(self, index: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": "function"}
        if index is not None:
            out["index"] = index
        out["function"] = {"name": self.name, "arguments": self.arguments}
        return out


@dataclass(frozen=True)
class Piece:
    """Text of one channel, or one finished tool call."""

    channel: Channel | Literal["tool_call"]
    text: str = ""
    call: ToolCall | None = None


class MalformedCall(ValueError):
    """The text between call markers is not a call (only possible without a constraint)."""


def parse_calls(body: str, fmt: CallFormat) -> list[ToolCall]:
    """The calls in one call body: `{"name", "arguments" | "parameters"}`, or a list of them."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise MalformedCall(f"a {fmt.name} tool call is not JSON: {exc.msg}") from None
    items = data if isinstance(data, list) else [data]
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise MalformedCall(f"a {fmt.name} tool call has no name")
        args = item.get("arguments", item.get("parameters", {}))
        text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
        calls.append(ToolCall(item["name"], text))
    return calls


class ChannelSplitter:
    """One generation's text, split as it arrives. `push` returns what is decided so far;
    `finish` the rest, when the generation has ended."""

    def __init__(self, calls: CallFormat | None = None, think: ThinkFormat | None = None) -> None:
        self.calls_format = calls
        self.think = think
        found = [think.start, think.end] if think else []
        if calls is not None:
            found += [calls.start, calls.end]
        self.markers = frozenset(m for m in found if m)  # every marker text it acts on
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
            if self._state == "content" and self._bare_json_call(text):
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
    def in_reasoning(self) -> bool:
        return self._state == "reasoning"

    @property
    def in_call(self) -> bool:
        return self._state == "call"

    @property
    def call_text(self) -> str:
        """The open call's text so far (after its start marker)."""
        return "".join(self._body)

    def finish(self) -> list[Piece]:
        """Release what is held back; a call that runs to the end of the turn is parsed now.
        A call the generation was cut off in (a token limit) is not a call: its text is kept
        in `cut_call`, never released as content."""
        out: list[Piece] = []
        held = self._matcher.flush()
        if self._state == "call":
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

    def _bare_json_call(self, text: str) -> bool:
        fmt = self.calls_format
        return bool(fmt and fmt.bare_json and self._at_start and text.lstrip().startswith("{"))

    def _switch(self, marker: str) -> list[Piece]:
        think, fmt = self.think, self.calls_format
        if self._state == "content" and think is not None and marker == think.start:
            self._enter("reasoning")
        elif self._state == "reasoning":
            self._enter("content")
        elif self._state == "content" and fmt is not None and marker == fmt.start:
            self._enter("call")
        elif self._state == "call":
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
        calls = parse_calls(body, self.calls_format)
        self.calls += calls
        return [Piece("tool_call", call=c) for c in calls]
