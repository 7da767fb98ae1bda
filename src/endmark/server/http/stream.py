"""The stream writer every dialect uses: JSON bytes, server-sent events, NDJSON lines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi.responses import StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send


def json_bytes(data: Any) -> bytes:
    """UTF-8 JSON, unescaped, as `json.dumps(ensure_ascii=False)` writes it, several times
    faster: a stream encodes one chunk per token on the event loop, which shares the cores
    with llama.cpp's threads."""
    return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)


def sse(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    """One server-sent event: a JSON object, or a bare word such as `[DONE]`; named, where
    the dialect names its events (Anthropic's, the Responses API's)."""
    body = data.encode() if isinstance(data, str) else json_bytes(data)
    head = b"event: %s\n" % event.encode() if event else b""
    return head + b"data: " + body + b"\n\n"


# Where `RawSend` keeps the send it was given, in the scope.
RAW_SEND = "endmark.raw_send"


class RawSend:
    """The outermost of endmark's middlewares keeps the `send` it is given in the scope, so
    that a stream's body chunks skip the wrappers inside it (CORS, keys, the body cap, the
    exception handlers): they act on a response's start, which still goes through them all,
    and pass every body chunk on unchanged, one coroutine each, once a token."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[RAW_SEND] = send
        await self.app(scope, receive, send)


class Stream(StreamingResponse):
    """A streamed answer whose body chunks go straight to the send `RawSend` kept (where a
    middleware took it away, through the wrappers as usual)."""

    _raw: Send | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._raw = scope.get(RAW_SEND)
        await super().__call__(scope, receive, send)

    async def stream_response(self, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code,
                 "headers": self.raw_headers}  # fmt: skip
        await send(start)
        raw = self._raw or send
        async for chunk in self.body_iterator:
            body = chunk if isinstance(chunk, bytes | memoryview) else chunk.encode(self.charset)
            await raw({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def event_stream(chunks: AsyncIterator[bytes]) -> StreamingResponse:
    return Stream(chunks, media_type="text/event-stream")


def ndjson_stream(lines: AsyncIterator[dict[str, Any] | bytes]) -> StreamingResponse:
    """One JSON object a line (Ollama's streams); a line given as bytes is already encoded."""

    async def encoded() -> AsyncIterator[bytes]:
        async for line in lines:
            yield line if isinstance(line, bytes) else json_bytes(line) + b"\n"

    return Stream(encoded(), media_type="application/x-ndjson")
