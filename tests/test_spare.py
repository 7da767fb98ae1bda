"""The router's spare worker: started ahead, bounded, and made into the worker asked for."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from endmark.multimodel.pool import worker_environment
from endmark.multimodel.spare import SPARE_MAX_BYTES, SpareWorker


@pytest.mark.skipif(
    os.environ.get("ENDMARK_FULL_MATRIX") != "1",
    reason="imports all of endmark in a child (seconds): router mode's tests use the spare",
)
def test_a_spare_becomes_the_worker_it_is_handed() -> None:
    async def scenario() -> tuple[int, int, bytes]:
        spare = SpareWorker(worker_environment({}))
        await spare.refill()
        rss = spare.rss
        process = await spare.take([sys.executable, "-m", "endmark", "--version"], {})
        assert process is not None and process.stdout is not None
        out = await process.stdout.read()
        await process.wait()
        assert await spare.take([sys.executable, "-m", "endmark", "--version"], {}) is None
        await spare.close()
        return rss, process.returncode or 0, out

    rss, code, out = asyncio.run(scenario())
    assert 0 < rss <= SPARE_MAX_BYTES
    assert code == 0 and b"endmark" in out.lower()


def test_a_command_that_is_not_endmark_starts_cold() -> None:
    async def scenario() -> object:
        spare = SpareWorker(worker_environment({}))
        spare._process = object()  # type: ignore[assignment]  # a spare "ready": never started
        taken = await spare.take(["/bin/true"], {})
        spare._process = None
        return taken

    assert asyncio.run(scenario()) is None


def test_a_cold_load_waits_for_the_spare_that_is_starting() -> None:
    """A spare half through its imports is further on than a worker started now."""

    class Pipe:
        def __init__(self) -> None:
            self.written = b""

        def write(self, data: bytes) -> None:
            self.written += data

        async def drain(self) -> None:
            return None

    class Started:
        returncode = None
        stdin = Pipe()

    async def scenario() -> tuple[object, bytes]:
        spare = SpareWorker(worker_environment({}))
        spare._starting = asyncio.Event()
        started = Started()

        async def up() -> None:
            await asyncio.sleep(0.05)
            spare._process = started  # type: ignore[assignment]
            assert spare._starting is not None
            spare._starting.set()

        task = asyncio.ensure_future(up())
        taken = await spare.take([sys.executable, "-m", "endmark", "serve"], {"A": "1"})
        await task
        return taken, started.stdin.written

    taken, written = asyncio.run(scenario())
    assert isinstance(taken, object) and taken is not None
    assert b'"serve"' in written and b'"A": "1"' in written
