"""`python -m benchmarks`: every measurement in one run, written to docs/benchmarks.md.

Sections: single-stream decode (endmark over HTTP beside a bare llama-cpp-python loop),
constrained beside unconstrained decode, and aggregate throughput with 1/2/4/8 clients beside
llama-cpp-python's own server. Each figure is repeated and reported as median (min-max).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import date
from pathlib import Path

from benchmarks.clients import aggregate_rate, stream_decode_rate
from benchmarks.servers import endmark_cmd, free_port, llama_cpp_server_cmd, running
from endmark.models import bundled_model_path

PROMPT = (
    "<|im_start|>user\nWrite a long story about a lighthouse keeper.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
STORY = "Once upon a time, in a small village by the sea, there lived"
# Never complete within the token budget, so every step pays for the mask.
LONG_SCHEMA = {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 500}
CLIENTS = (1, 2, 4, 8)
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def bare_loop_rate(model: str, threads: int, n: int) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bare_loop", model, str(threads), str(n), PROMPT],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["tokens_per_second"])


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(a) / statistics.median(b) if a and b else float("nan")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def single_stream(args: argparse.Namespace) -> str:
    bare, plain, constrained, ttft = [], [], [], []
    greedy = {"prompt": PROMPT, "n_predict": args.n_predict, "temperature": 0}
    greedy |= {"ignore_eos": True, "cache_prompt": False}
    port = free_port()
    with running(endmark_cmd(args.model, args.threads, port), port) as url:
        stream_decode_rate(url, {**greedy, "n_predict": 16})  # warm-up
        stream_decode_rate(url, {**greedy, "n_predict": 4, "json_schema": LONG_SCHEMA})
        for _ in range(args.repeats):
            bare.append(bare_loop_rate(args.model, args.threads, args.n_predict))
            r = stream_decode_rate(url, greedy)
            plain.append(r["tokens_per_second"])
            ttft.append(r["ttft_ms"])
            r = stream_decode_rate(url, {**greedy, "json_schema": LONG_SCHEMA})
            constrained.append(r["tokens_per_second"])
    rows = [
        ["bare llama-cpp-python loop (greedy, C sampler)", summary(bare), "-"],
        ["endmark `/completion` stream over HTTP", summary(plain), summary(ttft)],
        ["endmark, same, under a JSON schema", summary(constrained), "-"],
    ]
    return f"""## Single-stream decode

{args.n_predict} greedy tokens (`ignore_eos`), {args.repeats} repeats, the three alternated.

{table(["what", "decode tok/s, median (min-max)", "time to first token ms"], rows)}

- endmark / bare loop: **{ratio(plain, bare):.2f}x** (target >= 0.95x).
- constrained / unconstrained: **{ratio(constrained, plain):.2f}x** (target >= 0.9x); the
  schema (an array of at least 500 short strings) never completes within the budget, so
  every token pays for an llguidance mask.

The bare loop is the ceiling for any Python server on llama-cpp-python: one `llama_decode` and
llama.cpp's own greedy sampler per token. endmark's figures are taken by a streaming HTTP
client from the first token to the last, so they include sampling in numpy, detokenizing,
end checks, the scheduler thread, the event loop and SSE framing. The client is lean
(`http.client`, one JSON parse at the end): on two cores its own per-token work would
otherwise be charged to the server.
"""


def concurrency(args: argparse.Namespace) -> str:
    body = {"prompt": STORY, "max_tokens": args.n_predict, "temperature": 0}
    results: dict[str, dict[int, list[float]]] = {}
    servers = {"endmark (4 slots)": endmark_cmd(args.model, args.threads, 0)}
    peer = llama_cpp_server_cmd(args.model, args.threads, 0)
    note = ""
    if peer is None:
        note = "\nllama-cpp-python's server was skipped: `pip install -e '.[bench]'` adds it.\n"
    else:
        servers["llama-cpp-python server"] = peer
    for name, cmd in servers.items():
        port = free_port()
        cmd = [str(port) if c == "0" and cmd[i - 1] == "--port" else c for i, c in enumerate(cmd)]
        health = "/health" if name.startswith("endmark") else "/v1/models"
        with running(cmd, port, health) as url:
            aggregate_rate(url, 1, {**body, "max_tokens": 8})  # warm-up
            results[name] = {c: [] for c in CLIENTS}
            for _ in range(args.repeats):
                for c in CLIENTS:
                    results[name][c].append(aggregate_rate(url, c, body))
    rows = [[name] + [summary(per[c]) for c in CLIENTS] for name, per in results.items()]
    ours = results["endmark (4 slots)"]
    lines = [
        f"- endmark 4 clients / 1 client: **{ratio(ours[4], ours[1]):.2f}x** (target >= 1.3x)."
    ]
    if "llama-cpp-python server" in results:
        theirs = results["llama-cpp-python server"]
        lines.append(
            f"- endmark / llama-cpp-python at 4 clients: **{ratio(ours[4], theirs[4]):.2f}x**"
            " (target >= 2x)."
        )
    header = ["server"] + [f"{c} client{'s' if c > 1 else ''} tok/s" for c in CLIENTS]
    return f"""## Many clients at once

Aggregate generated tokens per second over the wall time, with N clients each sending one
`/v1/completions` request ({args.n_predict} tokens max, greedy, the same story prompt) at
once; {args.repeats} repeats, median (min-max).
{note}
{table(header, rows)}

{chr(10).join(lines)}
"""


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("-m", "--model", default=str(bundled_model_path()))
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("-n", "--n-predict", type=int, default=128)
    parser.add_argument("-r", "--repeats", type=int, default=5)
    parser.add_argument("--only", choices=["single", "concurrency"], help="run one section")
    parser.add_argument("--no-write", action="store_true", help="print, leave the doc alone")
    args = parser.parse_args()

    sections = []
    if args.only in (None, "single"):
        sections.append(single_stream(args))
    if args.only in (None, "concurrency"):
        sections.append(concurrency(args))
    text = f"""# Benchmarks

Made by `python -m benchmarks` on {date.today().isoformat()}; every figure below comes from
one run of it. Machine: {machine()}. Model: `{Path(args.model).name}`, {args.threads} threads
for every server. This machine's speed drifts by up to 20% from minute to minute, which is
why the contenders are alternated and the spread is shown.

""" + "\n".join(sections)
    print(text)
    if not args.no_write:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
