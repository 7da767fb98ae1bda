"""The persistent prompt cache: time to first token on a ~3,000-token system prompt, cold,
warm (the slot holds it, and the host-memory tier holds it), and after a restart (the disk
holds it).

endmark alone, one slot (so one short request between two others drops the slot's state to
the cache), `--cache-dir` in a fresh folder. After each restart a short request warms the
process (the weights paged in, llama.cpp's buffers made) before the measure, so the row
compares where the prefix comes from, not a cold process. `python -m benchmarks.prompt_cache`
runs these rows alone.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.clients import stream_rate
from benchmarks.servers import Server, free_port
from endmark.models import bundled_model_path

KEYS = ("cache_cold_ms", "cache_warm_slot_ms", "cache_warm_ram_ms", "cache_restart_ms")


def system_prompt(rep: int) -> str:
    """About 3,000 tokens on SmolLM2, different each repeat so that the cold one is cold."""
    facts = " ".join(
        f"Fact {rep}.{k}: the lighthouse at point {k} was painted white and red in spring."
        for k in range(132)
    )
    return f"<|im_start|>system\nYou answer from these notes.\n{facts}<|im_end|>\n"


def ask(server: Server, system: str, question: str) -> float:
    prompt = f"{system}<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    body = {"prompt": prompt, "max_tokens": 4, "temperature": 0}
    return stream_rate(server.url, "/v1/completions", body)["ttft_ms"]


def cache_server(model: str, threads: int, folder: Path) -> Server:
    cmd = [
        sys.executable, "-m", "endmark", "serve", "-m", model, "-t", str(threads),
        "--port", str(free_port()), "-np", "1", "-c", "4096", "--cache-dir", str(folder),
    ]  # fmt: skip
    return Server("endmark", cmd, int(cmd[cmd.index("--port") + 1]))


def warm_up(server: Server) -> None:
    stream_rate(server.url, "/v1/completions", {"prompt": "Hello", "max_tokens": 2})


def measure_prompt_cache(model: str, threads: int, repeats: int, f: dict[str, list[float]]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="endmark-bench-cache-"))
    server = cache_server(model, threads, folder)
    try:
        server.start()
        warm_up(server)
        for rep in range(repeats):
            system = system_prompt(rep)
            f["cache_cold_ms"].append(ask(server, system, "Which point is first?"))
            f["cache_warm_slot_ms"].append(ask(server, system, "Which point is second?"))
            warm_up(server)  # the one slot drops the prefix: stored in host memory (and disk)
            f["cache_warm_ram_ms"].append(ask(server, system, "Which point is third?"))
            server.stop()  # stores what the slot holds, then the restart reads the disk
            server = cache_server(model, threads, folder)
            server.start()
            warm_up(server)
            f["cache_restart_ms"].append(ask(server, system, "Which point is fourth?"))
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


ROWS = [
    ("prompt cache: time to first token, ~3,000-token system prompt, cold, ms", "cache_cold_ms"),
    ("prompt cache: ... warm, the slot holds it, ms", "cache_warm_slot_ms"),
    ("prompt cache: ... warm, restored from host memory, ms", "cache_warm_ram_ms"),
    ("prompt cache: ... after a restart, restored from disk, ms", "cache_restart_ms"),
]


def targets(f: dict[str, list[float]]) -> list[list[str]]:
    from benchmarks.report import ratio  # the report imports this module's rows

    restart, ram = f.get("cache_restart_ms", []), f.get("cache_warm_ram_ms", [])
    return [
        ["prompt cache: after a restart / warm in host memory (time to first token)",
         ratio(restart, ram), "<= 1.5x"],
        ["prompt cache: cold / after a restart (time to first token)",
         ratio(f.get("cache_cold_ms", []), restart), ">= 5x"],
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.prompt_cache")
    parser.add_argument("-m", "--model", default=str(bundled_model_path()))
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("-r", "--repeats", type=int, default=3)
    args = parser.parse_args()
    from benchmarks.report import cell

    f: dict[str, list[float]] = {k: [] for k in KEYS}
    measure_prompt_cache(args.model, args.threads, args.repeats, f)
    for label, key in ROWS:
        print(f"| {label} | {cell(f[key])} |")
    for row in targets(f):
        print("| " + " | ".join(row) + " |")
    print({k: [round(v, 1) for v in vs] for k, vs in f.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
