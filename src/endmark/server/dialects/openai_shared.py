"""What the OpenAI routes share (`/v1/completions`, `/v1/chat/completions`, and the
Responses API): usage, the SSE body, whole answers.

Each response carries an `endmark` object (how it stopped, which token or word, timings), so
this dialect loses no detail against `/completion`. As in llama-server, `/models` and
`/chat/completions` answer without the `/v1` prefix too, and llama.cpp's extensions
(`timings_per_token`, `return_progress`, `verbose`, ...) are honoured.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from endmark.delta import Delta
from endmark.generation import Done, Failed, GenerationRequest, Progress, TokenEvent
from endmark.runtime import Runtime
from endmark.server.dialects.openai_protocol import OPENAI, OpenAIFields
from endmark.server.dialects.results import Answer, Events, Follow, stop_detail
from endmark.server.http.stream import json_bytes, sse

router = APIRouter()

# A choice's chunks for one event: the choice's index, the event, and what it added.
ChoiceFn = Callable[[int, TokenEvent | Progress | Done, Delta], list[dict[str, Any]]]


def usage(requests: list[GenerationRequest], n: int, dones: dict[int, Done]) -> dict[str, Any]:
    """Each distinct prompt counts once, as OpenAI counts it for `n` > 1."""
    firsts = range(0, len(requests), n)
    prompt = sum(len(requests[k].prompt) for k in firsts)
    completion = sum(len(d.tokens) for d in dones.values())
    cached = sum(dones[k].timings.cached_n for k in firsts if k in dones)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def finish_of(done: Done) -> dict[str, Any]:
    """The fields a choice's last chunk carries: OpenAI's reason and endmark's detail."""
    return {"finish_reason": OPENAI.finish.of(done), "endmark": stop_detail(done)}


def verbose_info(rt: Runtime, req: OpenAIFields, gen: GenerationRequest, answer: Answer) -> Any:
    """llama-server's `__verbose` (asked for with `verbose`, or on a `--verbose` server)."""
    if not (req.verbose or rt.settings.verbose) or answer.done is None:
        return None
    return {
        "prompt": rt.prompt_text(gen.prompt),
        "content": answer.content,
        "tokens": list(answer.done.tokens),
        **stop_detail(answer.done),
    }


async def stream_chunks(
    events: Events,
    requests: list[GenerationRequest],
    n: int,
    head: dict[str, Any],
    start: Callable[[int], dict[str, Any]] | None,
    pieces: ChoiceFn,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """The SSE body shared by both endpoints; only the choice shapes differ. As llama-server
    does, chunks carry `timings` (with `timings_per_token`) and `prompt_progress`."""
    dones: dict[int, Done] = {}
    # a chunk's bytes up to its one choice, encoded once: `envelope`'s, byte for byte
    before = b"data: " + json_bytes(head)[:-1] + b',"choices":['

    def envelope(choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {**head, "choices": choices}

    async with aclosing(Follow(events, len(requests))) as steps:
        if start is not None:
            for i in range(len(requests)):
                yield sse(envelope([start(i)]))
        async for answer, event, delta in steps:
            if isinstance(event, Failed):
                yield OPENAI.failure(head["model"], event.message)
                continue
            if isinstance(event, Done):
                dones[answer.index] = event
            for choice in pieces(answer.index, event, delta):
                if isinstance(event, TokenEvent) and event.timings is not None:
                    yield sse({**envelope([choice]), "timings": event.timings.as_dict()})
                elif isinstance(event, Progress):
                    yield sse({**envelope([choice]), "prompt_progress": event.as_dict()})
                else:
                    yield before + json_bytes(choice) + b"]}\n\n"
    if include_usage:
        last: dict[str, Any] = {**envelope([]), "usage": usage(requests, n, dones)}
        if 0 in dones:
            last["timings"] = dones[0].timings.as_dict()
        yield sse(last)
    yield sse("[DONE]")


def whole_response(
    head: dict[str, Any],
    choices: list[Answer],
    requests: list[GenerationRequest],
    n: int,
    render: Callable[[Answer], dict[str, Any]],
    verbose: Any = None,
) -> JSONResponse:
    """A non-streaming answer: each choice as the endpoint renders it, plus how it ended."""
    dones = {c.index: c.done for c in choices if c.done is not None}
    body = {
        **head,
        "choices": [
            {
                "index": c.index,
                **render(c),
                "finish_reason": OPENAI.finish.of(c.done) if c.done else "stop",
                "endmark": stop_detail(c.done) if c.done else None,
            }
            for c in choices
        ],
        "usage": usage(requests, n, dones),
        "timings": dones[0].timings.as_dict(),
        "endmark": stop_detail(dones[0]),
    }
    if verbose is not None:
        body["__verbose"] = verbose
    return JSONResponse(body)


def base(kind: str, rt: Runtime, prefix: str) -> dict[str, Any]:
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": rt.alias,
        "system_fingerprint": "endmark",
    }
