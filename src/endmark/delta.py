"""What one step (or the end) of a generation adds to the answer, channel by channel.

Every dialect renders from this one shape: content, reasoning, and the tool calls finished in
the step. It carries no markup (ending rule 7): the channel splitter has taken that out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from endmark.channels import ToolCall


class _Piece(Protocol):
    """A channel splitter's piece (channels.Piece), as far as joining needs it."""

    channel: str
    text: str
    call: ToolCall | None


@dataclass(frozen=True)
class Delta:
    """Content, reasoning and finished tool calls released together."""

    content: str = ""
    reasoning: str = ""
    calls: tuple[ToolCall, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.content or self.reasoning or self.calls)

    @classmethod
    def of(cls, pieces: Iterable[_Piece]) -> Delta:
        """The pieces a splitter released, joined channel by channel (in order within each)."""
        content: list[str] = []
        reasoning: list[str] = []
        calls: list[ToolCall] = []
        for p in pieces:
            if p.call is not None:
                calls.append(p.call)
            elif p.channel == "reasoning":
                reasoning.append(p.text)
            elif p.channel == "content":
                content.append(p.text)
        return cls("".join(content), "".join(reasoning), tuple(calls))
