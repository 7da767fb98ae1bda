"""Measuring a running server through HTTP, as its users would.

The client is kept lean (http.client, a JSON parse only of the last chunk) because on a
two-core machine every microsecond it spends per token is taken from the server under test.
"""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit


def stream_decode_rate(url: str, prompt: str, n_predict: int) -> dict[str, float]:
    """Stream one greedy completion; tokens per second from the first token to the last."""
    body = json.dumps(
        {
            "prompt": prompt,
            "n_predict": n_predict,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
            "cache_prompt": False,
        }
    )
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/completion", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
    first = last = 0.0
    n = 0
    final: dict[str, object] = {}
    for line in resp:
        if not line.startswith(b"data: "):
            continue
        if b'"stop": true' in line:
            final = json.loads(line[6:])
            break
        now = time.perf_counter()
        n += 1
        if n == 1:
            first = now
        last = now
    conn.close()
    return {
        "tokens": n,
        "ttft_ms": (first - start) * 1000.0,
        "tokens_per_second": (n - 1) / (last - first) if n > 1 and last > first else 0.0,
        "server_tokens_per_second": float(final.get("timings", {}).get("predicted_per_second", 0)),  # type: ignore[union-attr]
    }
