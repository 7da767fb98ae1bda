"""The servers under test: how to start each, and reading their memory, on loopback ports."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from endmark.engine.backend import cpu_has_amx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    cmd: list[str]
    port: int
    health: str = "/health"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + self.health, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not come up")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def memory_mib(self) -> tuple[float, float]:
        """(resident now, peak resident) of the server process, from /proc, in MiB."""
        assert self.proc is not None
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def endmark(model: str, threads: int, slots: int = 4) -> Server:
    port = free_port()
    cmd = [
        sys.executable, "-m", "endmark", "serve", "-m", model, "-t", str(threads),
        "--port", str(port), "-np", str(slots), "-c", str(1024 * slots),
    ]  # fmt: skip
    return Server("endmark", cmd, port)


def llama_cpp_python(model: str, threads: int) -> Server | None:
    """llama-cpp-python's own server (through `llama_cpp_peer`, which keeps it off the AMX
    kernels that crash), or None when its extras are not installed."""
    try:
        import sse_starlette  # noqa: F401
        import starlette_context  # noqa: F401
    except ImportError:
        return None
    port = free_port()
    cmd = [
        sys.executable, "-m", "benchmarks.llama_cpp_peer", "--model", model,
        "--n_threads", str(threads), "--n_threads_batch", str(threads),
        "--port", str(port), "--n_ctx", "4096",
    ]  # fmt: skip
    return Server("llama-cpp-python server", cmd, port, health="/v1/models")


def llama_server(binary: Path, model: str, threads: int, slots: int = 4) -> Server:
    port = free_port()
    cmd = [
        str(binary), "-m", model, "-t", str(threads), "-tb", str(threads), "--port", str(port),
        "-np", str(slots), "-c", str(1024 * slots), "--host", "127.0.0.1", "--no-webui",
    ]  # fmt: skip
    if cpu_has_amx():  # its default, the AMX buffer, segfaults here at the warm-up batch, and
        cmd.append("--no-repack")  # -ot cannot name the repack buffer alone (endmark does)
    return Server("llama-server (C++)", cmd, port)
