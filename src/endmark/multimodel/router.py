"""Router mode: one address in front of a worker process per model (llama-server's design).

The router answers what concerns the set of models itself (`/models`, `/v1/models`,
`/metrics`, `/health`, and each dialect's own model routes, such as Ollama's `/api/tags`) and
passes every other request, unchanged, to the worker of the model it names (its body's
`model`, or `?model=` on a GET), loading that model first if need be. Each worker is a whole
single-model endmark, so every dialect, and each model's own end tokens, template and call
format, work as with one model.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from endmark.mcp_tools import McpTools, read_mcp_servers
from endmark.multimodel.catalog import SERVER_WIDE, ModelEntry, parse_bytes, parse_duration
from endmark.multimodel.downloads import install_downloads
from endmark.multimodel.forward import forward
from endmark.multimodel.pool import (
    LOADED,
    LoadFailed,
    PoolLimits,
    UnknownModel,
    Worker,
    WorkerPool,
    worker_argv,
    worker_environment,
)
from endmark.server.http import dialect
from endmark.server.http.cors import CorsPolicy
from endmark.server.http.errors import ApiError, install_error_handlers
from endmark.server.http.metrics import labelled
from endmark.server.http.relay import METHODS
from endmark.server.http.security import install_security
from endmark.server.tool_routes import router as tool_routes
from endmark.settings import Settings


def create_router_app(
    settings: Settings, entries: list[ModelEntry], dialects: Iterable[dialect.Dialect]
) -> FastAPI:
    """`dialects`: the table the workers speak (`endmark.server.dialects.registry`), so that
    the router's own errors, and streams cut short by a worker's death, are in each dialect's
    shape."""
    dialect.register(dialects)
    registered = dialect.registered()
    keys = settings.api_keys()
    headers = {"Authorization": f"Bearer {keys[0]}"} if keys else {}
    limits = PoolLimits(
        models_max=settings.models_max,
        memory_bytes=parse_bytes(settings.models_memory) if settings.models_memory else None,
        keep_alive=parse_duration(settings.keep_alive),
        stop_grace=settings.shutdown_grace,
    )
    command = lambda e, port: worker_command(settings, e, port)  # noqa: E731
    pool = WorkerPool(entries, command, limits, headers, spare=True)
    default = pool.find(settings.default_model) if settings.default_model else None
    default = default or pool.workers[entries[0].id]
    # No timeout: a request that waits for its model to load is not a timeout.
    client = httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=None))
    mcp = McpTools(read_mcp_servers(settings.mcp_servers_config, settings.mcp_servers_json))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        pool.start()
        if mcp:
            await mcp.discover()
        yield
        await mcp.aclose()
        await pool.close()
        await client.aclose()

    app = FastAPI(title="endmark", lifespan=lifespan, openapi_url=None, docs_url=None,
                  redoc_url=None)  # fmt: skip
    app.state.settings = settings
    app.state.pool = pool
    downloads = install_downloads(app, pool)  # POST/DELETE /models, /models/sse
    app.state.mcp = mcp
    install_error_handlers(app)
    install_security(
        app, keys, settings.max_body_bytes, CorsPolicy.of(settings), settings.api_prefix
    )

    def named(name: str | None) -> Worker:
        if not name:
            return default
        try:
            return pool.find(name)
        except UnknownModel as exc:
            raise ApiError(404, str(exc), "model") from None

    @app.get("/health")
    @app.get("/v1/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/models")
    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [*(model_card(w, w is default)
                                             for w in pool.workers.values()),
                                           *downloads.cards()]}  # fmt: skip

    @app.post("/models/load")
    async def load(request: Request) -> dict[str, Any]:
        worker = named(model_field(await json_body(request), required=True))
        try:
            await pool.ensure(worker)
        except LoadFailed as exc:
            raise ApiError(500, str(exc)) from None
        return {"success": True, "model": worker.entry.id, "status": worker.status}

    @app.post("/models/unload")
    async def unload(request: Request) -> dict[str, Any]:
        worker = named(model_field(await json_body(request), required=True))
        await pool.unload(worker, "unload asked")
        return {"success": True, "model": worker.entry.id, "status": worker.status}

    def served() -> list[dialect.ServedModel]:
        return [served_model(w) for w in pool.workers.values()]

    for spoken in registered:
        if spoken.model_routes is not None:  # e.g. Ollama's /api/tags and /api/ps
            app.include_router(spoken.model_routes(served))

    if settings.metrics:

        @app.get("/metrics")
        async def metrics() -> Response:
            registry = CollectorRegistry(auto_describe=False)
            texts = {}
            for w in pool.workers.values():
                if w.status == LOADED:
                    try:
                        r = await client.get(f"{w.url}/metrics", headers=headers, timeout=10)
                        texts[w.entry.id] = r.text
                    except httpx.HTTPError:
                        pass
            registry.register(PerModelCollector(pool, texts))
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(tool_routes)  # before the catch-all: the router runs MCP, not workers

    @app.api_route("/{path:path}", methods=METHODS, include_in_schema=False)
    async def route(request: Request, path: str) -> Response:
        body = await request.body()
        data = parse_json(body)
        worker = named(request.query_params.get("model") or model_field(data))
        keep_alive: float | None | str = "default"
        if isinstance(data, dict) and data.get("keep_alive") is not None:
            try:
                keep_alive = parse_duration(data["keep_alive"])
            except ValueError as exc:
                raise ApiError(400, str(exc), "keep_alive") from None
            unloads = dialect.dialect_for(request.url.path).unload_reply
            reply = unloads(request.url.path, data, worker.entry.id) \
                if keep_alive == 0 and unloads is not None else None  # fmt: skip
            if reply is not None:  # a request only to unload (Ollama's keep_alive 0)
                await pool.unload(worker, "keep_alive 0")
                return JSONResponse(reply)
        if worker.status != LOADED and not settings.models_autoload:
            raise ApiError(400, f"model '{worker.entry.id}' is not loaded: POST /models/load "
                           "loads it (the server runs with --no-models-autoload)")  # fmt: skip
        try:
            return await forward(request, body, pool, worker, client, keep_alive)
        except LoadFailed as exc:
            raise ApiError(500, str(exc)) from None

    return app


def worker_command(
    settings: Settings, entry: ModelEntry, port: int
) -> tuple[list[str], dict[str, str]]:
    """One model's worker: `endmark serve` on a loopback port, with this server's settings and
    the model's own from the models file."""
    values = {k: v for k, v in asdict(settings).items() if k not in SERVER_WIDE}
    values.update(entry.settings)
    values["api_key"] = settings.api_key
    values["api_key_file"] = settings.api_key_file
    values["shutdown_grace"] = settings.shutdown_grace
    return worker_argv(entry, port), worker_environment(values)


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return None  # the worker answers a malformed body with its own 400


async def json_body(request: Request) -> Any:
    data = parse_json(await request.body())
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return data


def model_field(data: Any, required: bool = False) -> str | None:
    """The model a body names: `model`, or `name` as older Ollama clients send."""
    name = data.get("model") or data.get("name") if isinstance(data, dict) else None
    if name is not None and not isinstance(name, str):
        raise ApiError(400, "model must be a string", "model")
    if required and not name:
        raise ApiError(400, "model is required", "model")
    return name


def model_card(w: Worker, is_default: bool) -> dict[str, Any]:
    """A model as `/models` (llama-server's router) and `/v1/models` list it."""
    status: dict[str, Any] = {"value": w.status}
    if w.error and w.status != LOADED:
        status |= {"failed": True, "error": w.error, "exit_code": w.exit_code}
    return {
        "id": w.entry.id,
        "object": "model",
        "created": int(w.entry.path.stat().st_mtime),
        "owned_by": "endmark",
        "aliases": list(w.entry.aliases),
        "path": str(w.entry.path),
        "default": is_default,
        "status": status,
        "pid": w.pid if w.status == LOADED else None,
        "requests_running": w.busy,
    }


def served_model(w: Worker) -> dialect.ServedModel:
    expires_at = None
    if w.expires_at is not None:
        at = time.time() + (w.expires_at - time.monotonic())
        expires_at = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    size = w.resident_bytes() if w.status == LOADED else 0
    return dialect.ServedModel(w.entry.id, w.entry.path, w.status == LOADED, expires_at, size)


class PerModelCollector(Collector):
    """Every loaded worker's metrics, labelled `model`, and which models are loaded."""

    def __init__(self, pool: WorkerPool, texts: dict[str, str]) -> None:
        self.pool = pool
        self.texts = texts

    def collect(self) -> Iterator[Metric]:
        loaded = GaugeMetricFamily("endmark_model_loaded", "1 if the model is loaded",
                                   labels=["model"])  # fmt: skip
        for w in self.pool.workers.values():
            loaded.add_metric([w.entry.id], 1.0 if w.status == LOADED else 0.0)
        yield loaded
        yield from labelled(self.texts, "model")
