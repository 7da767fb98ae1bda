"""Measuring a running server through HTTP, as its users would.

The clients are kept lean (http.client, one JSON parse per response) because on a two-core
machine every microsecond a client spends per token is taken from the server under test.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any
from urllib.parse import urlsplit


def _post(url: str, path: str, body: dict[str, Any]) -> http.client.HTTPResponse:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    return resp


def stream_decode_rate(url: str, body: dict[str, Any]) -> dict[str, float]:
    """Stream one `/completion`; tokens per second from the first token to the last."""
    start = time.perf_counter()
    resp = _post(url, "/completion", {**body, "stream": True})
    first = last = 0.0
    n = 0
    for line in resp:
        if not line.startswith(b"data: "):
            continue
        if b'"stop": true' in line:
            break
        now = time.perf_counter()
        n += 1
        if n == 1:
            first = now
        last = now
    resp.close()
    return {
        "tokens": n,
        "ttft_ms": (first - start) * 1000.0,
        "tokens_per_second": (n - 1) / (last - first) if n > 1 and last > first else 0.0,
    }


def aggregate_rate(url: str, clients: int, body: dict[str, Any]) -> float:
    """`clients` concurrent `/v1/completions`; all generated tokens over the wall time."""
    counts = [0] * clients
    errors: list[Exception] = []

    def one(i: int) -> None:
        try:
            resp = _post(url, "/v1/completions", body)
            counts[i] = int(json.loads(resp.read())["usage"]["completion_tokens"])
        except Exception as exc:  # reported below, after the others finish
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return sum(counts) / elapsed
