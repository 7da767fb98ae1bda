"""Passing a request on to another endmark (a model's worker, a replica) and its answer back,
byte for byte.

A stream is passed on whole events at a time (SSE events, NDJSON lines), so that when a worker
dies mid-stream the client gets the last complete event and then one clean error event in
its dialect's shape, never a torn one or a hang.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import anyio
import httpx
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from endmark.server.http.dialect import dialect_for

log = logging.getLogger("endmark.server")

# Every method a catch-all route passes on (OPTIONS: a CORS preflight for the server behind).
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
# Headers that describe one connection, not the message: never passed on.
HOP_BY_HOP = frozenset(
    "host content-length connection keep-alive transfer-encoding te trailer upgrade "
    "proxy-authorization proxy-connection".split()
)


class Relay(StreamingResponse):
    """A streamed answer that releases its worker however it ends, even when the client
    leaves before the first byte."""

    def __init__(self, body: AsyncIterator[bytes], cleanup: Callable[[], Awaitable[None]],
                 **kw: Any) -> None:  # fmt: skip
        super().__init__(body, **kw)
        self._cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._cleanup()


async def send_on(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    query: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
) -> httpx.Response:
    """The same request to another server, its answer streamed; connection headers dropped."""
    request = client.build_request(
        method,
        url,
        params=query,
        headers=[(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP],
        content=body,
    )
    return await client.send(request, stream=True)


async def events(
    upstream: httpx.Response, path: str, name: str, broken: str
) -> AsyncIterator[bytes]:
    """The answer's bytes, a whole event (SSE) or line (NDJSON) at a time; if the answering
    process dies, the dialect's error event saying `broken`."""
    kind = upstream.headers.get("content-type", "")
    separator = b"\n\n" if "text/event-stream" in kind else b"\n" if "ndjson" in kind else b""
    pending = b""
    try:
        async for chunk in upstream.aiter_raw():
            if not separator:
                yield chunk
                continue
            pending += chunk
            cut = pending.rfind(separator)
            if cut >= 0:
                cut += len(separator)
                yield pending[:cut]
                pending = pending[cut:]
        if pending:
            yield pending
    except httpx.TransportError:
        log.warning("the stream from %s broke: its process stopped", name)
        if separator:
            yield failure_event(path, name, broken)


def failure_event(path: str, model: str, message: str) -> bytes:
    """The event the dialect `path` speaks ends a stream with when a generation fails."""
    return dialect_for(path).failure(model, message)
