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
