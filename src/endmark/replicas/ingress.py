"""The one HTTP address in front of the replicas: every route, passed to a replica chosen by
the prefix-aware router, with `x-endmark-replica` naming it; `/health`, `/slots` and
`/metrics` answer for all replicas."""

# No `from __future__ import annotations`: Ray rebuilds these routes from live annotations.
import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.registry import Collector
from ray import serve

from endmark.replicas.prefixes import routing_text
from endmark.replicas.routing import live_replicas
from endmark.server.http.dialect import Dialect, register
from endmark.server.http.errors import ApiError, install_error_handlers
from endmark.server.http.metrics import labelled
from endmark.server.http.relay import METHODS, failure_event
from endmark.server.http.security import MISSING_KEY, key_allowed

log = logging.getLogger("endmark.replicas")

HEALTH_TIMEOUT = 5.0
ATTEMPTS = 3  # a request no replica took yet is tried again: the router learns of deaths

app = FastAPI(title="endmark", openapi_url=None, docs_url=None, redoc_url=None)
install_error_handlers(app)


async def rest(stream: Any, path: str, replica: str, streamed: bool) -> AsyncIterator[bytes]:
    """The answer's bytes; if its replica dies mid-stream, the dialect's clean error event."""
    try:
        async for chunk in stream:
            yield chunk
    except Exception as exc:
        log.warning("replica %s stopped while answering: %s", replica, exc)
        if streamed:
            yield failure_event(path, replica, f"replica {replica} stopped while answering; "
                                               "the next request goes to a live one")  # fmt: skip


def is_stream(headers: dict[str, str]) -> bool:
    kind = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    return "event-stream" in kind or "ndjson" in kind


class ReplicaMetrics(Collector):
    def __init__(self, texts: dict[str, str]) -> None:
        self.texts = texts

    def collect(self) -> Any:
        yield from labelled(self.texts, "replica")


# Decorated here, at import, so that every process that unpickles it sees the same routes;
# what its methods use is defined above it (Ray copies the module's names at this point).
@serve.ingress(app)
class Ingress:
    """Made a deployment in `endmark.replicas.app`."""

    def __init__(
        self, replicas: Any, keys: tuple[str, ...] = (), dialects: tuple[Dialect, ...] = ()
    ) -> None:
        self.replicas = replicas  # a DeploymentHandle to EndmarkReplica
        self.keys = [k.encode() for k in keys]
        register(dialects)  # this process's errors, routing text and broken-stream events

    def _authorize(self, request: Request) -> None:
        """The routes the ingress answers itself ask for the key the replicas ask for."""
        header = request.headers.get("authorization", "").encode()
        api_key = request.headers.get("x-api-key", "").encode()
        if self.keys and not key_allowed(self.keys, header, api_key):
            raise ApiError(401, MISSING_KEY, headers={"WWW-Authenticate": "Bearer"})

    @app.get("/health")
    @app.get("/v1/health")
    async def health(self) -> Response:
        """200 while at least one replica answers."""
        try:
            await asyncio.wait_for(self.replicas.check_health.remote(), HEALTH_TIMEOUT)
        except Exception as exc:  # no replica ready, or the one asked just died
            return JSONResponse({"status": "unavailable", "error": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok", "replicas": len(live_replicas())})

    async def _each_replica(self, path: str) -> list[dict[str, Any]]:
        names = sorted(live_replicas())
        if not names:  # the router has not met the replicas yet
            await self.replicas.check_health.remote()
            names = sorted(live_replicas())
        reads = [self.replicas.read.remote(path, target=name) for name in names]
        out = []
        for read in reads:
            try:  # a replica that just died is not waited for
                out.append(await asyncio.wait_for(read, HEALTH_TIMEOUT))
            except Exception as exc:
                log.warning("a replica did not answer %s: %s", path, exc)
        return out

    @app.get("/slots")
    async def slots(self, request: Request) -> Any:
        """Every replica's slots, each with the replica that holds it."""
        self._authorize(request)
        out = []
        for r in await self._each_replica("/slots"):
            if r["status"] != 200:
                raise ApiError(r["status"], json.loads(r["text"])["error"]["message"])
            for slot in json.loads(r["text"]):
                out.append({**slot, "replica": r["replica"], "pid": r["pid"]})
        return out

    @app.get("/metrics")
    async def metrics(self, request: Request) -> Response:
        self._authorize(request)
        texts = {}
        for r in await self._each_replica("/metrics"):
            if r["status"] != 200:
                raise ApiError(r["status"], json.loads(r["text"])["error"]["message"])
            texts[r["replica"]] = r["text"]
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ReplicaMetrics(texts))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.api_route("/{path:path}", methods=METHODS, include_in_schema=False)
    async def route(self, request: Request, path: str) -> Response:
        body = await request.body()
        text = routing_text(request.url.path, body)
        headers = list(request.headers.items())
        for attempt in range(ATTEMPTS):
            stream = self.replicas.options(stream=True).forward.remote(
                request.method, request.url.path, request.url.query, headers, body,
                route_text=text,
            )  # fmt: skip
            try:
                head = await stream.__anext__()
                break
            except Exception as exc:  # the replica died before it took the request
                log.warning("a replica failed before answering: %s", exc)
                if attempt == ATTEMPTS - 1:
                    raise ApiError(503, "no replica could take the request; try again",
                                   headers={"Retry-After": "1"}) from None  # fmt: skip
        headers_out = {**head["headers"], "x-endmark-replica": head["replica"]}
        return StreamingResponse(
            rest(stream, request.url.path, head["replica"], is_stream(head["headers"])),
            status_code=head["status"],
            headers=headers_out,
        )
