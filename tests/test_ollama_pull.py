"""Ollama's `/api/pull`, `/api/delete` and the pulled models in `/api/tags`, on a single-model
server (the scripted app) and the local stand-in hub."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hf_standin import HubStandin, tiny_standin, use_standin
from tests.scripted_app import ScriptedApp, ndjson_lines, scripted_app


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStandin]:
    yield from tiny_standin(tmp_path_factory.mktemp("models"))


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: HubStandin) -> Iterator[ScriptedApp]:
    use_standin(monkeypatch, hub, tmp_path)
    with scripted_app() as served:
        yield served


def test_a_pull_streams_ollamas_statuses_and_the_model_is_listed_then_deleted(
    app: ScriptedApp,
) -> None:
    lines = ndjson_lines(app.post("/api/pull", {"model": "hf.co/test/tiny-GGUF:q8_0"}).text)
    assert lines[0] == {"status": "pulling manifest"}
    assert lines[-3:] == [{"status": "verifying sha256 digest"}, {"status": "writing manifest"},
                          {"status": "success"}]  # fmt: skip
    pulling = lines[1:-3]
    digest = pulling[0]["digest"]
    assert digest.startswith("sha256:") and pulling[0]["status"] == f"pulling {digest[7:19]}"
    assert [p["completed"] for p in pulling] == sorted(p["completed"] for p in pulling)
    assert pulling[-1]["completed"] == pulling[-1]["total"] == 477185

    async def tags_then_delete() -> tuple[list[str], int, int]:
        async with app.client() as c:
            names = [m["name"] for m in (await c.get("/api/tags")).json()["models"]]
            gone = await c.request("DELETE", "/api/delete", json={"model": "test/tiny-GGUF:Q8_0"})
            again = await c.request("DELETE", "/api/delete", json={"name": "test/tiny-GGUF:Q8_0"})
            return names, gone.status_code, again.status_code

    names, gone, again = asyncio.run(tags_then_delete())
    assert names == ["scripted", "hf.co/test/tiny-GGUF:Q8_0"]  # the served one, then pulled
    assert (gone, again) == (200, 404)


def test_pull_errors_in_ollamas_words(app: ScriptedApp) -> None:
    lines = ndjson_lines(app.post("/api/pull", {"model": "hf.co/test/missing"}).text)
    assert lines[-1]["error"].startswith("no model repo 'test/missing'")
    r = app.post("/api/pull", {"model": "test/tiny-GGUF:IQ1_S", "stream": False})
    assert r.status_code == 400 and "its tags: Q4_K_M, Q8_0" in r.json()["error"]
    r = app.post("/api/pull", {"model": "tiny"})
    assert r.status_code == 400 and "not a Hugging Face model name" in r.json()["error"]
    r = app.post("/api/pull", {"model": "test/tiny-GGUF", "stream": False})
    assert r.json() == {"status": "success"}
