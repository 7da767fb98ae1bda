"""Measuring a running server through its OpenAI-compatible API, as its users would.

Every server under test speaks `/v1/completions` and `/v1/chat/completions`, so one client
measures them all. The client is lean (http.client, one JSON parse per response, none per
streamed chunk) because on a two-core machine every microsecond it spends per token is taken
from the server under test.
"""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from typing import Any
from urllib.parse import urlsplit


def post(url: str, path: str, body: dict[str, Any]) -> http.client.HTTPResponse:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status} from {path}: {resp.read()[:300]!r}")
    return resp


def stream_rate(url: str, path: str, body: dict[str, Any]) -> dict[str, float]:
    """Stream one request; chunks per second from the first to the last, and time to first."""
    start = time.perf_counter()
    resp = post(url, path, {**body, "stream": True})
    first = last = 0.0
    n = 0
    for line in resp:
        if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
            continue
        if b'"content":""' in line.replace(b" ", b"") and b'"role"' in line:
            continue  # the chat role preamble carries no token
        now = time.perf_counter()
        n += 1
        if n == 1:
            first = now
        last = now
    resp.close()
    return {
        "chunks": n,
        "ttft_ms": (first - start) * 1000.0,
        "tokens_per_second": (n - 2) / (last - first) if n > 2 and last > first else 0.0,
    }


FIRST_TOKENS = 5  # short streams behind each time to first token (one alone is ~15 ms of noise)


def first_token_ms(url: str, body: dict[str, Any], n: int = FIRST_TOKENS) -> float:
    """The median time to the first chunk of `n` short streams (2 tokens) of `body`'s prompt,
    which a stream just before has cached: one decode and the round trip, in every server
    alike, whatever other requests have done to its slots before."""
    short = {**body, "max_tokens": 2}
    firsts = [stream_rate(url, "/v1/completions", short)["ttft_ms"] for _ in range(n)]
    return statistics.median(firsts)


def server_decode_rate(url: str, path: str, body: dict[str, Any]) -> float:
    """The server's own decode rate for one whole request (endmark's `timings`), free of the
    time the prompt and the HTTP round trip take."""
    answer = json.loads(post(url, path, body).read())
    timings = answer.get("timings") or answer["endmark"]["timings"]
    return float(timings["predicted_per_second"])


def embed_ms_per_input(url: str, inputs: list[str], batched: bool) -> float:
    """Milliseconds per input for `/v1/embeddings`: all inputs in one call, or a call each."""
    start = time.perf_counter()
    for body in [{"input": inputs}] if batched else [{"input": x} for x in inputs]:
        post(url, "/v1/embeddings", body).read()
    return (time.perf_counter() - start) * 1000.0 / len(inputs)


def prompt_rate(url: str, prompt: str) -> float:
    """Prompt tokens per second: one token generated after a long, never-seen prompt."""
    start = time.perf_counter()
    body = {"prompt": prompt, "max_tokens": 1, "temperature": 0, "cache_prompt": False}
    usage = json.loads(post(url, "/v1/completions", body).read())["usage"]
    return float(usage["prompt_tokens"]) / (time.perf_counter() - start)


def aggregate_rate(url: str, clients: int, body: dict[str, Any]) -> float:
    """`clients` concurrent `/v1/completions`; all generated tokens over the wall time."""
    counts = [0] * clients
    errors: list[Exception] = []

    def one(i: int) -> None:
        try:
            resp = post(url, "/v1/completions", body)
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


def answer_rate(url: str, path: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """One whole request: completion tokens over the wall time, prompt included (what the
    user waits for), and the answer itself."""
    start = time.perf_counter()
    answer = json.loads(post(url, path, body).read())
    elapsed = time.perf_counter() - start
    return float(answer["usage"]["completion_tokens"]) / elapsed, answer
