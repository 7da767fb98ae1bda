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
from endmark.json_close import json_closing

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
    short_ids: bool = False  # call ids of 9 letters and digits, which Mistral's templates demand


HERMES = CallFormat("hermes", "<tool_call>", "</tool_call>")
LLAMA3 = CallFormat("llama3", "<|python_tag|>", bare_json=True, args_key="parameters")
MISTRAL = CallFormat("mistral", "[TOOL_CALLS]", array=True, short_ids=True)
GENERIC = CallFormat("generic", "<tool_call>", "</tool_call>")  # what endmark asks for


@dataclass(frozen=True)
class ThinkFormat:
    """The markers around reasoning; `open` when the generation prompt already opened it."""

    start: str = "<think>"
    end: str = "</think>"
    open: bool = False


def new_call_id(short: bool = False) -> str:
    """OpenAI's `call_...`, or the 9 letters and digits that Mistral's templates check for."""
    return uuid.uuid4().hex[:9] if short else f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # a JSON text, as OpenAI's `function.arguments`
    id: str = field(default_factory=new_call_id)

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


class _NumberText(str):
    """A JSON number as the model wrote it: read as a float, `1e999` would come back out as
    `Infinity`, which is not JSON; read as an int, 5000 digits would not read at all."""


def _json_text(value: Any) -> str:
    """`value` as JSON, its numbers exactly as they were written."""
    if isinstance(value, _NumberText):
        return str(value)
    if isinstance(value, dict):
        items = (f"{json.dumps(k, ensure_ascii=False)}: {_json_text(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_json_text(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def parse_calls(body: str, fmt: CallFormat) -> list[ToolCall]:
    """The calls in one call body: `{"name", "arguments" | "parameters"}`, or a list of them."""
    try:
        data = json.loads(body, parse_float=_NumberText, parse_int=_NumberText)
    except json.JSONDecodeError as exc:
        raise MalformedCall(f"a {fmt.name} tool call is not JSON: {exc.msg}") from None
    items = data if isinstance(data, list) else [data]
    calls = []
    for item in items:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or isinstance(name, _NumberText):
            raise MalformedCall(f"a {fmt.name} tool call has no name")
        args = item.get("arguments", item.get("parameters", {}))
        plain_text = isinstance(args, str) and not isinstance(args, _NumberText)
        text = args if plain_text else _json_text(args)
        calls.append(ToolCall(name, text, new_call_id(fmt.short_ids)))
    return calls


class ChannelSplitter:
    """One generation's text, split as it arrives. `push` returns what is decided so far;
    `finish` the rest, when the generation has ended."""

    def __init__(self, calls: CallFormat | None = None, think: ThinkFormat | None = None) -> None:
        self.calls_format = calls
        self.think = think
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
            if json_closing("".join(self._body).strip()):
                # inside the call's JSON (a string that the grammar lets run on): its text
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
        calls = parse_calls(body, self.calls_format)
        self.calls += calls
        return [Piece("tool_call", call=c) for c in calls]
