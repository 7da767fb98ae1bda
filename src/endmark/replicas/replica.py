"""One endmark replica: a whole single-model endmark server inside a Ray Serve replica.

The replica runs the same app `endmark serve` runs (every route, dialect and flag), on a
loopback port of its own node, and passes requests to it, so a replica is a whole endmark
and nothing about a request changes on the way. Ray restarts a replica whose health check
fails or whose process dies.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import uvicorn

from endmark.multimodel.pool import free_port
from endmark.server.http.relay import HOP_BY_HOP, events, send_on
from endmark.settings import Settings

LOAD_TIMEOUT = 600.0


class EndmarkReplica:
    """Wrapped by `serve.deployment` in `endmark.replicas.app`; kept plain here so that its
    logic reads (and imports) without Ray."""

    def __init__(self, settings: Settings, name: str) -> None:
        from endmark.server.app import create_app

        self.name = name
        self.settings = replace(settings, host="127.0.0.1", port=free_port())
        app = create_app(self.settings)
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.settings.port, log_level="warning")
        )
        threading.Thread(target=self._server.run, name="endmark-replica", daemon=True).start()
        self.url = f"http://127.0.0.1:{self.settings.port}"
        keys = self.settings.api_keys()
        self._headers = {"Authorization": f"Bearer {keys[0]}"} if keys else {}
        self._wait_ready()
        self._client = httpx.AsyncClient(timeout=None)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + LOAD_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the replica's model did not load")

    async def forward(
        self,
        method: str,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        body: bytes,
        route_text: str = "",
        target: str | None = None,
    ) -> AsyncIterator[dict[str, Any] | bytes]:
        """The answer as a stream: its head (status, headers, this replica), then its bytes a
        whole event at a time. `route_text` and `target` are for the request router."""
        upstream = await send_on(self._client, method, self.url + path, query, headers, body)
        try:
            kept = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            yield {"status": upstream.status_code, "headers": kept, "replica": self.name}
            broken = f"replica {self.name} stopped while answering"
            async for chunk in events(upstream, path, self.name, broken):
                yield chunk
        finally:
            await upstream.aclose()

    async def read(self, path: str, target: str | None = None) -> dict[str, Any]:
        """A GET of this replica's own state (`/slots`, `/metrics`), for the ingress to gather
        from every replica."""
        r = await self._client.get(self.url + path, headers=self._headers)
        return {"replica": self.name, "pid": os.getpid(), "status": r.status_code,
                "text": r.text}  # fmt: skip

    async def check_health(self) -> None:
        """Ray's health check: a replica whose server stopped answering is restarted."""
        r = await self._client.get(f"{self.url}/health", timeout=10)
        if r.status_code != 200:
            raise RuntimeError(f"/health answered {r.status_code}")

    def __del__(self) -> None:
        """Ray's graceful stop (after the running requests): the server stops too."""
        self._server.should_exit = True
