"""The blocks of an answer (reasoning, text, tool calls) as they open, grow and close.

Anthropic's content blocks, the Responses API's output items, Ollama's chunks and OpenAI's
chat deltas are all this one sequence, worded differently. A dialect renders a stream from
the changes and a whole answer from the same changes (or the final blocks), so that a stream
and a whole answer cannot differ.

Whitespace that is not inside a text block yet is held back: text that follows takes it
along, a tool call drops it (so that `\\n` before a call does not become an empty message),
and an answer that ends with neither text nor a call gets a text block holding it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from endmark.channels import ToolCall
from endmark.delta import Delta

Kind = Literal["reasoning", "text", "call"]
What = Literal["open", "grow", "close"]


@dataclass
class Block:
    """One block: its place among the answer's blocks, its kind, and its text so far (a
    call's arguments, for a call)."""

    index: int
    kind: Kind
    text: str = ""
    call: ToolCall | None = None


@dataclass(frozen=True)
class Change:
    """A block opened, grew by `text`, or closed."""

    what: What
    block: Block
    text: str = ""


class BlockTracker:
    """Feed it each delta in order, then `finish()`; each call says what changed."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self._open: Block | None = None
        self._space = ""

    @property
    def kind(self) -> Kind | None:
        return self._open.kind if self._open is not None else None

    def add(self, delta: Delta) -> list[Change]:
        out: list[Change] = []
        if delta.reasoning:
            if self.kind != "reasoning":
                out += self._start("reasoning")
            out += self._grow(delta.reasoning)
        if delta.content:
            out += self._text(delta.content)
        for call in delta.calls:
            self._space = ""
            out += self._start("call", call)
            out += self._grow(call.arguments)
            out += self._close()
        return out

    def finish(self) -> list[Change]:
        """Close the last block. An answer with no text and no call gets its text block, with
        the whitespace held back, if any."""
        out: list[Change] = []
        if not any(b.kind != "reasoning" for b in self.blocks):
            out += self._start("text")
            out += self._grow(self._space) if self._space else []
            self._space = ""
        return out + self._close()

    def _text(self, text: str) -> list[Change]:
        if self.kind == "text":
            return self._grow(text)
        if not (self._space + text).strip():
            self._space += text
            return []
        text, self._space = self._space + text, ""
        return self._start("text") + self._grow(text)

    def _start(self, kind: Kind, call: ToolCall | None = None) -> list[Change]:
        out = self._close()
        self._open = Block(len(self.blocks), kind, call=call)
        self.blocks.append(self._open)
        return [*out, Change("open", self._open)]

    def _grow(self, text: str) -> list[Change]:
        assert self._open is not None
        self._open.text += text
        return [Change("grow", self._open, text)]

    def _close(self) -> list[Change]:
        block, self._open = self._open, None
        return [Change("close", block)] if block is not None else []


def changes_of(deltas: list[Delta]) -> list[Change]:
    """Every change of a whole answer: the same tracker, fed every delta at once."""
    tracker = BlockTracker()
    return [change for delta in deltas for change in tracker.add(delta)] + tracker.finish()


def blocks_of(deltas: list[Delta]) -> list[Block]:
    """A whole answer's blocks, in order."""
    return [change.block for change in changes_of(deltas) if change.what == "open"]
