"""Events from the scheduler's thread into an asyncio event loop, one wake-up at a time.

Waking a loop from another thread costs a write to its self-pipe on this side and a whole
turn of the loop on the other. Events that arrive while a wake-up is pending ride along with
it: all the streams' events of one decode step (delivered together, before the next decode
lets go of the GIL) reach the loop in one turn, and a loop that falls behind the model takes
all that came meanwhile in one turn too. The first event is never held: it wakes the loop.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


class Box(Protocol):
    def put_nowait(self, item: Any) -> None: ...


class Mailbox(Generic[T]):
    """One reader's queue on the loop: `asyncio.Queue` without its bounds, task counts and
    several waiters, which a stream's reader pays for at every token."""

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> T:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


_inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopInbox] = (
    weakref.WeakKeyDictionary()
)
_made = threading.Lock()


class LoopInbox:
    """One loop's inbox: `put` from any thread; the loop hands each item to its queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: list[tuple[Box, Any]] = []

    def put(self, queue: Box, item: Any) -> None:
        with self._lock:
            self._pending.append((queue, item))
            wake = len(self._pending) == 1  # else a wake-up is on its way
        if wake:
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop closed: nobody is left to read
                with self._lock:
                    self._pending.clear()

    def _drain(self) -> None:
        with self._lock:
            items, self._pending = self._pending, []
        for queue, item in items:
            queue.put_nowait(item)


def inbox_of(loop: asyncio.AbstractEventLoop) -> LoopInbox:
    """The loop's one inbox (made on first use)."""
    with _made:
        inbox = _inboxes.get(loop)
        if inbox is None:
            inbox = _inboxes[loop] = LoopInbox(loop)
        return inbox
