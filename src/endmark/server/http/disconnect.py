"""Tie a non-streaming generation to its client: when the client goes away, stop it.

(Streaming responses need no help: Starlette cancels the stream when the client leaves, and
closing the event generator cancels the generation.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi import Request

from endmark.server.http.errors import ApiError

T = TypeVar("T")

POLL_SECONDS = 0.2


async def _gone(request: Request) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(POLL_SECONDS)


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Run `work`; if the client disconnects first, cancel it (its `finally` frees the slot)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_gone(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    raise ApiError(499, "the client closed the request")
