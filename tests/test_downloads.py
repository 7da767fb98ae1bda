"""Router mode's cached models and its catalog of downloads, in-process (no workers start)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from endmark.hub.download import fetch
from endmark.hub.names import parse_ref
from endmark.multimodel.catalog import ModelEntry
from endmark.multimodel.downloads import Downloads, cached_entries
from endmark.multimodel.pool import PoolLimits, WorkerPool
from endmark.server.http.errors import ApiError
from tests.gguf_factory import FAMILIES, build_gguf
from tests.hf_standin import HubStandin


def test_cached_models_join_the_catalog_and_leave_it_with_their_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = HubStandin()
    hub.add("test/tiny-GGUF", {"tiny-Q8_0.gguf": build_gguf(tmp_path / "t.gguf",
                                                            FAMILIES["llama3"])})  # fmt: skip
    hub.start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("LLAMA_CACHE", str(tmp_path / "cache"))
    try:
        model = fetch(parse_ref("test/tiny-GGUF:Q8_0"))
    finally:
        hub.stop()
    (entry,) = cached_entries(taken=set())
    assert (entry.id, entry.path, entry.aliases) == (
        model.name,
        model.path,
        (f"hf.co/{model.name}",),
    )
    assert cached_entries(taken={"test/tiny-GGUF:Q8_0"}) == []  # a name taken keeps its model

    local = ModelEntry("local", tmp_path / "t.gguf")
    pool = WorkerPool([local], lambda e, port: ([], {}), PoolLimits())
    seen: list[dict[str, object]] = []

    async def scenario() -> None:
        downloads = Downloads(pool)
        downloads._listeners.add(queue := asyncio.Queue())
        await downloads.pulled(model, "hf.co/test/tiny-GGUF:q8_0")
        assert pool.find("hf.co/test/tiny-GGUF:q8_0").entry.id == "test/tiny-GGUF:Q8_0"
        for name, status in (("local", 400), ("test/none:Q4_0", 404), ("nonsense", 404)):
            with pytest.raises(ApiError) as caught:
                await downloads.delete(name)
            assert caught.value.status == status
        await downloads.delete("hf.co/test/tiny-GGUF:Q8_0")  # by its alias
        while not queue.empty():
            seen.append(queue.get_nowait())

    asyncio.run(scenario())
    assert list(pool.workers) == ["local"] and not model.path.exists()
    assert seen == [{"model": "test/tiny-GGUF:Q8_0", "event": "model_remove"}]
