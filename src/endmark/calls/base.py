"""What every tool-call format is: a strategy that learns itself from a chat template, tells
the channel splitter where a call starts and ends, parses a finished call, builds the grammar
that makes a call valid, and writes calls back into a history for the template.

One class per format kind (DESIGN.md, `calls/`); llama.cpp's auto-parser learns the same kinds
by diffing template renders (`common/chat-auto-parser.h`), and so do the kinds' `learn`s.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from endmark.chat import ChatTemplate
from endmark.json_close import Reach
from endmark.tools import Tool, ToolRequest

Messages = Sequence[Mapping[str, Any]]


def new_call_id(short: bool = False) -> str:
    """OpenAI's `call_...`, or the 9 letters and digits that Mistral's templates check for."""
    return uuid.uuid4().hex[:9] if short else f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # a JSON text, as OpenAI's `function.arguments`
    id: str = field(default_factory=new_call_id)
    # why it may not do what its tool expects: its arguments fail the tool's schema, or
    # endmark closed or wrote it (`calls/check.py`); "" when nothing is wrong
    problem: str = field(default="", compare=False)
    cut: bool = field(default=False, compare=False)  # cut short, and closed by endmark

    def as_openai(self, index: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": "function"}
        if index is not None:
            out["index"] = index
        out["function"] = {"name": self.name, "arguments": self.arguments}
        return out


@dataclass(frozen=True)
class CallClose:
    """What closes a call cut short: `text` finishes its body (the open string, value and
    object), then `end`, the rest of its end marker, is written. `guessed`: the model had
    not written enough of the tool's name to tell which, and endmark chose; `boundary`: the
    body was whole up to here (only closers follow), so another argument could still fit."""

    text: str
    end: str
    guessed: bool = False
    boundary: bool = False


class MalformedCall(ValueError):
    """The text between call markers is not a call (only possible without a constraint)."""


class CallStrategy(ABC):
    """How one model writes tool calls, and everything that follows from it.

    `start` opens a call and `end` closes it (an empty `end`: the call runs to the end of the
    turn). The channel splitter holds back what may be the start of either, hands the text in
    between (the call's *body*) to `parse`, and asks `inside_value` whether an `end` it meets
    belongs to the body's own text (a string argument may hold any text)."""

    kind: ClassVar[str]  # the format kind: json_tags, bare_json, json_array, tagged_args, ...
    name: str  # this format's name: a known family's (hermes, llama3, ...) or "learned"
    start: str
    end: str

    @classmethod
    @abstractmethod
    def learn(cls, template: ChatTemplate, end_texts: Collection[str]) -> CallStrategy | None:
        """This kind, read from how `template` writes a probe call (`end_texts`: the texts
        that end a turn); None when the template writes calls some other way."""

    # tokens a call's body holds that the splitter must see as text (gpt-oss's `<|message|>`)
    body_tokens: ClassVar[Collection[str]] = ()

    @property
    def starts(self) -> tuple[str, ...]:
        """Every marker that opens a call: `start`, and any other a kind allows."""
        return (self.start,)

    # -- splitting --------------------------------------------------------------------------

    def opens_bare(self, text: str) -> bool:
        """Whether an answer that begins with `text` is a call although no `start` marker
        came (Llama 3.x writes a call as bare JSON)."""
        return False

    def undecided_head(self, text: str) -> bool:
        """Whether an answer that begins with `text` may still turn out to open a call
        without a marker or not (functionary v3.2's `get_weather\\n{`, against content): the
        splitter holds such a beginning back until it can tell."""
        return False

    def inside_value(self, body: str) -> bool:
        """Whether the open call's `body` so far ends inside an argument's value, where an
        `end` marker is the value's text, not the end of the call."""
        return False

    @abstractmethod
    def parse(self, body: str, tools: Sequence[Tool] = ()) -> list[ToolCall]:
        """The calls in one finished body (`tools`: what was offered, for the kinds whose
        arguments are typed by the tool's schema). Raises MalformedCall."""

    def closing(self, body: str, tools: Sequence[Tool]) -> CallClose | None:
        """What closes a call cut after `body` (its text after the start marker, as the
        grammar let it be written) so that it parses: `tools` are those it may call, the
        first for a call that names none yet. None: `body` is no prefix of a call."""
        return None

    def argument_markup(self, key: str) -> str:
        """The text an argument `key` adds to a call besides its value: what a call's room
        near the limit is counted in (`Generation._call_room`)."""
        return f', "{key}": '

    def reach(self, body: str, tools: Sequence[Tool]) -> Reach | None:
        """Near the limit, with a required argument not written yet: the text that ends the
        value being written and names that argument (`json_close.json_reach`), so that the
        model writes it while the budget lasts. None: nothing to reach, or a kind that
        cannot say."""
        return None

    # -- constraining -----------------------------------------------------------------------

    @abstractmethod
    def grammar(self, request: ToolRequest, control: Mapping[str, int], lazy: bool = False) -> str:
        """The llguidance Lark grammar of an answer made of calls (`control`: the special
        tokens' texts and ids). With `lazy`, the grammar starts right after the first `start`
        marker, which the model has already written (a call it chose to make under `auto`)."""

    # -- the prompt -------------------------------------------------------------------------

    learned_from_template: ClassVar[bool] = True

    def history(self, messages: Messages) -> list[dict[str, Any]]:
        """`messages` as the template is given them: a template that knows tools writes an
        assistant's `tool_calls` itself (its render fits their arguments and ids to what it
        takes, `chat_fit`)."""
        return [dict(m) for m in messages]

    def prompt_inputs(
        self, messages: Messages, request: ToolRequest
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The messages and the extra template variables of a turn that offers `request`'s
        tools."""
        return self.history(messages), {"tools": [t.as_openai() for t in request.tools]}

    def describe(self) -> dict[str, Any]:
        """The format as `/props` shows it (`tool_call_format`)."""
        return {"name": self.name, "kind": self.kind, "start": self.start, "end": self.end}
