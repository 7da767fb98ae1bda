"""Router mode's Hugging Face models, on the local stand-in hub: `POST /models` downloads while
`/models/sse` streams its progress, the model joins the catalog and answers, `DELETE /models`
removes it; Ollama's `pull` / `list` / `chat` / `delete` do the same through `/api/*`."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.conftest import RunningServer, start_server, stop_server
from tests.gguf_factory import FAMILIES, build_gguf
from tests.hf_standin import HubStandin, tiny_standin

SMALL = ("-c", "256", "-np", "1")


class Events:
    """`GET /models/sse`, read in a thread into a list."""

    def __init__(self, url: str) -> None:
        self.seen: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self._thread.start()

    def _read(self, url: str) -> None:
        try:
            with httpx.stream("GET", f"{url}/models/sse", timeout=None) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        self.seen.append(json.loads(line[6:]))
        except httpx.HTTPError:
            pass  # the server stopped

    def wait_for(self, model: str, event: str, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mine = [e for e in self.seen if e["model"] == model]
            if any(e["event"] == event for e in mine):
                return mine
            time.sleep(0.05)
        raise AssertionError(f"no {event} for {model}: {self.seen}")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStandin]:
    yield from tiny_standin(tmp_path_factory.mktemp("hub-models"))


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory, hub: HubStandin) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("local-models")
    build_gguf(folder / "local.gguf", FAMILIES["mistral"])
    cache = tmp_path_factory.mktemp("cache")
    env = {"HF_ENDPOINT": hub.url, "LLAMA_CACHE": str(cache / "llama"),
           "HF_HOME": str(cache / "hf")}  # fmt: skip
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        server = start_server(tmp_path_factory.mktemp("router"), "--models-dir", str(folder),
                              *SMALL)  # fmt: skip
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    server.cache = cache / "llama"  # type: ignore[attr-defined]
    yield server
    stop_server(server)


def ids(server: RunningServer) -> list[str]:
    return [m["id"] for m in httpx.get(f"{server.url}/models", timeout=10).json()["data"]]


def test_post_models_downloads_with_progress_then_answers_and_delete_removes_it(
    router: RunningServer,
) -> None:
    events = Events(router.url)
    time.sleep(0.2)  # the stream is open before the download starts
    r = httpx.post(f"{router.url}/models", json={"model": "test/tiny-GGUF:q8_0"}, timeout=30)
    assert r.json() == {"success": True, "model": "test/tiny-GGUF:Q8_0"}
    seen = events.wait_for("test/tiny-GGUF:Q8_0", "download_finished")
    progress = [e["data"] for e in seen if e["event"] == "download_progress"]
    (url,) = progress[-1]
    assert url.endswith("/tiny-Q8_0.gguf") and progress[-1][url]["done"] == 477185
    assert [p[url]["done"] for p in progress] == sorted(p[url]["done"] for p in progress)
    assert "test/tiny-GGUF:Q8_0" in ids(router)
    client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="x")
    chat = client.chat.completions.create(
        model="test/tiny-GGUF:Q8_0", max_tokens=2, messages=[{"role": "user", "content": "hi"}]
    )
    assert chat.choices[0].finish_reason in ("stop", "length")
    statuses = [e["data"]["status"] for e in events.wait_for("test/tiny-GGUF:Q8_0", "model_status")
                if e["event"] == "model_status"]  # fmt: skip
    assert statuses[:2] == ["loading", "loaded"]
    r = httpx.delete(f"{router.url}/models", params={"model": "test/tiny-GGUF:Q8_0"}, timeout=30)
    assert r.json() == {"success": True}
    events.wait_for("test/tiny-GGUF:Q8_0", "model_remove")
    assert "test/tiny-GGUF:Q8_0" not in ids(router)
    assert not list(router.cache.rglob("tiny-Q8_0.gguf"))  # type: ignore[attr-defined]


def test_bad_downloads_and_deletes_are_clear_errors(router: RunningServer) -> None:
    r = httpx.post(f"{router.url}/models", json={"model": "test/missing:Q4_0"}, timeout=30)
    assert r.status_code == 400 and "no model repo 'test/missing'" in r.text
    r = httpx.post(f"{router.url}/models", json={"model": "test/tiny-GGUF:IQ1_S"}, timeout=30)
    assert r.status_code == 400 and "(its tags: Q4_K_M, Q8_0)" in r.text
    r = httpx.delete(f"{router.url}/models", params={"model": "local"}, timeout=10)
    assert r.status_code == 400 and "not removable" in r.text
    r = httpx.delete(f"{router.url}/models", params={"model": "test/tiny-GGUF:Q2_K"}, timeout=10)
    assert r.status_code == 404


def test_ollama_pull_list_chat_and_delete(router: RunningServer) -> None:
    client = ollama.Client(host=router.url)
    name = "hf.co/test/tiny-GGUF:Q4_K_M"
    parts = list(client.pull(name, stream=True))
    assert parts[0].status == "pulling manifest" and parts[-1].status == "success"
    completed = [p.completed for p in parts if p.digest]
    assert completed == sorted(completed) and completed[-1] == parts[1].total == 477184
    assert parts[1].digest.startswith("sha256:") and parts[1].status.startswith("pulling ")
    assert "verifying sha256 digest" in [p.status for p in parts]
    assert name in [m.model for m in client.list().models] or "test/tiny-GGUF:Q4_K_M" in [
        m.model for m in client.list().models
    ]
    answer = client.chat(model=name, messages=[{"role": "user", "content": "hi"}],
                         options={"num_predict": 2})  # fmt: skip
    assert answer.done and answer.done_reason in ("stop", "length")
    assert client.delete(name).status == "success"
    assert "test/tiny-GGUF:Q4_K_M" not in ids(router)
    with pytest.raises(ollama.ResponseError, match="no model repo 'test/missing'"):
        list(client.pull("hf.co/test/missing", stream=True))
