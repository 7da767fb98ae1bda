"""Slot files and the persistent prompt cache on the bundled model, across restarts.

One folder for slot files and one for the cache; servers started in turn on them: a slot is
saved, the server restarts, the slot is restored and the next request reads the restored
prefix from the slot; then the prompt cache alone restores a ~600-token prefix after the
restart, with the answer the cold prompt gave; a damaged file is deleted and logged, and the
answer is the same; another `-ctk` restores nothing, and the folder stays within its bound.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer, start_server, stop_server

SYSTEM = "You are a careful assistant. " + " ".join(
    f"Fact {i}: the lighthouse number {i} stands on the northern shore." for i in range(34)
)
PROMPT = (
    f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
    "What is the capital of France? Answer in one word.<|im_end|>\n<|im_start|>assistant\n"
)
ARGS = ("-c", "4096", "-np", "2")


def post(srv: RunningServer, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(f"{srv.url}{path}", json=body, timeout=120)


def ask(srv: RunningServer) -> tuple[str, int]:
    r = post(srv, "/completion", {"prompt": PROMPT, "n_predict": 6, "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()["content"], r.json()["tokens_cached"]


def cache_summary(srv: RunningServer) -> dict[str, Any]:
    return httpx.get(f"{srv.url}/slots", timeout=30).json()[0]["prompt_cache"]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.kv"))


@pytest.fixture(scope="module")
def cold(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The first server: the prompt decoded cold, slot 0 saved, and its answer."""
    tmp = tmp_path_factory.mktemp("slotcache")
    saves, cache = tmp / "slots", tmp / "cache"
    srv = start_server(tmp, *ARGS, "--slot-save-path", str(saves), "--cache-dir", str(cache))
    try:
        answer, cached = ask(srv)
        saved = post(srv, "/slots/0?action=save", {"filename": "sys.bin"})
        bad = [post(srv, "/slots/0?action=save", {"filename": name}).status_code
               for name in ("../x.bin", "a/b.bin")]  # fmt: skip
    finally:
        stop_server(srv)
    return {"tmp": tmp, "saves": saves, "cache": cache, "answer": answer, "cached": cached,
            "saved": saved.json(), "bad": bad}  # fmt: skip


def test_save_restart_restore_and_the_prefix_is_cached(cold: dict[str, Any]) -> None:
    assert cold["cached"] == 0 and cold["bad"] == [400, 400]
    saved = cold["saved"]
    assert saved["id_slot"] == 0 and saved["filename"] == "sys.bin"
    assert saved["n_saved"] > 500 and saved["n_written"] > 0 and saved["timings"]["save_ms"] > 0
    srv = start_server(cold["tmp"], *ARGS, "--slot-save-path", str(cold["saves"]),
                       "--cache-dir", str(cold["cache"]), "--metrics")  # fmt: skip
    try:
        restored = post(srv, "/slots/1?action=restore", {"filename": "sys.bin"}).json()
        assert restored["n_restored"] == saved["n_saved"]
        assert restored["n_read"] == saved["n_written"] and "restore_ms" in restored["timings"]
        answer, cached = ask(srv)  # from the restored slot, not the prompt cache
        assert cached > 500 and answer == cold["answer"]
        assert cache_summary(srv)["hits"] == 0
        erased = post(srv, "/slots/1?action=erase").json()
        assert erased["id_slot"] == 1 and erased["n_erased"] > cached
        answer, cached = ask(srv)  # the slots hold nothing: the prompt cache restores it
        assert cached > 500 and answer == cold["answer"]
        summary = cache_summary(srv)
        assert summary["hits"] == 1 and summary["restore_ms"] > 0
        metrics = httpx.get(f"{srv.url}/metrics", timeout=30).text
        assert 'endmark_prompt_cache_lookups_total{result="hit"} 1.0' in metrics
        # a damaged file: deleted with a log line, never loaded; the prompt is decoded
        for slot in (0, 1):
            post(srv, f"/slots/{slot}?action=erase")
        (path,) = cold["cache"].rglob("*.kv")
        raw = bytearray(path.read_bytes())
        raw[-64] ^= 0xFF
        path.write_bytes(bytes(raw))
        answer, cached = ask(srv)
        assert cached == 0 and answer == cold["answer"]
        assert "deleting bad file" in srv.log() and not path.exists()
    finally:
        stop_server(srv)


def test_another_cache_type_restores_nothing_and_the_bound_holds(cold: dict[str, Any]) -> None:
    before = folder_bytes(cold["cache"])
    assert before > 0  # the last server stored its slots' states at shutdown
    bound = str(before - 1)  # the f16 state no longer fits: the bound takes it
    srv = start_server(cold["tmp"], *ARGS, "-ctk", "q8_0", "--cache-dir", str(cold["cache"]),
                       "--cache-dir-size", bound)  # fmt: skip
    try:
        assert cache_summary(srv)["entries"] == 0
        assert "0 stored states" in srv.log() and "1 of other settings" in srv.log()
        assert folder_bytes(cold["cache"]) <= int(bound)
    finally:
        stop_server(srv)
