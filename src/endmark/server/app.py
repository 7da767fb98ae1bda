"""`create_app(settings)`: load the model in the background and serve every dialect."""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from endmark.loading import load_runtime
from endmark.mcp_tools import McpTools, read_mcp_servers
from endmark.runtime import Runtime
from endmark.server.dialects.registry import DIALECTS
from endmark.server.dialects.responses import ResponseStore
from endmark.server.http import dialect, metrics
from endmark.server.http.cors import CorsPolicy
from endmark.server.http.errors import install_error_handlers
from endmark.server.http.security import install_security
from endmark.server.http.state import LoadingState
from endmark.server.openapi import install_openapi
from endmark.server.tool_routes import router as tool_routes
from endmark.settings import Settings

log = logging.getLogger("endmark")
WEB = Path(__file__).resolve().parent / "web"


def create_app(
    settings: Settings,
    on_progress: Callable[[float], None] | None = None,
    on_load_failure: Callable[[], None] | None = None,
    load: Callable[[Settings, Callable[[float], None]], Runtime] = load_runtime,
) -> FastAPI:
    """`on_load_failure` is called when the model cannot load: with one model there is nothing
    to serve, so the CLI ends the process non-zero, as llama-server does. `load` makes the
    runtime (a test serves a scripted one)."""
    state = LoadingState()
    mcp = McpTools(read_mcp_servers(settings.mcp_servers_config, settings.mcp_servers_json))

    def progress(value: float) -> None:
        state.progress = value
        if on_progress is not None:
            on_progress(value)

    def load_in_background() -> None:
        # Loading runs beside the server so that /health can say "loading" meanwhile.
        try:
            state.runtime = load(settings, progress)
            log.info("model loaded: %s", state.runtime.model_path)
        except Exception as exc:
            state.error = str(exc)
            log.error("could not load the model: %s", exc)
            if on_load_failure is not None:
                on_load_failure()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        loader = threading.Thread(target=load_in_background, name="endmark-load", daemon=True)
        loader.start()
        if mcp:
            await mcp.discover()
        yield
        await mcp.aclose()
        loader.join()
        if state.runtime is not None:
            state.runtime.close()

    dialect.register(DIALECTS)
    app = FastAPI(title="endmark", lifespan=lifespan)
    app.state.loading = state
    app.state.settings = settings
    app.state.responses = ResponseStore()
    app.state.mcp = mcp
    install_error_handlers(app)
    install_security(
        app,
        settings.api_keys(),
        settings.max_body_bytes,
        CorsPolicy.of(settings),
        settings.api_prefix,
    )
    for spoken in DIALECTS:
        for module in spoken.routes:
            app.include_router(importlib.import_module(module).router)
    app.include_router(metrics.router)
    app.include_router(tool_routes)
    install_openapi(app, DIALECTS)
    if settings.ui:  # llama-server's --no-ui turns the page off
        app.mount("/static", StaticFiles(directory=WEB), name="static")

        @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
        async def chat_page() -> FileResponse:
            return FileResponse(WEB / "index.html")

    return app
