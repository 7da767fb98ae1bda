"""`python -m benchmarks`: run every measurement in one go and rewrite docs/benchmarks.md."""

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

from benchmarks.clients import stream_decode_rate
from benchmarks.servers import endmark_cmd, free_port, running
from endmark.models import bundled_model_path

PROMPT = (
    "<|im_start|>user\nWrite a long story about a lighthouse keeper.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
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
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


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


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("-m", "--model", default=str(bundled_model_path()))
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("-n", "--n-predict", type=int, default=128)
    parser.add_argument("-r", "--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print, leave the doc alone")
    args = parser.parse_args()

    bare: list[float] = []
    ours: list[float] = []
    ttft: list[float] = []
    port = free_port()
    with running(endmark_cmd(args.model, args.threads, port), port) as url:
        stream_decode_rate(url, PROMPT, 16)  # warm-up
        for _ in range(args.repeats):
            bare.append(bare_loop_rate(args.model, args.threads, args.n_predict))
            r = stream_decode_rate(url, PROMPT, args.n_predict)
            ours.append(r["tokens_per_second"])
            ttft.append(r["ttft_ms"])
    ratio = statistics.median(ours) / statistics.median(bare)
    paired = statistics.median(o / b for o, b in zip(ours, bare, strict=True))
    rows = [
        ("bare llama-cpp-python loop (greedy, C sampler)", summary(bare), "-"),
        ("endmark `/completion` stream over HTTP", summary(ours), summary(ttft)),
    ]
    table = "\n".join(
        ["| what | decode tok/s, median (min-max) | time to first token ms |", "|---|---|---|"]
        + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    )
    text = f"""# Benchmarks

Made by `python -m benchmarks` on {date.today().isoformat()}; every figure below comes from
one run of it. Machine: {machine()}. Model: `{Path(args.model).name}`, {args.threads} threads,
{args.n_predict} greedy tokens (`ignore_eos`), {args.repeats} repeats, alternating the two.

## Single-stream decode

{table}

endmark / bare loop: **{ratio:.2f}x** of the medians, {paired:.2f}x the median of the paired
runs (target >= 0.95x).

The bare loop is the ceiling for any Python server on llama-cpp-python: one `llama_decode` and
llama.cpp's own greedy sampler per token, nothing else. endmark's figure is measured by a
streaming HTTP client from the first token to the last, so it includes sampling in numpy,
detokenizing, end checks, the scheduler thread, the event loop and SSE framing. The client
is lean (`http.client`, one JSON parse at the end): on two cores its own per-token work would
otherwise be charged to the server. This machine's speed drifts by up to 20% from minute to
minute, which is why the two are alternated and the spread is shown.
"""
    print(text)
    if not args.no_write:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
