"""Ollama's `/api/pull` and `/api/delete`, for models on Hugging Face (`hf.co/user/repo:tag`,
as `ollama pull` names them), and the pulled models that `/api/tags` lists.

A pull streams Ollama's statuses: `pulling manifest`, then per file `pulling <digest>` with
`digest`, `total` and `completed`, `verifying sha256 digest`, `writing manifest`, `success`; a
failure is an `error` line, as Ollama writes it. Where the server can serve more models (router
mode: `app.state.hub_catalog`), the pulled model joins them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from endmark.hub.cache import CachedModel, find_cached, list_cached, remove_cached
from endmark.hub.download import Progress
from endmark.hub.names import BadName, ModelRef, parse_ref
from endmark.hub.tasks import FetchFailed, Finished, HubCatalog, fetch_events
from endmark.server.dialects.ollama_protocol import DeleteRequest, PullRequest, file_listing
from endmark.server.http.errors import ApiError, parse_body
from endmark.server.http.stream import ndjson_stream

router = APIRouter()


def ollama_name(model: CachedModel) -> str:
    return f"hf.co/{model.name}"


def pulled_listing(skip: str | None = None) -> list[dict[str, Any]]:
    """The cached models as `/api/tags` lists them (`skip`: a path already listed)."""
    return [
        file_listing(ollama_name(m), m.path, {"format": "gguf", "quantization_level": m.tag})
        for m in list_cached()
        if str(m.path) != skip
    ]


def _ref(name: str) -> ModelRef:
    if not name:
        raise ApiError(400, "model is required", "model")
    try:
        return parse_ref(name)
    except BadName as exc:
        raise ApiError(400, str(exc), "model") from None


def _catalog(request: Request) -> HubCatalog | None:
    return getattr(request.app.state, "hub_catalog", None)


def status_line(p: Progress) -> dict[str, Any]:
    if p.status == "verifying":
        return {"status": "verifying sha256 digest"}
    digest = f"sha256:{p.sha256}" if p.sha256 else p.file
    short = p.sha256[:12] if p.sha256 else p.file
    return {"status": f"pulling {short}", "digest": digest, "total": p.total,
            "completed": p.done}  # fmt: skip


@router.post("/api/pull")
async def pull(request: Request) -> Any:
    body = await parse_body(request, PullRequest)
    typed = body.model or body.name
    ref = _ref(typed)
    catalog = _catalog(request)

    async def lines() -> AsyncIterator[dict[str, Any]]:
        yield {"status": "pulling manifest"}
        async for event in fetch_events(ref):
            if isinstance(event, Progress):
                if event.status != "done":
                    yield status_line(event)
            elif isinstance(event, FetchFailed):
                yield {"error": event.message}
            elif isinstance(event, Finished):
                yield {"status": "writing manifest"}
                if catalog is not None:
                    await catalog.pulled(event.model, typed)
                yield {"status": "success"}

    if body.stream:
        return ndjson_stream(lines())
    async for line in lines():
        if "error" in line:  # a name the hub cannot give, or no hub to ask: not a server fault
            raise ApiError(400, line["error"])
    return {"status": "success"}


@router.delete("/api/delete")
async def delete(request: Request) -> dict[str, str]:
    body = await parse_body(request, DeleteRequest)
    name = body.model or body.name
    ref = _ref(name)
    model = find_cached(ref)
    if model is None:
        raise ApiError(404, f"model '{name}' not found")
    catalog = _catalog(request)
    if catalog is not None:
        await catalog.removed(model.name)
    await asyncio.to_thread(remove_cached, ref)
    return {"status": "success"}
