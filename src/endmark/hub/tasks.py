"""Downloads for servers: `fetch` in a thread, its progress as an async stream of events.

The Ollama dialect's `/api/pull` and the router's `POST /models` both use this. A server that
can serve a pulled model (router mode) sets `app.state.hub_catalog` to a `HubCatalog`; a
single-model server has none, and pulled models only wait in the cache.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from endmark.hub.cache import CachedModel
from endmark.hub.download import HubError, Progress, fetch
from endmark.hub.names import ModelRef


class HubCatalog(Protocol):
    """What a server does when a model arrives in the cache, or leaves it."""

    async def pulled(self, model: CachedModel, typed: str = "") -> None:
        """`typed`: the name the client asked for, which then names the model too."""

    async def removed(self, name: str) -> None:
        """Before the files go: stop serving the model."""


@dataclass
class Finished:
    model: CachedModel


@dataclass
class FetchFailed:
    message: str


Event = Progress | Finished | FetchFailed


async def fetch_events(
    ref: ModelRef, token: str | None = None, cancel: threading.Event | None = None
) -> AsyncIterator[Event]:
    """Progress events, then `Finished` or `FetchFailed`. Closing the stream early cancels the
    download (its partial file stays, to resume)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event] = asyncio.Queue()
    stop = cancel or threading.Event()

    def report(p: Progress) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, p)

    def work() -> None:
        try:
            out: Event = Finished(fetch(ref, token, None, report, stop))
        except HubError as exc:
            out = FetchFailed(str(exc))
        except Exception as exc:  # noqa: BLE001 (a bug or an OS error: the client hears of it)
            out = FetchFailed(f"{type(exc).__name__}: {exc}")
        loop.call_soon_threadsafe(queue.put_nowait, out)

    thread = threading.Thread(target=work, name=f"fetch {ref.name()}", daemon=True)
    thread.start()
    try:
        while True:
            event = await queue.get()
            yield event
            if not isinstance(event, Progress):
                return
    finally:
        stop.set()  # a no-op once the download is over
