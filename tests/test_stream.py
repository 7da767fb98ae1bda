"""The stream writer: a stream's chunks skip the middlewares' send wrappers, its start and
end do not, and a request over the body cap keeps them all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from endmark.server.http.security import BodyLimit
from endmark.server.http.stream import RawSend, event_stream


class Counting:
    """A middleware that counts the messages passing its send."""

    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted(message: Message) -> None:
            self.seen.append(message["type"])
            await send(message)

        await self.app(scope, receive, counted)


async def chunks() -> AsyncIterator[bytes]:
    for i in range(3):
        yield b"data: %d\n\n" % i


def serve(body: bytes, limit: int) -> tuple[list[str], list[bytes]]:
    seen: list[str] = []

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await event_stream(chunks())(scope, receive, send)

    app = RawSend(Counting(BodyLimit(route, limit), seen))
    sent: list[bytes] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else await asyncio.Event().wait()  # type: ignore[func-returns-value]

    async def send(message: Message) -> None:
        sent.append(message.get("body", b""))

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "asgi": {}}
    asyncio.run(app(scope, receive, send))
    return seen, sent


def test_chunks_skip_the_wrappers_but_not_the_start_and_end() -> None:
    seen, sent = serve(b"{}", 100)
    assert seen == ["http.response.start", "http.response.body"]  # the start, the end
    assert b"".join(sent) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


def test_over_the_body_cap_every_message_goes_through_the_cap() -> None:
    seen, sent = serve(b"x" * 200, 100)
    assert b"data:" not in b"".join(sent)
    assert b"larger than the limit" in b"".join(sent)
