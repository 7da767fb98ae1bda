"""Router mode's models from Hugging Face, as llama-server's router has them.

- The cached models join the catalog beside `--models-dir` (id `user/repo:TAG`).
- `POST /models {"model": "user/repo:tag"}` checks the name with the hub, then downloads in
  the background; the model joins the catalog when it is in.
- `GET /models/sse` streams `{"model", "event", "data"}` events: `download_progress` (per file
  URL, `done` and `total` bytes), `download_finished` / `download_failed`, `model_status`
  (loading, loaded, unloaded) and `model_remove`.
- `DELETE /models?model=` removes a cached model (a download in progress is cancelled).
Ollama's `/api/pull` and `/api/delete` reach the same catalog through `app.state.hub_catalog`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from endmark.hub.cache import CachedModel, find_cached, list_cached, remove_cached
from endmark.hub.download import HubError, Progress, offline_mode, plan, token_of
from endmark.hub.names import BadName, ModelRef, parse_ref
from endmark.hub.tasks import FetchFailed, Finished, fetch_events
from endmark.multimodel.catalog import ModelEntry
from endmark.multimodel.pool import UnknownModel, WorkerPool
from endmark.server.http.errors import ApiError
from endmark.server.http.stream import json_bytes

PROGRESS_EVERY = 0.1  # seconds between two download_progress events of one model


def cached_entries(taken: set[str]) -> list[ModelEntry]:
    """The cached models, for the catalog: those whose name no other model has."""
    return [
        ModelEntry(m.name, m.path, (f"hf.co/{m.name}",))
        for m in list_cached()
        if m.name not in taken and f"hf.co/{m.name}" not in taken
    ]


@dataclass
class Download:
    name: str
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: dict[str, dict[str, int]] = field(default_factory=dict)
    sent: float = 0.0


class Downloads:
    """The router's downloads, its catalog's cached models, and the event stream of both."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.running: dict[str, Download] = {}
        self._listeners: set[asyncio.Queue[dict[str, Any]]] = set()
        self._status = {w.entry.id: w.status for w in pool.workers.values()}
        self._tasks: set[asyncio.Task[None]] = set()
        pool.listeners.append(self._pool_changed)

    # -- events -----------------------------------------------------------------------------

    def send(self, model: str, event: str, data: Any = None) -> None:
        line: dict[str, Any] = {"model": model, "event": event}
        if data is not None:
            line["data"] = data
        for queue in list(self._listeners):
            queue.put_nowait(line)

    def _pool_changed(self) -> None:
        for w in list(self.pool.workers.values()):
            if self._status.get(w.entry.id) != w.status:
                self._status[w.entry.id] = w.status
                self.send(w.entry.id, "model_status", {"status": w.status})

    async def events(self) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._listeners.add(queue)
        try:
            yield b": connected\n\n"
            while not self.pool.closing:  # a shutdown ends the stream, so the server can stop
                try:
                    line = await asyncio.wait_for(queue.get(), 0.5)
                except TimeoutError:
                    continue
                yield b"data: " + json_bytes(line) + b"\n\n"
        finally:
            self._listeners.discard(queue)

    # -- the catalog (HubCatalog) -----------------------------------------------------------

    async def pulled(self, model: CachedModel, typed: str = "") -> None:
        names = [n for n in (f"hf.co/{model.name}", typed) if n and n != model.name]
        self.pool.add(ModelEntry(model.name, model.path, tuple(dict.fromkeys(names))))
        self._status.setdefault(model.name, self.pool.workers[model.name].status)

    async def removed(self, name: str) -> None:
        download = self.running.get(name)
        if download is not None:
            download.cancel.set()
        if name in self.pool.workers:
            await self.pool.remove(self.pool.workers[name])
            self._status.pop(name, None)
        self.send(name, "model_remove")

    # -- downloads --------------------------------------------------------------------------

    async def start(self, name: str) -> str:
        """Check the name with the hub (a clear 400 if it cannot be had), then download in
        the background. Returns the model's id."""
        try:
            ref = parse_ref(name)
        except BadName as exc:
            raise ApiError(400, str(exc), "model") from None
        cached = find_cached(ref) if ref.tag else None
        if cached is None:
            if offline_mode():
                raise ApiError(400, f"{ref.name()} is not in the cache, and downloads are off")
            try:
                await asyncio.to_thread(plan, ref, token_of())
            except HubError as exc:
                raise ApiError(400, f"model validation failed, unable to download: {exc}") from None
        key = ref.name()
        if key in self.running:
            raise ApiError(400, f"{key} is already downloading")
        download = self.running[key] = Download(key)
        task = asyncio.ensure_future(self._run(ref, download))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return key

    async def _run(self, ref: ModelRef, download: Download) -> None:
        try:
            async for event in fetch_events(ref, cancel=download.cancel):
                if isinstance(event, Progress):
                    download.progress[event.url] = {"done": event.done, "total": event.total}
                    now = time.monotonic()
                    if now - download.sent >= PROGRESS_EVERY or event.done >= event.total:
                        download.sent = now
                        self.send(download.name, "download_progress", dict(download.progress))
                elif isinstance(event, Finished):
                    await self.pulled(event.model, download.name)
                    self.send(download.name, "download_finished")
                elif isinstance(event, FetchFailed):
                    self.send(download.name, "download_failed", {"error": event.message})
        finally:
            self.running.pop(download.name, None)

    def cards(self) -> list[dict[str, Any]]:
        """Models downloading, as `GET /models` lists them (llama-server's "downloading")."""
        return [
            {"id": d.name, "object": "model", "owned_by": "endmark",
             "status": {"value": "downloading", "progress": dict(d.progress)}}
            for d in self.running.values()
            if d.name not in self.pool.workers
        ]  # fmt: skip

    async def delete(self, name: str) -> None:
        """Remove a cached model (a worker serving it stops first), or cancel its download."""
        try:
            worker = self.pool.find(name)
        except UnknownModel:
            worker = None
        if worker is not None:
            ref = _ref_or_none(worker.entry.id)
            cached = find_cached(ref) if ref is not None else None
            if ref is None or cached is None or cached.path != worker.entry.path:
                raise ApiError(400, f"model '{name}' is not removable (not from the cache)")
            await self.removed(worker.entry.id)
            await asyncio.to_thread(remove_cached, ref)
            return
        ref = _ref_or_none(name)
        if ref is not None and ref.name() in self.running:
            await self.removed(ref.name())
            return
        raise ApiError(404, f"model '{name}' not found", "model")


def _ref_or_none(name: str) -> ModelRef | None:
    try:
        return parse_ref(name)
    except BadName:
        return None


def install_downloads(app: FastAPI, pool: WorkerPool) -> Downloads:
    downloads = Downloads(pool)
    app.state.hub_catalog = downloads

    @app.post("/models")
    async def download(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            body = None
        name = body.get("model") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            raise ApiError(400, "model must be a non-empty string", "model")
        return {"success": True, "model": await downloads.start(name)}

    @app.delete("/models")
    async def delete(model: str = "") -> dict[str, Any]:
        if not model:
            raise ApiError(400, "model is required: DELETE /models?model=NAME", "model")
        await downloads.delete(model)
        return {"success": True}

    @app.get("/models/sse")
    async def sse() -> StreamingResponse:
        return StreamingResponse(downloads.events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})  # fmt: skip

    return downloads
