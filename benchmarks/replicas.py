"""Replicas on Ray Serve beside one server: 2 replicas of 1 thread against 1 server of 2
threads, on the same cores, at 1 and 8 clients. On one machine this shows what the Ray path
costs; the gain of replicas comes from more machines (see docs/scale-out.md)."""

from __future__ import annotations

import sys

import httpx

from benchmarks.servers import Server, free_port

NAME = "endmark, 2 replicas x 1 thread (Ray Serve)"


def endmark_replicas(model: str, slots: int = 4) -> Server:
    port = free_port()
    cmd = [
        sys.executable, "-m", "endmark", "serve", "-m", model, "--replicas", "2", "-t", "1",
        "--port", str(port), "-np", str(slots), "-c", str(1024 * slots),
    ]  # fmt: skip
    return Server(NAME, cmd, port)


def both_ready(server: Server) -> bool:
    return httpx.get(f"{server.url}/health", timeout=30).json().get("replicas") == 2
