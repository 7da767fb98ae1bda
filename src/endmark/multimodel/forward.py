"""Forwarding a request to the worker of the model it names: leased, loaded first if need be,
and relayed back whole events at a time."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AsyncExitStack

import httpx
from fastapi import Request

from endmark.multimodel.pool import Worker, WorkerPool
from endmark.server.http.errors import ApiError
from endmark.server.http.relay import HOP_BY_HOP, Relay, events, send_on


async def forward(
    request: Request,
    body: bytes,
    pool: WorkerPool,
    worker: Worker,
    client: httpx.AsyncClient,
    keep_alive: float | None | str = "default",
) -> Relay:
    """Send the request to the worker (loading the model first if need be) and relay the
    answer. A worker found dead before it took the request is loaded again and tried once
    more; one that dies while answering ends the answer with a clean error."""
    for attempt in range(2):
        stack = AsyncExitStack()
        await stack.enter_async_context(pool.lease(worker, keep_alive))
        try:
            upstream = await send_on(
                client, request.method, worker.url + request.url.path, request.url.query,
                request.headers.items(), body,
            )  # fmt: skip
            break
        except httpx.TransportError as exc:
            await stack.aclose()
            if attempt == 0 and isinstance(exc, httpx.ConnectError):
                await _settle(worker)
                continue
            raise ApiError(502, stopped_message(worker)) from None
    # the router answers CORS itself: the worker's own CORS headers would be duplicates
    dropped = lambda k: k.lower() in HOP_BY_HOP or k.lower().startswith("access-control-")  # noqa: E731
    headers = {k: v for k, v in upstream.headers.items() if not dropped(k)}
    headers["x-endmark-model"] = worker.entry.id
    done = False

    async def cleanup() -> None:
        nonlocal done
        if not done:
            done = True
            await upstream.aclose()
            await stack.aclose()

    return Relay(
        events(upstream, request.url.path, worker.entry.id, stopped_message(worker)),
        cleanup,
        status_code=upstream.status_code,
        headers=headers,
    )


async def _settle(worker: Worker) -> None:
    """Give the pool a moment to see that a refusing worker has exited."""
    if worker.process is not None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(worker.process.wait(), 1.0)


def stopped_message(worker: Worker) -> str:
    return (f"model '{worker.entry.id}' stopped while answering (its worker process exited); "
            "the next request loads it again")  # fmt: skip
