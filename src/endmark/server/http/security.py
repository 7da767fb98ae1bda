"""Who may come in and how much they may send: API keys, a body-size cap, CORS.

Pure ASGI middleware, so they wrap streaming responses without buffering them.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from endmark.server.http.cors import ApiPrefix, Cors, CorsPolicy
from endmark.server.http.errors import error_body
from endmark.server.http.stream import RAW_SEND, RawSend

log = logging.getLogger("endmark.server")

# Routes anyone may reach: liveness, and the chat page with its static files.
OPEN_PATHS = ("/health", "/v1/health")
OPEN_PREFIXES = ("/static/",)


async def _send_error(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    message: str,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    body = error_body(scope["path"], status, message, code=code)
    await JSONResponse(body, status_code=status, headers=headers)(scope, receive, send)


MISSING_KEY = "Invalid or missing API key: send Authorization: Bearer KEY (or x-api-key)"


def key_allowed(keys: Sequence[bytes], header: bytes, api_key: bytes = b"") -> bool:
    """`Authorization: Bearer KEY`, or Anthropic's `x-api-key: KEY`; constant-time compare."""
    scheme, _, token = header.partition(b" ")
    if api_key and not header:
        token = api_key
    elif scheme.lower() != b"bearer":
        return False
    ok = False
    for key in keys:  # no early exit: every key is compared
        ok |= hmac.compare_digest(token.strip(), key)
    return ok


class ApiKeyAuth:
    """`Authorization: Bearer KEY` on every route but the open ones; constant-time compare."""

    def __init__(self, app: ASGIApp, keys: Sequence[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]

    def _allowed(self, header: bytes, api_key: bytes = b"") -> bool:
        return key_allowed(self.keys, header, api_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        open_path = path in OPEN_PATHS or path == "/" or path.startswith(OPEN_PREFIXES)
        if scope["type"] != "http" or open_path or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        if not self._allowed(headers.get(b"authorization", b""), headers.get(b"x-api-key", b"")):
            await _send_error(
                scope,
                receive,
                send,
                401,
                MISSING_KEY,
                "invalid_api_key",
                {"WWW-Authenticate": "Bearer"},
            )
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """A 413 for a request body over `limit` bytes, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _send_error(scope, receive, send, 413, self._message())
            return
        seen = 0
        too_big = False

        async def counted() -> Message:
            nonlocal seen, too_big
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    too_big = True
                    scope.pop(RAW_SEND, None)  # a stream's chunks go through `guarded_send`
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if too_big and not started:
                started = True
                await _send_error(scope, receive, send, 413, self._message())
                return
            if too_big:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted, guarded_send)

    def _message(self) -> str:
        return f"the request body is larger than the limit of {self.limit} bytes"


def install_security(
    app: FastAPI, keys: Sequence[str], max_body: int, cors: CorsPolicy, api_prefix: str = ""
) -> None:
    """Order matters: CORS outermost (preflights need no key), then the API prefix, then
    keys, then the size cap; around them all, `RawSend` (streams' chunks skip them)."""
    app.add_middleware(BodyLimit, limit=max_body)
    if keys:
        app.add_middleware(ApiKeyAuth, keys=keys)
    if api_prefix.strip("/"):
        app.add_middleware(ApiPrefix, prefix=api_prefix)
    app.add_middleware(Cors, policy=cors)
    app.add_middleware(RawSend)
