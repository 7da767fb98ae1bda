"""One generation's result, as every dialect reads it: collected whole, or passed on as a stream.

The generation core emits events (tokens with their channel pieces, progress, the end); a
dialect renders them. What does not depend on the dialect lives here once: collecting the
events of several generations into answers, the SSE framing, and endmark's account of why a
generation stopped.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from endmark.channels import ToolCall
from endmark.endings import Finish
from endmark.generation import Done, Event, Failed, TokenEvent
from endmark.server.http.errors import ApiError

Events = AsyncGenerator[tuple[int, Event], None]


@dataclass
class Answer:
    """One generation's output as it is collected: its text and reasoning by channel, its
    token events (for probabilities), and how it ended."""

    index: int
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tokens: list[TokenEvent] = field(default_factory=list)
    done: Done | None = None

    def add(self, event: Event) -> None:
        if isinstance(event, TokenEvent):
            self.text.append(event.text)
            self.reasoning.append(event.reasoning)
            self.tokens.append(event)
        elif isinstance(event, Done):
            self.text.append(event.finish.tail)
            self.reasoning.append(event.reasoning_tail)
            self.done = event

    @property
    def content(self) -> str:
        return "".join(self.text)

    @property
    def calls(self) -> tuple[ToolCall, ...]:
        return self.done.calls if self.done is not None else ()


async def collect(events: Events, n: int) -> list[Answer]:
    """Every event of `n` generations, gathered; a failed generation fails the request."""
    answers = [Answer(i) for i in range(n)]
    try:
        async for i, event in events:
            if isinstance(event, Failed):
                raise ApiError(500, event.message)
            answers[i].add(event)
    finally:
        await events.aclose()
    if any(a.done is None for a in answers):
        raise ApiError(500, "the generation ended without a result")
    return answers


def stopping_token(finish: Finish) -> dict[str, Any] | None:
    """Which end token stopped it, and where endmark learned that it ends generation."""
    t = finish.token
    return {"id": t.id, "text": t.text, "source": t.source} if t else None


def stop_detail(done: Done) -> dict[str, Any]:
    """endmark's account of the end, the same in every dialect that carries it."""
    f = done.finish
    return {
        "stop_type": f.stop_type,
        "stopping_token": stopping_token(f),
        "stopping_word": f.word,
        "truncated": f.truncated,
        "grammar_complete": f.grammar_complete,
        "truncated_json_closed": f.json_closed,
        "tokens_cached": done.timings.cached_n,
        "timings": done.timings.as_dict(),
    }
