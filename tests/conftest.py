"""Shared fixtures: the bundled model, one engine, and a real server on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from benchmarks.servers import free_port
from endmark.models import bundled_model_path

CHATML_PROMPT = (
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
)
MARKERS = ("<|im_end|>", "<|im_start|>", "<|endoftext|>")
# The chat question the dialects' tests ask. "Answer in one word." keeps the greedy answer the
# same whether its prompt is evaluated whole or after a cached prefix: without it, this Q4_1
# model's two numerics answer differently (one of them never ends), so a test's answer would
# depend on what the tests before it left in the cache.
CAPITAL = "What is the capital of France? Answer in one word."


@pytest.fixture(scope="session", autouse=True)
def own_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The suite neither sees nor fills the user's model cache (`-hf`, Ollama's /api/tags and
    the router's catalog list what is in it): an empty one of its own."""
    patch = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("model-cache")
    patch.setenv("LLAMA_CACHE", str(folder / "llama"))
    patch.setenv("HF_HOME", str(folder / "hf"))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def model_path() -> Path:
    return bundled_model_path()


@pytest.fixture(scope="session")
def engine(model_path: Path):  # type: ignore[no-untyped-def]
    from endmark.engine.llamacpp import LlamaCppEngine

    eng = LlamaCppEngine(str(model_path), n_ctx=2048, n_threads=2, n_seq_max=4)
    yield eng
    eng.close()


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    tmp: Path, *args: str, timeout: float = 120.0, health: str = "/health"
) -> RunningServer:
    """`endmark serve` in a child process; returns once `health` (/health) says ok."""
    port = free_port()
    log_path = tmp / f"server-{port}.log"
    cmd = [sys.executable, "-m", "endmark", "serve", "--port", str(port), "-t", "2", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}{health}", timeout=2).status_code == 200:
                return RunningServer(url, proc, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not become healthy:\n{log_path.read_text()}")


def stop_server(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = start_server(tmp_path_factory.mktemp("server"), "--verbose", "--metrics")
    yield srv
    stop_server(srv)


@pytest.fixture()
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c
