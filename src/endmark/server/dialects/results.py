"""One generation's result, as every dialect reads it: collected whole, or passed on as a stream.

The generation core emits events (tokens, progress, the end), each token and the end with one
`Delta` of content, reasoning and calls; a dialect renders them. What does not depend on the
dialect lives here once: following or collecting the events of several generations as
answers, and endmark's account of why a generation stopped.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from endmark.delta import Delta
from endmark.endings import Finish
from endmark.generation import Done, Event, Failed, TokenEvent
from endmark.server.dialects.blocks import Block, blocks_of
from endmark.server.http.errors import ApiError

Events = AsyncGenerator[tuple[int, Event], None]


@dataclass
class Answer:
    """One generation's output as it is collected: what each event added (in order), its
    token events (for probabilities), and how it ended."""

    index: int
    deltas: list[Delta] = field(default_factory=list)
    tokens: list[TokenEvent] = field(default_factory=list)
    done: Done | None = None

    def add(self, event: Event) -> Delta:
        """The one place an event is unpacked: what it adds to the answer (progress and
        failures add nothing)."""
        if isinstance(event, TokenEvent):
            self.tokens.append(event)
        elif isinstance(event, Done):
            self.done = event
        else:
            return Delta()
        self.deltas.append(event.delta)
        return event.delta

    @property
    def content(self) -> str:
        return "".join(d.content for d in self.deltas)

    def blocks(self) -> list[Block]:
        """Its reasoning, text and calls as the blocks a stream of it opens."""
        return blocks_of(self.deltas)


class Follow:
    """The events of `n` generations as they come, each with the answer it grows and what it
    added to it. Use it under `contextlib.aclosing`: closing it closes the events (which
    cancels what still runs), even before the first one came."""

    def __init__(self, events: Events, n: int) -> None:
        self.events = events
        self.answers = [Answer(i) for i in range(n)]

    def __aiter__(self) -> Follow:
        return self

    async def __anext__(self) -> tuple[Answer, Event, Delta]:
        i, event = await self.events.__anext__()
        return self.answers[i], event, self.answers[i].add(event)

    async def aclose(self) -> None:
        await self.events.aclose()


async def collect(events: Events, n: int) -> list[Answer]:
    """Every event of `n` generations, gathered; a failed generation fails the request."""
    async with aclosing(Follow(events, n)) as steps:
        async for _, event, _ in steps:
            if isinstance(event, Failed):  # the request's own constraint: a 400
                raise ApiError(500 if event.param is None else 400, event.message, event.param)
    if any(a.done is None for a in steps.answers):
        raise ApiError(500, "the generation ended without a result")
    return steps.answers


def stopping_token(finish: Finish) -> dict[str, Any] | None:
    """Which end token stopped it, and where endmark learned that it ends generation."""
    t = finish.token
    return {"id": t.id, "text": t.text, "source": t.source} if t else None


def stop_detail(done: Done) -> dict[str, Any]:
    """endmark's account of the end, the same in every dialect that carries it."""
    f = done.finish
    errors = [{"id": c.id, "name": c.name, "error": c.problem} for c in done.calls if c.problem]
    return {
        **({"tool_call_errors": errors} if errors else {}),  # only when a call has one
        **({"constraint_error": f.constraint_error} if f.constraint_error else {}),
        "stop_type": f.stop_type,
        "stopping_token": stopping_token(f),
        "stopping_word": f.word,
        "truncated": f.truncated,
        "grammar_complete": f.grammar_complete,
        "truncated_json_closed": f.json_closed,
        "tokens_cached": done.timings.cached_n,
        "timings": done.timings.as_dict(),
    }


def cut_detail(done: Done) -> dict[str, Any]:
    """endmark's account as `{"endmark": ...}`, for the dialects that carry none otherwise
    (Anthropic, Ollama): given only when a call was closed at the cut or falls short of its
    tool's schema, or the constraint failed mid-answer, so that this is never silent."""
    f = done.finish
    said = f.json_closed or bool(f.constraint_error) or any(c.problem for c in done.calls)
    return {"endmark": stop_detail(done)} if said else {}
