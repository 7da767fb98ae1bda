"""The worker processes of a multi-model server: one whole `endmark serve` per loaded model.

A model runs in its own process, as in llama-server's router mode, so an engine that aborts
takes down only its own worker. The pool loads a model when a request names it, keeps at most
`models_max` loaded (and, if set, within a memory budget), unloads the least recently used
idle one to make room, and never one that is answering. Ollama's `keep_alive` and the
server's idle timeout unload a model once it has been idle that long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from endmark.multimodel.catalog import ModelEntry
from endmark.multimodel.spare import SpareWorker

log = logging.getLogger("endmark.multimodel.pool")

# a worker's own log line starts with its time; the server's log line already has one
WORKER_LOG_HEAD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")
LOADING, LOADED, UNLOADED = "loading", "loaded", "unloaded"
LOAD_TIMEOUT = 600.0  # seconds a worker may take to load before it counts as failed
HEALTH_POLL_S = 0.01  # a loading worker is asked this often whether it is up: a cold request waits
REAP_EVERY = 0.5  # seconds between checks for idle models past their keep-alive


class UnknownModel(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"model '{name}' not found")
        self.name = name


class LoadFailed(RuntimeError):
    pass


@dataclass
class Worker:
    entry: ModelEntry
    status: str = UNLOADED
    process: asyncio.subprocess.Process | None = None
    port: int = 0
    busy: int = 0
    last_used: float = 0.0
    expires_at: float | None = None  # monotonic time an idle model unloads; None: never
    unload_when_idle: bool = False
    ready: asyncio.Future[None] | None = None
    error: str | None = None  # why the last load failed, or how the worker last exited
    exit_code: int | None = None
    loaded_in: float = 0.0
    log_tail: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def resident_bytes(self) -> int:
        """The worker's resident memory (Linux), else the model file's size."""
        if self.pid is not None and self.status == LOADED:
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
            except OSError:
                pass
        return self.entry.path.stat().st_size


@dataclass
class PoolLimits:
    models_max: int = 4  # 0: no limit
    memory_bytes: int | None = None
    keep_alive: float | None = None  # default idle time before unloading; None: never
    stop_grace: float = 10.0


WorkerCommand = Callable[[ModelEntry, int], tuple[list[str], dict[str, str]]]


class WorkerPool:
    def __init__(
        self,
        entries: list[ModelEntry],
        command: WorkerCommand,
        limits: PoolLimits,
        headers: dict[str, str] | None = None,
        spare: bool = False,
    ) -> None:
        """`spare`: keep one worker process started ahead (`spare.py`), so that a cold model
        pays only its load."""
        self.workers = {e.id: Worker(e) for e in entries}
        self.spare = SpareWorker(worker_environment({})) if spare else None
        self._names = {name: e.id for e in entries for name in e.names()}
        self._command = command
        self.limits = limits
        self._changed = asyncio.Condition()
        self._headers = headers or {}
        self._reaper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.listeners: list[Callable[[], None]] = []  # told when a worker's status may change

    # -- names ------------------------------------------------------------------------------

    def find(self, name: str) -> Worker:
        """The model a request names: an id or alias, with Ollama's `:latest` tag or not."""
        for candidate in (name, name.removesuffix(":latest")):
            if candidate in self._names:
                return self.workers[self._names[candidate]]
        raise UnknownModel(name)

    @property
    def closing(self) -> bool:
        """The server is shutting down (streams that never end on their own should end)."""
        return self._closing

    def add(self, entry: ModelEntry) -> Worker:
        """A model that joins the catalog while serving (one pulled from Hugging Face); its
        names that another model has already are left out."""
        worker = self.workers.get(entry.id)
        if worker is None:
            worker = self.workers[entry.id] = Worker(entry)
        for name in entry.names():
            self._names.setdefault(name, entry.id)
        return worker

    async def remove(self, worker: Worker) -> None:
        """Take a model out of the catalog: its worker stops now, busy or not."""
        self.workers.pop(worker.entry.id, None)
        self._names = {n: i for n, i in self._names.items() if i != worker.entry.id}
        worker.status = UNLOADED
        await self._kill(worker)
        self._notify()

    def loaded(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.status in (LOADING, LOADED)]

    # -- leases -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(self, worker: Worker, keep_alive: float | None | str = "default"):  # type: ignore[no-untyped-def]
        """The worker, loaded, and counted busy until the block ends (never unloaded then)."""
        await self.ensure(worker)
        worker.busy += 1
        try:
            yield worker
        finally:
            worker.busy -= 1
            worker.last_used = time.monotonic()
            await self._after_use(worker, keep_alive)

    def _notify(self) -> None:
        """Wake the requests waiting for room (from anywhere, even under `_changed`)."""

        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        self._spawn(notify())
        for listener in self.listeners:
            listener()

    async def _after_use(self, worker: Worker, keep_alive: float | None | str) -> None:
        seconds = self.limits.keep_alive if keep_alive == "default" else keep_alive
        assert not isinstance(seconds, str)
        worker.expires_at = None if seconds is None else time.monotonic() + seconds
        if worker.busy == 0 and (worker.unload_when_idle or seconds == 0):
            await self.unload(worker, "keep_alive 0" if seconds == 0 else "unload asked")
        self._notify()

    async def ensure(self, worker: Worker) -> None:
        """Load the model if it is not, making room first; waits (without a timeout) while
        another request loads it."""
        while True:
            if worker.status == LOADED:
                if worker.process is not None and worker.process.returncode is None:
                    return
                worker.status = UNLOADED  # it died; `_watch` says so in the log
            if worker.status == LOADING and worker.ready is not None:
                await asyncio.shield(worker.ready)
                continue
            await self._make_room(worker)
            if worker.status == UNLOADED:
                self._start(worker)

    async def _make_room(self, worker: Worker) -> None:
        async with self._changed:
            while True:
                others = [w for w in self.loaded() if w is not worker]
                if worker.status != UNLOADED or self._fits(worker, others):
                    return
                idle = sorted(
                    (w for w in others if w.status == LOADED and w.busy == 0),
                    key=lambda w: w.last_used,
                )
                if idle:
                    await self.unload(idle[0], f"to make room for {worker.entry.id}")
                    continue
                log.info("%s waits for a busy model to finish", worker.entry.id)
                await self._changed.wait()

    def _fits(self, worker: Worker, others: list[Worker]) -> bool:
        lim = self.limits
        if lim.models_max > 0 and len(others) >= lim.models_max:
            return False
        if lim.memory_bytes is None or not others:
            return True  # one model alone is always let in
        used = sum(w.resident_bytes() for w in others)
        return used + worker.entry.path.stat().st_size <= lim.memory_bytes

    # -- processes --------------------------------------------------------------------------

    def _start(self, worker: Worker) -> None:
        worker.status = LOADING
        worker.error = None
        worker.unload_when_idle = False
        worker.ready = asyncio.get_running_loop().create_future()
        worker.ready.add_done_callback(lambda f: f.exception())  # nobody may be waiting
        self._spawn(self._load(worker))
        for listener in self.listeners:
            listener()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load(self, worker: Worker) -> None:
        started = time.monotonic()
        assert worker.ready is not None
        log.info("loading model %s (%s)", worker.entry.id, worker.entry.path)
        try:
            worker.port = free_port()
            argv, env = self._command(worker.entry, worker.port)
            taken = await self.spare.take(argv, env) if self.spare is not None else None
            worker.process = taken or await asyncio.create_subprocess_exec(
                *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            if taken is not None:
                assert self.spare is not None
                log.info("model %s: the spare worker took it", worker.entry.id)
                self._spawn(self.spare.refill())
            worker.log_tail = []
            self._spawn(self._pump_log(worker, worker.process))
            await self._wait_healthy(worker)
        except Exception as exc:
            worker.status = UNLOADED
            worker.error = str(exc) or type(exc).__name__
            await self._kill(worker)
            log.error("model %s failed to load: %s", worker.entry.id, worker.error)
            worker.ready.set_exception(LoadFailed(f"model '{worker.entry.id}' failed to load: "
                                                  f"{worker.error}"))  # fmt: skip
        else:
            worker.status = LOADED
            worker.loaded_in = time.monotonic() - started
            worker.last_used = time.monotonic()
            worker.expires_at = None
            log.info("model %s loaded in %.1f s (pid %s)", worker.entry.id, worker.loaded_in,
                     worker.pid)  # fmt: skip
            worker.ready.set_result(None)
            self._spawn(self._watch(worker, worker.process))
        self._notify()

    async def _wait_healthy(self, worker: Worker) -> None:
        assert worker.process is not None
        deadline = time.monotonic() + LOAD_TIMEOUT
        async with httpx.AsyncClient(timeout=2.0, headers=self._headers) as client:
            while time.monotonic() < deadline:
                if worker.process.returncode is not None:
                    tail = " | ".join(worker.log_tail[-3:])
                    raise LoadFailed(f"its worker exited with code {worker.process.returncode}"
                                     + (f": {tail}" if tail else ""))  # fmt: skip
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{worker.url}/health")).status_code == 200:
                        return
                await asyncio.sleep(HEALTH_POLL_S)
        raise LoadFailed(f"not ready after {LOAD_TIMEOUT:.0f} s")

    async def _pump_log(self, worker: Worker, process: asyncio.subprocess.Process) -> None:
        """The worker's output in the server's log, a line at a time, named by model (load
        progress arrives as `\\r`-separated updates)."""
        assert process.stdout is not None
        pending = b""
        while chunk := await process.stdout.read(4096):
            pending += chunk.replace(b"\r", b"\n")
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = WORKER_LOG_HEAD.sub("", raw.decode("utf-8", errors="replace")).strip()
                if line:
                    worker.log_tail = [*worker.log_tail[-19:], line]
                    log.info("[%s] %s", worker.entry.id, line)

    async def _watch(self, worker: Worker, process: asyncio.subprocess.Process) -> None:
        """A worker that exits on its own (a crash, a kill) leaves its model unloaded; the next
        request loads it again."""
        code = await process.wait()
        if worker.process is not process or worker.status != LOADED or self._closing:
            return  # stopped on purpose
        worker.status = UNLOADED
        worker.exit_code = code
        worker.error = f"its worker exited with code {code}"
        log.error("model %s: worker pid %s exited with code %s; it reloads on the next request",
                  worker.entry.id, process.pid, code)  # fmt: skip
        self._notify()

    async def unload(self, worker: Worker, why: str) -> None:
        """Stop the worker now if idle; a busy one stops when its last request ends."""
        if worker.status == UNLOADED:
            return
        if worker.busy > 0 or worker.status == LOADING:
            worker.unload_when_idle = True
            return
        log.info("unloading model %s (%s)", worker.entry.id, why)
        worker.status = UNLOADED
        worker.expires_at = None
        await self._kill(worker)
        self._notify()

    async def _kill(self, worker: Worker) -> None:
        process = worker.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.limits.stop_grace + 5)
        except TimeoutError:
            process.kill()
            await process.wait()

    # -- life -------------------------------------------------------------------------------

    def start(self) -> None:
        self._reaper = asyncio.ensure_future(self._reap())
        if self.spare is not None:
            self._spawn(self.spare.refill())

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_EVERY)
            now = time.monotonic()
            for w in list(self.workers.values()):
                if w.status == LOADED and w.busy == 0 and w.expires_at is not None:
                    if w.expires_at <= now:
                        await self.unload(w, "idle past its keep-alive")

    def terminate_all(self) -> None:
        """Pass a shutdown signal on: each worker drains its running requests in its own grace
        time, and then ends the rest cleanly, so the streams relayed from it close properly."""
        self._closing = True
        for w in self.workers.values():
            if w.process is not None and w.process.returncode is None:
                w.process.send_signal(signal.SIGTERM)

    async def close(self) -> None:
        self._closing = True
        if self._reaper is not None:
            self._reaper.cancel()
        if self.spare is not None:
            await self.spare.close()
        await asyncio.gather(*(self._kill(w) for w in self.workers.values()))
        for task in list(self._tasks):
            task.cancel()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_environment(values: dict[str, object]) -> dict[str, str]:
    """This process's environment with `ENDMARK_*` set to one worker's settings, so that
    every setting reaches it with its meaning (`Settings.from_env` reads them back)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENDMARK_")}
    for name, value in values.items():
        if value is not None:
            env[f"ENDMARK_{name.upper()}"] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def worker_argv(entry: ModelEntry, port: int) -> list[str]:
    names = ",".join(entry.names())
    return [sys.executable, "-m", "endmark", "serve", "-m", str(entry.path),
            "--host", "127.0.0.1", "--port", str(port), "-a", names, "--metrics"]  # fmt: skip
