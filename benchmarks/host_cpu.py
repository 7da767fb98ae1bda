"""endmark's own CPU per generated token: the scheduler's thread beside llama.cpp's decode,
and the event loop, read per thread from /proc (robust to a busy machine, unlike wall time).

`python -m benchmarks.host_cpu` starts endmark on the bundled model, streams one request at a
time and prints microseconds per token for each thread; `python -m benchmarks` adds the rows.
The scheduler's thread also computes its share of every decode (it is llama.cpp's first
thread), so its CPU inside `llama_decode` (the server's `endmark_decode_cpu_seconds`) is
taken off: what is left is endmark's Python (sampling, detokenizing, endings, events). An idle
event loop still ticks (uvicorn's housekeeping, ~10 wake-ups a second): its idle rate, taken
just before, is taken off for the request's wall time, which a busy machine stretches.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.clients import stream_rate
from benchmarks.servers import Server, endmark
from endmark.models import bundled_model_path
from endmark.thread_names import EVENT_LOOP, SCHEDULER

STORY = "Once upon a time, in a small village by the sea, there lived"


@dataclass(frozen=True)
class ThreadCpu:
    tid: int
    name: str
    seconds: float


def thread_cpu(pid: int) -> list[ThreadCpu]:
    """Each thread's CPU time so far: nanoseconds from `schedstat` where the kernel keeps it,
    else the `stat` ticks (10 ms each)."""
    out = []
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (entry / "comm").read_text().strip()
            try:
                seconds = int((entry / "schedstat").read_text().split()[0]) / 1e9
            except (OSError, ValueError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                seconds = (int(fields[11]) + int(fields[12])) / tick
        except OSError:  # the thread ended meanwhile
            continue
        out.append(ThreadCpu(int(entry.name), name, seconds))
    return out


def named(threads: list[ThreadCpu], name: str) -> ThreadCpu | None:
    """The oldest thread of that name: threads it started later inherit its name."""
    found = [t for t in threads if t.name == name]
    return min(found, key=lambda t: t.tid) if found else None


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "_total "):
            return float(line.split()[-1])
    raise RuntimeError(f"{name} is not in /metrics (is --metrics on?)")


def idle_rate(pid: int, seconds: float = 2.0) -> float:
    """The event loop's CPU seconds per second while nothing is asked of it."""
    before = named(thread_cpu(pid), EVENT_LOOP)
    time.sleep(seconds)
    after = named(thread_cpu(pid), EVENT_LOOP)
    return (after.seconds - before.seconds) / seconds if before and after else 0.0


def per_token(
    server: Server,
    n_predict: int,
    temperature: float = 0.0,
    path: str = "/v1/completions",
    stream: bool = True,
) -> dict[str, float]:
    """One request of `n_predict` tokens, streamed or answered whole; microseconds of CPU per
    generated token on the scheduler's thread (its decode left out) and on the event loop
    (its idle ticks left out)."""
    assert server.proc is not None
    pid = server.proc.pid
    idle = idle_rate(pid)
    before = thread_cpu(pid)
    decode0 = metric(server.url, "endmark_decode_cpu_seconds")
    tokens0 = metric(server.url, "endmark_generated_tokens")
    body = {"prompt": STORY, "max_tokens": n_predict, "temperature": temperature,
            "seed": 1, "ignore_eos": True}  # fmt: skip
    start = time.perf_counter()
    if stream:
        stream_rate(server.url, path, body)
    else:
        httpx.post(f"{server.url}{path}", json=body, timeout=600).raise_for_status()
    wall = time.perf_counter() - start
    after = thread_cpu(pid)
    decode = metric(server.url, "endmark_decode_cpu_seconds") - decode0
    tokens = metric(server.url, "endmark_generated_tokens") - tokens0
    out = {}
    for key, name in (("scheduler_us", SCHEDULER), ("loop_us", EVENT_LOOP)):
        t0, t1 = named(before, name), named(after, name)
        if t0 is None or t1 is None or t0.tid != t1.tid:
            raise RuntimeError(f"no thread named {name} in the server")
        out[key] = (t1.seconds - t0.seconds) * 1e6 / tokens
    out["scheduler_us"] -= decode * 1e6 / tokens
    out["loop_us"] -= idle * wall * 1e6 / tokens
    out["decode_us"] = decode * 1e6 / tokens
    out["host_us"] = out["scheduler_us"] + out["loop_us"]
    return out


def measure(
    model: str, threads: int, n_predict: int, repeats: int, temperature: float = 0.0
) -> dict[str, list[float]]:
    """`repeats` one-stream requests on a fresh server (after a warm-up), each followed by the
    same request answered whole (its figures under `whole_`), each thread's figure per
    request; greedy, or sampled at `temperature` (llama.cpp's default chain)."""
    server = endmark(model, threads)
    server.cmd.append("--metrics")
    figures: dict[str, list[float]] = {}
    server.start()
    try:
        stream_rate(server.url, "/v1/completions", {"prompt": STORY, "max_tokens": 8})
        for _ in range(repeats):
            for key, value in per_token(server, n_predict, temperature).items():
                figures.setdefault(key, []).append(value)
            for key, value in per_token(server, n_predict, temperature, stream=False).items():
                figures.setdefault(f"whole_{key}", []).append(value)
    finally:
        server.stop()
    return figures


def markdown(figures: dict[str, list[float]], model: str) -> str:
    """The section of docs/benchmarks.md."""
    rows = [
        ("scheduler thread, its decode left out", "scheduler_us"),
        ("event loop, its idle ticks left out", "loop_us"),
        ("endmark's own work per token (both)", "host_us"),
        ("an answer not streamed: scheduler thread", "whole_scheduler_us"),
        ("an answer not streamed: event loop", "whole_loop_us"),
        ("an answer not streamed: both", "whole_host_us"),
    ]
    lines = [
        "## Host CPU per generated token",
        "",
        f"`python -m benchmarks.host_cpu` (one greedy request at a time on `{Path(model).name}`, "
        "streamed, then the same answered whole): "
        "microseconds of CPU per generated token, per thread, from /proc; median (min-max).",
        "",
        "| thread | us per token |",
        "|---|---|",
    ]
    for label, key in rows:
        v = figures.get(key, [])
        cell = f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})" if v else "-"
        lines.append(f"| {label} | {cell} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.host_cpu")
    parser.add_argument("-m", "--model", default=str(bundled_model_path()))
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("-n", "--n-predict", type=int, default=256)
    parser.add_argument("-r", "--repeats", type=int, default=5)
    parser.add_argument("--temp", type=float, default=0.0, help="0: greedy")
    args = parser.parse_args()
    figures = measure(args.model, args.threads, args.n_predict, args.repeats, args.temp)
    medians = {k: round(statistics.median(v), 1) for k, v in figures.items()}
    print(json.dumps({"median_us_per_token": medians, "runs": figures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
