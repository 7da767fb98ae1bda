"""CORS as llama-server answers it, and llama-server's `--api-prefix`.

llama-server's default reflects any `Origin` with credentials allowed; `--cors-origins
localhost` reflects only a localhost origin; a list allows those origins. Every `OPTIONS`
request is a preflight, answered at once (no key needed) with the configured methods and
headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from endmark.server.http.errors import error_body
from endmark.settings import Settings

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def is_localhost(origin: str) -> bool:
    try:
        return urlsplit(origin).hostname in LOCAL_HOSTS
    except ValueError:
        return False


@dataclass(frozen=True)
class CorsPolicy:
    origins: str = "*"
    methods: str = "GET, POST, DELETE, OPTIONS"
    headers: str = "*"
    credentials: bool = True

    @classmethod
    def of(cls, settings: Settings) -> CorsPolicy:
        # Tools from MCP servers run commands: only localhost pages by default (llama-server).
        default = "localhost" if settings.has_mcp() else "*"
        return cls(
            settings.cors or default,
            settings.cors_methods,
            settings.cors_headers,
            settings.cors_credentials,
        )

    def allow_origin(self, origin: str | None) -> str | None:
        """The `Access-Control-Allow-Origin` answer to `origin` (None: none is sent). With a
        list, the matching origin alone: a browser takes one origin, not llama-server's
        whole list."""
        if self.origins == "*":
            return "*" if not self.credentials else origin
        if not origin:
            return None
        if self.origins == "localhost":
            return origin if is_localhost(origin) else None
        listed = {o.strip().rstrip("/") for o in self.origins.split(",")}
        return origin if origin.rstrip("/") in listed else None


class Cors:
    """Pure ASGI, so streamed answers pass through unbuffered."""

    def __init__(self, app: ASGIApp, policy: CorsPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        allowed = self.policy.allow_origin(Headers(scope=scope).get("origin"))
        if scope["method"] == "OPTIONS":
            p = self.policy
            headers = {
                "Access-Control-Allow-Credentials": "true" if p.credentials else "false",
                "Access-Control-Allow-Methods": p.methods,
                "Access-Control-Allow-Headers": p.headers,
            }
            if allowed:
                headers["Access-Control-Allow-Origin"] = allowed
                headers["Vary"] = "Origin"
            await Response(b"", 200, headers, "text/html")(scope, receive, send)
            return

        async def with_origin(message: Message) -> None:
            if message["type"] == "http.response.start" and allowed:
                headers = MutableHeaders(scope=message)
                headers["Access-Control-Allow-Origin"] = allowed
                if allowed != "*":
                    headers.add_vary_header("Origin")
                    if self.policy.credentials:
                        headers["Access-Control-Allow-Credentials"] = "true"
            await send(message)

        await self.app(scope, receive, with_origin)


class ApiPrefix:
    """Every route only under `prefix` (llama-server's `--api-prefix`): the prefix is taken
    off the path before routing; any other path is a 404."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = "/" + prefix.strip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path != self.prefix and not path.startswith(self.prefix + "/"):
            body = error_body(path, 404, f"not found: this server serves under {self.prefix}")
            await JSONResponse(body, status_code=404)(scope, receive, send)
            return
        inner = path[len(self.prefix) :] or "/"
        await self.app({**scope, "path": inner, "raw_path": inner.encode()}, receive, send)
