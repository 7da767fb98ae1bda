"""Flash attention on this CPU, by measurement: what llama.cpp's `-fa auto` (on, for a CPU)
costs a decode as the context grows, and a checked guess of several tokens.

`python -m benchmarks.flash_attention` times one `llama_decode` of k tokens after a context of
n tokens, flash attention on and off, straight on the engine (no server); then runs endmark
with `-fa auto` and with `-fa off` beside llama-server (its default), taking turns: one stream
(a 15-token prompt, 128 tokens), grounded copy (a 332-token prompt, 160 tokens, checked
guesses), and whether the greedy answers with `-fa off` are the default's. `-m` adds models.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

from benchmarks.bundled_format import STORY, texts
from benchmarks.clients import answer_rate, stream_rate
from benchmarks.llama_server import ensure_built
from benchmarks.servers import Server, endmark, llama_server
from endmark.engine import SeqInput
from endmark.engine.llamacpp import LlamaCppEngine
from endmark.engine.options import ContextOptions
from endmark.models import bundled_model_path

CONTEXTS = (16, 150, 400, 1000)
GUESSES = (1, 5, 9)  # one token; a guess of 4 or 8 with the token before it


def decode_ms(
    model: str, flash_attn: str, threads: int, repeats: int
) -> dict[tuple[int, int], float]:
    """Median milliseconds of one decode of k tokens after n cached ones, for each (n, k)."""
    engine = LlamaCppEngine(model, n_ctx=2048, n_threads=threads,
                            options=ContextOptions(flash_attn=flash_attn))  # fmt: skip
    tokens = random.Random(0).choices(range(100, 20000), k=max(CONTEXTS) + max(GUESSES))
    out = {}
    try:
        for n in CONTEXTS:
            engine.drop(0)
            for start in range(0, n, 512):
                chunk = tokens[start : min(n, start + 512)]
                engine.decode([SeqInput(0, chunk, start, want_logits=False)])
            for k in GUESSES:
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    engine.decode([SeqInput(0, tokens[n : n + k], n, n_logits=k)])
                    times.append((time.perf_counter() - t0) * 1000)
                    engine.drop(0, n)
                out[(n, k)] = statistics.median(times)
    finally:
        engine.close()
    return out


def engine_table(models: list[str], threads: int, repeats: int) -> list[str]:
    lines = [
        "| model | tokens in the cache | " + " | ".join(
            f"{k} token{'s' if k > 1 else ''}: on / off" for k in GUESSES) + " |",
        "|---|---|" + "---|" * len(GUESSES),
    ]  # fmt: skip
    for model in models:
        on = decode_ms(model, "on", threads, repeats)
        off = decode_ms(model, "off", threads, repeats)
        for n in CONTEXTS:
            cells = " | ".join(f"{on[n, k]:.1f} / {off[n, k]:.1f}" for k in GUESSES)
            lines.append(f"| {Path(model).name} | {n} | {cells} |")
    return lines


def server_rows(model: str, threads: int, rounds: int) -> list[str]:
    from benchmarks.__main__ import GROUNDED

    def with_fa(server: Server, value: str) -> Server:
        server.cmd += ["-fa", value]
        server.name = f"endmark, -fa {value}"
        return server

    makers = [
        lambda: with_fa(endmark(model, threads), "auto"),
        lambda: with_fa(endmark(model, threads), "off"),
        lambda: llama_server(ensure_built(), model, threads),
    ]
    body = {"prompt": STORY, "max_tokens": 128, "temperature": 0, "ignore_eos": True}
    rows: dict[str, dict[str, list[float]]] = {}
    answers: dict[str, list[str]] = {}
    for round_ in range(rounds):
        for make in makers if round_ % 2 == 0 else makers[::-1]:
            server = make()
            try:
                server.start(timeout=600)
                stream_rate(server.url, "/v1/completions", {"prompt": STORY, "max_tokens": 4})
                f = rows.setdefault(server.name, {})
                f.setdefault("one", []).append(
                    stream_rate(server.url, "/v1/completions", body)["tokens_per_second"]
                )
                _, grounded = answer_rate(
                    server.url, "/v1/chat/completions", {**GROUNDED, "cache_prompt": False}
                )
                f.setdefault("grounded", []).append(grounded["timings"]["predicted_per_second"])
                if server.name.startswith("endmark"):
                    answers.setdefault(server.name, texts(server.url))
            finally:
                server.stop()
    default = answers["endmark, -fa auto"]
    lines = [
        "| server | one stream tok/s | grounded decode tok/s | greedy answers as `-fa auto`'s |",
        "|---|---|---|---|",
    ]
    for name, f in rows.items():
        one, grounded = statistics.median(f["one"]), statistics.median(f["grounded"])
        same = answers.get(name)
        cell = "-" if same is None else f"{sum(map(str.__eq__, same, default))}/{len(default)}"
        lines.append(f"| {name} | {one:.1f} | {grounded:.1f} | {cell} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flash_attention")
    parser.add_argument("-m", "--model", action="append", default=[], help="more models")
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("-r", "--rounds", type=int, default=2, help="server rounds")
    parser.add_argument("--repeats", type=int, default=5, help="decodes per engine cell")
    args = parser.parse_args()
    bundled = str(bundled_model_path())
    print("\n".join(engine_table([bundled, *args.model], args.threads, args.repeats)), "\n")
    print("\n".join(server_rows(bundled, args.threads, args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
