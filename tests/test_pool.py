"""The worker pool's rules, with stand-in workers: a few lines of stdlib HTTP server each.

Loading a real model per case would take seconds; what is tested here is which process runs
when (limits, LRU, busy models kept, crashes, keep-alive), which needs no model.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from endmark.multimodel.catalog import ModelEntry
from endmark.multimodel.pool import (
    LOADED,
    UNLOADED,
    LoadFailed,
    PoolLimits,
    UnknownModel,
    WorkerPool,
)

STAND_IN = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
print("stand-in up", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def entries(tmp_path: Path, n: int, size: int = 100) -> list[ModelEntry]:
    out = []
    for i in range(n):
        path = tmp_path / f"m{i}.gguf"
        path.write_bytes(b"GGUF" + b"\0" * (size - 4))
        out.append(ModelEntry(f"m{i}", path, aliases=(f"alias{i}",)))
    return out


def make_pool(tmp_path: Path, n: int, script: str = STAND_IN, **limits: object) -> WorkerPool:
    code = tmp_path / "stand_in.py"
    code.write_text(script)

    def command(entry: ModelEntry, port: int) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, str(code), str(port)], dict(os.environ)

    return WorkerPool(entries(tmp_path, n), command, PoolLimits(**limits))  # type: ignore[arg-type]


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 60))


def loaded_ids(pool: WorkerPool) -> list[str]:
    return sorted(w.entry.id for w in pool.loaded())


def test_names_find_models_by_id_alias_and_ollama_tag(tmp_path: Path) -> None:
    pool = make_pool(tmp_path, 2)
    assert pool.find("m1").entry.id == "m1"
    assert pool.find("alias0").entry.id == "m0"
    assert pool.find("m0:latest").entry.id == "m0"
    with pytest.raises(UnknownModel, match="'nope'"):
        pool.find("nope")


def test_least_recently_used_idle_model_makes_room(tmp_path: Path) -> None:
    async def scenario() -> None:
        pool = make_pool(tmp_path, 3, models_max=2)
        pool.start()
        try:
            for name in ("m0", "m1", "m0", "m2"):  # m1 is then the least recently used
                async with pool.lease(pool.find(name)) as w:
                    assert w.status == LOADED
                    r = httpx.get(f"{w.url}/health")
                    assert r.status_code == 200
                assert len(pool.loaded()) <= 2
            assert loaded_ids(pool) == ["m0", "m2"]
        finally:
            await pool.close()

    run(scenario())


def test_a_busy_model_is_never_unloaded_and_a_newcomer_waits(tmp_path: Path) -> None:
    async def scenario() -> None:
        pool = make_pool(tmp_path, 2, models_max=1)
        pool.start()
        try:
            order = []
            async with pool.lease(pool.find("m0")):

                async def second() -> None:
                    async with pool.lease(pool.find("m1")):
                        order.append("m1 served")

                waiting = asyncio.ensure_future(second())
                await asyncio.sleep(0.5)
                assert not waiting.done() and pool.find("m0").status == LOADED
                order.append("m0 done")
            await waiting
            assert order == ["m0 done", "m1 served"]
            assert loaded_ids(pool) == ["m1"]
        finally:
            await pool.close()

    run(scenario())


def test_memory_budget_limits_the_total_size(tmp_path: Path) -> None:
    async def scenario() -> None:
        # stand-ins are small processes; a budget below two of them lets one in at a time
        pool = make_pool(tmp_path, 2, models_max=0, memory_bytes=1)
        pool.start()
        try:
            async with pool.lease(pool.find("m0")):
                pass
            async with pool.lease(pool.find("m1")):
                pass
            assert loaded_ids(pool) == ["m1"]
        finally:
            await pool.close()

    run(scenario())


def test_a_killed_worker_is_loaded_again_on_the_next_request(tmp_path: Path) -> None:
    async def scenario() -> None:
        pool = make_pool(tmp_path, 1)
        pool.start()
        try:
            async with pool.lease(pool.find("m0")) as w:
                first = w.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            for _ in range(50):
                if w.status == UNLOADED:
                    break
                await asyncio.sleep(0.05)
            assert w.status == UNLOADED and w.exit_code == -signal.SIGKILL
            async with pool.lease(pool.find("m0")) as w:
                assert w.status == LOADED and w.pid != first
        finally:
            await pool.close()

    run(scenario())


def test_keep_alive_zero_unloads_after_the_request_and_a_duration_later(tmp_path: Path) -> None:
    async def scenario() -> None:
        pool = make_pool(tmp_path, 2)
        pool.start()
        try:
            async with pool.lease(pool.find("m0"), keep_alive=0):
                pass
            assert pool.find("m0").status == UNLOADED
            async with pool.lease(pool.find("m1"), keep_alive=0.3):
                pass
            assert pool.find("m1").status == LOADED
            await asyncio.sleep(1.2)
            assert pool.find("m1").status == UNLOADED
        finally:
            await pool.close()

    run(scenario())


def test_a_worker_that_cannot_start_fails_the_load_with_its_output(tmp_path: Path) -> None:
    async def scenario() -> None:
        pool = make_pool(tmp_path, 1, script="print('no such model file'); raise SystemExit(1)")
        pool.start()
        try:
            with pytest.raises(LoadFailed, match="no such model file"):
                async with pool.lease(pool.find("m0")):
                    pass
            assert pool.find("m0").status == UNLOADED
            assert "exited with code 1" in (pool.find("m0").error or "")
        finally:
            await pool.close()

    run(scenario())
