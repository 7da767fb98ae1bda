"""Starting and stopping the servers under test on free loopback ports."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(cmd: list[str], port: int, health: str = "/health") -> Iterator[str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{' '.join(cmd[:4])} exited with {proc.returncode}")
            try:
                if httpx.get(url + health, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(cmd)} did not come up")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def endmark_cmd(model: str, threads: int, port: int, slots: int = 4) -> list[str]:
    return [
        sys.executable, "-m", "endmark", "serve", "-m", model, "-t", str(threads),
        "--port", str(port), "-np", str(slots), "-c", str(1024 * slots),
    ]  # fmt: skip


def llama_cpp_server_cmd(model: str, threads: int, port: int) -> list[str] | None:
    """llama-cpp-python's own server, or None when its extras are not installed."""
    try:
        import sse_starlette  # noqa: F401
        import starlette_context  # noqa: F401
    except ImportError:
        return None
    return [
        sys.executable, "-m", "llama_cpp.server", "--model", model, "--n_threads", str(threads),
        "--n_threads_batch", str(threads), "--port", str(port), "--n_ctx", "4096",
    ]  # fmt: skip
