"""The bundled model's format, by measurement: should `endmark serve` with no model serve a
one-time conversion of SmolLM2 (shipped as Q4_1) instead of the file itself?

`python -m benchmarks.bundled_format` converts the bundled file with llama.cpp's own quantizer
(`allow_requantize`) into ~/.cache/endmark/formats/ once, then runs endmark on each format in
turn: one stream, 4 clients, grounded copy (the decode rate of drafts checked in batches), and
greedy answers to the recorded prompts' texts beside the shipped file's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from benchmarks.clients import aggregate_rate, answer_rate, stream_rate
from benchmarks.ladder import quantize
from benchmarks.servers import endmark
from endmark.models import bundled_model_path

CACHE = Path.home() / ".cache" / "endmark" / "formats"
FORMATS = {"Q8_0": 7, "Q4_0": 2}  # llama_ftype
STORY = "Once upon a time, in a small village by the sea, there lived"
CHATS = ("What is the capital of France?", "Name three colors.", "What is 2+2?")
QUESTIONS = [  # greedy answers compared between formats (the recorded prompts' texts)
    *[("/v1/completions", {"prompt": p, "max_tokens": 24})
      for p in ("The capital of France is", "Count: 1, 2, 3,", "Once upon a time")],
    *[("/v1/chat/completions", {"messages": [{"role": "user", "content": c}]}) for c in CHATS],
]  # fmt: skip


def converted(name: str) -> Path:
    target = CACHE / f"SmolLM2-135M-Instruct.{name}.gguf"
    if target.is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    return quantize(bundled_model_path(), target, FORMATS[name], requantize=True)


def texts(url: str) -> list[str]:
    out = []
    for path, body in QUESTIONS:
        _, answer = answer_rate(url, path, {"temperature": 0, "max_tokens": 32, **body})
        choice = answer["choices"][0]
        out.append(choice.get("text") or choice["message"]["content"] or "")
    return out


def main() -> int:
    from benchmarks.__main__ import GROUNDED

    parser = argparse.ArgumentParser()
    parser.add_argument("-r", "--rounds", type=int, default=2)
    parser.add_argument("-t", "--threads", type=int, default=2)
    args = parser.parse_args()
    files = {"Q4_1 (shipped)": bundled_model_path(), **{n: converted(n) for n in FORMATS}}
    body = {"prompt": STORY, "max_tokens": 128, "temperature": 0, "ignore_eos": True}
    rows: dict[str, dict[str, list[float]]] = {n: {} for n in files}
    answers: dict[str, list[str]] = {}
    for round_ in range(args.rounds):
        order = list(files.items()) if round_ % 2 == 0 else list(files.items())[::-1]
        for name, path in order:
            server = endmark(str(path), args.threads)
            try:
                server.start(timeout=600)
                aggregate_rate(server.url, 1, {"prompt": STORY, "max_tokens": 4})
                f = rows[name]
                f.setdefault("one", []).append(
                    stream_rate(server.url, "/v1/completions", body)["tokens_per_second"]
                )
                f.setdefault("four", []).append(aggregate_rate(server.url, 4, body))
                _, grounded = answer_rate(
                    server.url, "/v1/chat/completions", {**GROUNDED, "cache_prompt": False}
                )
                f.setdefault("grounded", []).append(grounded["timings"]["predicted_per_second"])
                answers.setdefault(name, texts(server.url))
            finally:
                server.stop()
    shipped = answers["Q4_1 (shipped)"]
    print("| format | size MiB | one stream tok/s | 4 clients tok/s | grounded decode tok/s "
          "| greedy answers as the shipped file's |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, path in files.items():
        f = rows[name]
        same = sum(a == b for a, b in zip(answers[name], shipped, strict=True))
        med = {k: statistics.median(v) for k, v in f.items()}
        print(f"| {name} | {path.stat().st_size / 2**20:.0f} | {med['one']:.1f} | "
              f"{med['four']:.1f} | {med['grounded']:.1f} | {same}/{len(shipped)} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
