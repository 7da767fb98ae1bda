"""Load with faults, on loopback only: many streaming clients, some leaving mid-stream.

`python -m benchmarks.load` starts endmark, runs two bounded rounds, checks that every
finished response is clean and complete and that all slots end idle, measures memory growth
between the rounds and how much a very slow reader slows the others, and writes
docs/reliability.md. The tests run the same code with smaller numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from benchmarks.servers import endmark
from endmark.models import bundled_model_path

MARKERS = ("<|im_end|>", "<|im_start|>", "<|endoftext|>")
PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nName a color.<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time",
    "The weather today is",
    "def add(a, b):",
]


@dataclass
class RoundStats:
    served: int = 0
    disconnected: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))]


async def _client(
    http: httpx.AsyncClient, url: str, until: float, rng: random.Random, leave_ratio: float,
    stats: RoundStats, max_tokens: int,
) -> None:  # fmt: skip
    while time.monotonic() < until:
        body = {
            "prompt": rng.choice(PROMPTS),
            "n_predict": rng.randint(8, max_tokens),
            "temperature": 0.7,
            "seed": rng.randint(0, 1 << 30),
            "stream": True,
        }
        leave_after = rng.randint(1, 4) if rng.random() < leave_ratio else 0
        start = time.perf_counter()
        try:
            async with http.stream("POST", f"{url}/completion", json=body) as r:
                if r.status_code != 200:
                    stats.errors[f"http {r.status_code}"] += 1
                    await asyncio.sleep(0.2)
                    continue
                text, last, seen = [], None, 0
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    event = json.loads(line[6:])
                    if "error" in event:
                        stats.errors["stream error"] += 1
                        break
                    text.append(event["content"])
                    last, seen = event, seen + 1
                    if leave_after and seen >= leave_after:
                        break
                if leave_after and not (last and last["stop"]):
                    stats.disconnected += 1
                    continue
                content = "".join(text)
                if last is None or not last["stop"] or any(m in content for m in MARKERS):
                    stats.errors["incomplete or unclean"] += 1
                    continue
                stats.served += 1
                stats.latencies.append(time.perf_counter() - start)
        except httpx.HTTPError as exc:
            stats.errors[type(exc).__name__] += 1


async def load_round(
    url: str, clients: int, seconds: float, leave_ratio: float, seed: int = 0,
    max_tokens: int = 40,
) -> RoundStats:  # fmt: skip
    """`clients` concurrent streaming clients for `seconds`, each request of 8 to
    `max_tokens` tokens; a share leaves mid-stream. Each client's last request, sent before
    the time is up, is still waited for."""
    stats = RoundStats()
    until = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(
            *(_client(http, url, until, random.Random(seed * 1000 + i), leave_ratio, stats,
                      max_tokens) for i in range(clients))
        )  # fmt: skip
    return stats


def slots_idle(url: str, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(s["is_processing"] for s in httpx.get(f"{url}/slots", timeout=10).json()):
            return True
        time.sleep(0.1)
    return False


async def _stream_rate(
    http: httpx.AsyncClient, url: str, body: dict[str, Any], delay: float
) -> float:
    """Tokens per second of one stream; `delay` seconds of sleep after every line read."""
    first = last = 0.0
    n = 0
    async with http.stream("POST", f"{url}/completion", json={**body, "stream": True}) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                now = time.perf_counter()
                n += 1
                first = first or now
                last = now
                if delay:
                    await asyncio.sleep(delay)
    return (n - 1) / (last - first) if n > 1 and last > first else 0.0


async def slow_reader_ratio(url: str, repeats: int = 3) -> float:
    """The others' speed beside a very slow reader, over their speed beside a fast one."""
    body = {"prompt": "Once upon a time", "n_predict": 120, "ignore_eos": True, "temperature": 0}
    third = {**body, "n_predict": 400}
    ratios = []
    async with httpx.AsyncClient(timeout=300) as http:
        for _ in range(repeats):
            rates = {}
            for delay in (0.0, 0.25):
                third_task = asyncio.ensure_future(_stream_rate(http, url, third, delay))
                await asyncio.sleep(0.2)
                others = await asyncio.gather(*(_stream_rate(http, url, body, 0) for _ in range(2)))
                rates[delay] = statistics.mean(others)
                third_task.cancel()
                await asyncio.gather(third_task, return_exceptions=True)
                slots_idle(url)
            ratios.append(rates[0.25] / rates[0.0])
    return statistics.median(ratios)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--leave", type=float, default=0.25)
    args = parser.parse_args()
    server = endmark(str(bundled_model_path()), threads=2)
    server.start()
    try:
        rounds, memory = [], []
        for i in range(2):
            rounds.append(
                asyncio.run(load_round(server.url, args.clients, args.seconds, args.leave, i))
            )
            idle = slots_idle(server.url)
            memory.append(server.memory_mib()[0])
            r = rounds[-1]
            print(f"round {i + 1}: served {r.served}, left {r.disconnected}, "
                  f"errors {dict(r.errors)}, slots idle: {idle}", file=sys.stderr)  # fmt: skip
        slow = asyncio.run(slow_reader_ratio(server.url))
    finally:
        server.stop()
    rows = []
    for i, r in enumerate(rounds, 1):
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(r.errors.items())) or "none"
        rows.append(
            f"| {i} | {r.served} | {r.disconnected} | {errors} | {r.percentile(0.5):.2f} | "
            f"{r.percentile(0.99):.2f} | {memory[i - 1]:.0f} |"
        )
    growth = (memory[1] - memory[0]) / memory[0] * 100
    text = f"""# Reliability

Made by `python -m benchmarks.load` on {date.today().isoformat()}; traffic to loopback only.
Each round: {args.clients} concurrent streaming clients for {args.seconds:.0f} s against one
endmark (bundled model, 4 slots), each sending short `/completion` requests back to back;
{args.leave:.0%} of requests leave after 1-4 chunks. A request counts as served when its
stream ended with `stop: true` and no end-token text.

| round | served | left mid-stream | errors | p50 latency s | p99 latency s | resident MiB after |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

- Resident memory growth from round 1 to round 2: **{growth:+.1f}%** (target < 10%).
- After each round every slot was idle (checked through `/slots`).
- A client reading its stream very slowly (0.25 s per chunk) beside two normal clients: the
  normal clients ran at **{slow:.2f}x** their speed beside a fast reader (target >= 0.9x):
  each client has its own queue, and the scheduler never waits on a socket.
"""
    out = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
