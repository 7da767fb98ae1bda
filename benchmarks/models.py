"""Several models in one server: time to first token on a cold model, a warm one, and one
switched back to, for endmark's router beside llama-server's (`--models-dir`, `--models-max 2`).

The folder holds the same model twice under two names, so both servers load the same work.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from benchmarks.clients import stream_rate
from benchmarks.servers import Server, free_port
from endmark.engine.backend import cpu_has_amx

MODELS = ("first", "second")
ASK = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "temperature": 0}


def model_folder(model: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in MODELS:
        link = folder / f"{name}.gguf"
        if not link.exists():
            link.symlink_to(Path(model).resolve())
    return folder


def endmark_router(folder: Path, threads: int) -> Server:
    import sys

    port = free_port()
    cmd = [
        sys.executable, "-m", "endmark", "serve", "--models-dir", str(folder), "--models-max",
        "2", "-t", str(threads), "--port", str(port), "-np", "4", "-c", "4096",
    ]  # fmt: skip
    return Server("endmark", cmd, port)


def llama_server_router(binary: Path, folder: Path, threads: int) -> Server:
    port = free_port()
    cmd = [
        str(binary), "--models-dir", str(folder), "--models-max", "2", "-t", str(threads),
        "-tb", str(threads), "--port", str(port), "-np", "4", "-c", "4096", "--host",
        "127.0.0.1", "--no-webui",
    ]  # fmt: skip
    if cpu_has_amx():  # as `servers.llama_server`: its models load without the AMX kernels
        cmd.append("--no-repack")
    return Server("llama-server (C++)", cmd, port)


def unload_all(url: str) -> None:
    for name in MODELS:
        httpx.post(f"{url}/models/unload", json={"model": name}, timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        data = httpx.get(f"{url}/models", timeout=10).json()["data"]
        if all(m["status"]["value"] == "unloaded" for m in data):
            return
        time.sleep(0.05)
    raise RuntimeError("models did not unload")


def ttft_ms(url: str, model: str) -> float:
    return stream_rate(url, "/v1/chat/completions", {**ASK, "model": model})["ttft_ms"]


def measure_router(server: Server, f: dict[str, list[float]]) -> None:
    """Cold: the first request to an unloaded model (its load included); warm: the next one;
    switch: back to the first model after a request to the second, both loaded."""
    unload_all(server.url)
    f["router_cold_ms"].append(ttft_ms(server.url, MODELS[0]))
    f["router_warm_ms"].append(ttft_ms(server.url, MODELS[0]))
    ttft_ms(server.url, MODELS[1])
    f["router_switch_ms"].append(ttft_ms(server.url, MODELS[0]))
