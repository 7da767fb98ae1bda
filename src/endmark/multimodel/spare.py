"""One spare worker for router mode: a process started ahead, with Python, endmark, FastAPI
and llama.cpp imported and no model, so that a cold request pays only its model's load.

The pool hands the spare a worker's command line and environment (one JSON line on its
stdin); the spare becomes that worker, and the pool starts the next spare. A spare whose
resident memory passes `SPARE_MAX_BYTES` once it is ready is not kept (a worker starts cold
instead): a spare costs its imports only, ~100-150 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("endmark.multimodel.spare")

SPARE_MAX_BYTES = 512 << 20
SPARE_WAIT_S = 30.0  # a cold load waits this long at most for a spare still starting
READY = b"endmark-spare ready "
COMMAND = ("-m", "endmark")  # a worker command the spare can become: `python -m endmark ...`


def resident_bytes(pid: int | str = "self") -> int:
    """A process's resident memory (Linux), 0 where unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class SpareWorker:
    """The pool's one spare process (none while it starts, or after it was taken)."""

    def __init__(self, env: dict[str, str]) -> None:
        self._env = env
        self._process: asyncio.subprocess.Process | None = None
        self._starting: asyncio.Event | None = None  # set once the spare being started is up
        self._closed = False
        self.rss = 0  # the last spare's resident bytes once ready

    async def refill(self) -> None:
        """Start a spare, and keep it once it says it is ready within its memory bound."""
        if self._closed or self._process is not None or self._starting is not None:
            return
        self._starting = asyncio.Event()
        try:
            await self._start()
        finally:
            self._starting.set()
            self._starting = None

    async def _start(self) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "endmark.multimodel.spare", env=self._env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        assert process.stdout is not None
        try:
            line = await process.stdout.readline()
        except asyncio.CancelledError:  # the pool closes meanwhile
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            raise
        self.rss = int(line[len(READY) :]) if line.startswith(READY) else 0
        if not self.rss or self.rss > SPARE_MAX_BYTES or self._closed:
            if self.rss > SPARE_MAX_BYTES:
                log.warning("the spare worker holds %d MiB, over its bound: not kept",
                            self.rss >> 20)  # fmt: skip
            await _end(process)
            return
        log.info("a spare worker is ready (%d MiB resident)", self.rss >> 20)
        self._process = process

    async def take(
        self, argv: Sequence[str], env: dict[str, str]
    ) -> asyncio.subprocess.Process | None:
        """The spare, made into the worker `argv` (None: no spare is ready, or `argv` is not
        an endmark command). A spare still starting is waited for: it is further on than a
        worker started now would be."""
        if tuple(argv[1:3]) != COMMAND or argv[0] != sys.executable:
            return None
        if self._starting is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._starting.wait(), SPARE_WAIT_S)
        process = self._process
        if process is None:
            return None
        self._process = None
        if process.returncode is not None:
            return None
        assert process.stdin is not None
        process.stdin.write(json.dumps({"argv": list(argv), "env": env}).encode() + b"\n")
        await process.stdin.drain()
        return process

    async def close(self) -> None:
        self._closed = True
        process, self._process = self._process, None
        if process is not None:
            await _end(process)


async def _end(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def main() -> int:
    """The spare process: import everything a worker needs, say so, then become the worker
    the pool asks for (or end, when the pool closes its stdin)."""
    import llama_cpp  # noqa: F401  (the costly imports, done ahead)

    import endmark.loading  # noqa: F401
    import endmark.server.app  # noqa: F401
    from endmark import cli

    sys.stdout.buffer.write(READY + str(resident_bytes()).encode() + b"\n")
    sys.stdout.flush()
    line = sys.stdin.readline()
    if not line:
        return 0
    order = json.loads(line)
    os.environ.clear()
    os.environ.update(order["env"])
    sys.argv = list(order["argv"])
    return cli.main(order["argv"][3:])


if __name__ == "__main__":
    sys.exit(main())
