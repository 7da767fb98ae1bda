"""The ladder: endmark beside llama-server on models of the sizes people serve.

`python -m benchmarks.ladder` builds random-weight Llama-shaped GGUFs with SmolLM2's tokenizer
(~0.5B and ~1.5B, Q4_K_M and Q8_0: random weights decode at the speed of trained ones) once
per machine into ~/.cache/endmark/ladder/ (tests/gguf_factory.py writes F16, llama.cpp's own
quantizer converts it), then, for each rung, runs one server at a time, taking turns: one
stream, 4 clients, time to first token, prompt processing, six JSON records of four keys
(forced keys are accepted whatever the weights) and memory. The machine's memory read
bandwidth is measured in the same run, and each one-stream decode is given as a share of its
ceiling (bandwidth / bytes read per token). `--rungs tiny --rounds 1` is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.clients import (
    FIRST_TOKENS,
    aggregate_rate,
    answer_rate,
    first_token_ms,
    prompt_rate,
    stream_rate,
)
from benchmarks.llama_server import binary_path
from benchmarks.servers import Server, endmark, llama_server
from endmark.models import bundled_model_path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/ (the GGUF factory)
from tests.gguf_factory import LlamaShape, build_shaped_gguf  # noqa: E402

CACHE = Path.home() / ".cache" / "endmark" / "ladder"
RUNGS = {  # name -> shape (SmolLM2's 49,152-token vocabulary, embeddings untied)
    "tiny": LlamaShape(n_embd=256, n_layer=2, n_head=4, n_head_kv=2, n_ff=512),
    "0.5B": LlamaShape(n_embd=1024, n_layer=24, n_head=16, n_head_kv=4, n_ff=4096),
    "1.5B": LlamaShape(n_embd=2048, n_layer=28, n_head=16, n_head_kv=4, n_ff=5632),
}
QUANTS = {"Q4_K_M": 15, "Q8_0": 7}  # llama_ftype: LLAMA_FTYPE_MOSTLY_Q4_K_M, _Q8_0
SIDE_ROUNDS = 2  # rounds of the Q8_0 rungs: the targets are Q4_K_M's, each round costs minutes
Figures = dict[str, dict[str, list[float]]]  # "rung quant server" -> metric -> values


def quantize(source: Path, target: Path, ftype: int, requantize: bool = False) -> Path:
    """`source` converted by llama.cpp's own quantizer into `target` (written whole or not
    at all); `requantize`: the source is quantized already."""
    import llama_cpp as L

    params = L.llama_model_quantize_default_params()
    params.ftype, params.nthread, params.allow_requantize = ftype, 2, requantize
    partial = target.with_name(target.name + ".partial")
    if L.llama_model_quantize(str(source).encode(), str(partial).encode(), params) != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"quantizing {source.name} into {target.name} failed")
    return partial.replace(target)


def ensure_model(rung: str, quant: str, cache: Path = CACHE) -> Path:
    """The rung's GGUF, built and quantized on first use."""
    target = cache / f"endmark-{rung}-{quant}.gguf"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as work:
        f16 = build_shaped_gguf(Path(work) / "f16.gguf", RUNGS[rung], bundled_model_path())
        return quantize(f16, target, QUANTS[quant])


def read_bandwidth_gbs(threads: int, mib: int = 1024, repeats: int = 5) -> float:
    """Memory read bandwidth, GB/s: the best of a few sums over an array far larger than any
    cache, read by as many threads as the servers decode with (one core alone reads ~half as
    fast here: a one-core ceiling would put a two-thread decode above it)."""
    data = np.ones(mib * (1 << 20) // 8, dtype=np.float64)
    parts = np.array_split(data, threads)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:  # numpy lets go of the GIL while it sums
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = min(best, time.perf_counter() - start)
    return data.nbytes / best / 1e9


BATCH_SIZES = (1, 2, 4, 8)


def decode_cost(model: Path, threads: int, repeats: int = 9) -> dict[int, float]:
    """Milliseconds of one `llama_decode` of k tokens (all with logits, as a checked guess)
    after a 64-token prefix, through endmark's engine alone, the median of `repeats`. Where k
    tokens cost about k one-token decodes, the decode is bound by compute, not by reading the
    weights (which a batch reads once): guesses and forced runs then save little."""
    from endmark.engine import SeqInput
    from endmark.engine.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine(str(model), n_ctx=512, n_threads=threads)
    try:
        prefix = list(range(1000, 1064))
        engine.decode([SeqInput(0, prefix, 0)])
        out = {}
        for k in BATCH_SIZES:
            times = []
            for i in range(repeats):
                tokens = [2000 + i + j for j in range(k)]
                start = time.perf_counter()
                engine.decode([SeqInput(0, tokens, len(prefix), n_logits=k)])
                times.append(time.perf_counter() - start)
                engine.drop(0, len(prefix))
            out[k] = statistics.median(times) * 1000.0
        return out
    finally:
        engine.close()


STREAMS = 3  # one-stream decodes a round, its figure their median: one stream of 128 tokens


def measure(server: Server, n_predict: int, round_: int, f: dict[str, list[float]]) -> None:
    from benchmarks.__main__ import SIX_RECORDS, STORY, long_prompt  # the same workloads

    body = {"prompt": STORY, "max_tokens": n_predict, "temperature": 0, "ignore_eos": True}
    streams = [stream_rate(server.url, "/v1/completions", body) for _ in range(STREAMS)]
    f["decode"].append(statistics.median(r["tokens_per_second"] for r in streams))
    f["ttft_ms"].append(first_token_ms(server.url, body))
    f["prompt"].append(prompt_rate(server.url, long_prompt(round_)))
    f["clients_4"].append(aggregate_rate(server.url, 4, body))
    try:
        rate, answer = answer_rate(
            server.url, "/v1/chat/completions", {**SIX_RECORDS, "cache_prompt": False}
        )
        timings = answer.get("timings") or {}
        f["records_wall"].append(rate)
        if "predicted_per_second" in timings:
            f["records"].append(float(timings["predicted_per_second"]))
    except RuntimeError as exc:
        print(f"{server.name}: six records failed: {exc}", file=sys.stderr)
    f["memory_mib"].append(server.memory_mib()[0])


def run(rungs: list[str], quants: list[str], threads: int, n_predict: int, rounds: int) -> dict:
    from benchmarks.__main__ import STORY

    bandwidth = read_bandwidth_gbs(threads)
    figures: Figures = defaultdict(lambda: defaultdict(list))
    sizes: dict[str, int] = {}
    costs = {"SmolLM2-135M Q4_1": decode_cost(bundled_model_path(), threads)}
    notes: list[str] = []
    binary = binary_path() if binary_path().is_file() else None
    if binary is None:
        notes.append("llama-server is not built (`python -m benchmarks.llama_server`): skipped")
    for rung in rungs:
        for quant in quants:
            model = ensure_model(rung, quant)
            key = f"{rung} {quant}"
            sizes[key] = model.stat().st_size
            costs[key] = decode_cost(model, threads)
            makers = [lambda m=model: endmark(str(m), threads)]
            if binary is not None:
                makers.append(lambda m=model: llama_server(binary, str(m), threads))
            n_rounds = rounds if quant == "Q4_K_M" else min(rounds, SIDE_ROUNDS)
            for round_ in range(n_rounds):  # one server loaded at a time, taking turns
                for make in makers if round_ % 2 == 0 else makers[::-1]:
                    server = make()
                    try:
                        server.start(timeout=600)
                        aggregate_rate(server.url, 1, {"prompt": STORY, "max_tokens": 4})
                        measure(server, n_predict, round_, figures[f"{key} {server.name}"])
                    finally:
                        server.stop()
    result = {"bandwidth_gbs": bandwidth, "threads": threads, "sizes": sizes, "notes": notes,
              "figures": figures, "decode_ms": costs}  # fmt: skip
    for name, f in figures.items():
        size = sizes[name.split(" ", 2)[0] + " " + name.split(" ", 2)[1]]
        ceiling = bandwidth * 1e9 / size  # weights read once a token; the KV is small here
        f["ceiling_share"] = [rate / ceiling for rate in f["decode"]]
    return result


ROWS = [
    ("one stream, decode tok/s", "decode"),
    ("4 clients, aggregate tok/s", "clients_4"),
    ("time to first token, ms", "ttft_ms"),
    ("prompt processing tok/s (~1,000 tokens)", "prompt"),
    ("six JSON records, decode tok/s (server's timings)", "records"),
    ("six JSON records, tok/s of the whole request", "records_wall"),
    ("resident memory MiB", "memory_mib"),
    ("one stream as a share of the bandwidth ceiling", "ceiling_share"),
]


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    fmt = ".2f" if med < 10 else ".1f"
    return f"{med:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def markdown(result: dict) -> str:
    """The ladder's section of docs/benchmarks.md: a table per rung, endmark / llama-server."""
    out = [
        "## The ladder",
        "",
        f"Memory read bandwidth, measured in this run: {result['bandwidth_gbs']:.1f} GB/s "
        f"(a numpy sum over 1 GiB by {result.get('threads', 2)} threads, as many as decode). "
        "The ceiling of a one-stream decode is that "
        "bandwidth over the bytes read per token (the weights; the KV cache of a short "
        "stream is small beside them).",
        f"Each Q4_K_M figure is the median of the rounds (min-max beside it), the servers "
        f"taking turns; the Q8_0 rungs ran {SIDE_ROUNDS} rounds. Within a round, one stream "
        f"is the median of {STREAMS} streams, and the time to first token the median of "
        f"{FIRST_TOKENS} short ones (2 tokens, the prompt cached: one decode and the round "
        "trip).",
        *[f"- {n}" for n in result["notes"]],
    ]
    rungs = sorted({" ".join(k.split(" ", 2)[:2]) for k in result["figures"]})
    for rung in rungs:
        servers = [k.split(" ", 2)[2] for k in result["figures"] if k.startswith(rung + " ")]
        mib = result["sizes"][rung] / 2**20
        out += ["", f"### {rung} ({mib:.0f} MiB)", ""]
        out.append("| measure | " + " | ".join(servers) + " | endmark / llama-server |")
        out.append("|---" * (len(servers) + 2) + "|")
        for label, key in ROWS:
            values = [result["figures"][f"{rung} {s}"].get(key, []) for s in servers]
            ours = dict(zip(servers, values, strict=True)).get("endmark", [])
            theirs = dict(zip(servers, values, strict=True)).get("llama-server (C++)", [])
            ratio = (
                f"{statistics.median(ours) / statistics.median(theirs):.2f}x"
                if ours and theirs and statistics.median(theirs)
                else "n/a"
            )
            out.append(f"| {label} | " + " | ".join(map(cell, values)) + f" | {ratio} |")
    out += cost_markdown(result.get("decode_ms", {}))
    return "\n".join(out) + "\n"


def cost_markdown(costs: dict[str, dict[int, float]]) -> list[str]:
    """Bound by compute or by memory, from the measurement: what a decode of k tokens costs."""
    if not costs:
        return []
    k = BATCH_SIZES[-1]
    out = [
        "",
        "### Compute or memory: a decode of k tokens, in one-token decodes",
        "",
        "One `llama_decode` of k tokens, each with logits (a checked guess), after a 64-token "
        "prefix, through endmark's engine alone (`ladder.decode_cost`, the median of 9). A "
        "memory-bound decode reads the weights once for the whole batch, so each token more "
        "costs a small share of one; a compute-bound one costs nearly a whole one. Guesses "
        "and a grammar's forced runs are checked in such batches: they save decode time only "
        "as far as a token more is cheap (endmark prices it as it runs: `DecodeCost`). "
        f"*Bound by* says compute where a token more, from k=1 to k={k}, costs over a quarter "
        "of a one-token decode.",
        "",
        "| model | one token, ms | "
        + " | ".join(f"k={n}" for n in BATCH_SIZES[1:])
        + " | a token more | bound by |",
        "|---" * (len(BATCH_SIZES) + 3) + "|",
    ]
    for name, ms in costs.items():
        one = ms[1]
        extra = (ms[k] - one) / (k - 1) / one
        ratios = " | ".join(f"{ms[n] / one:.1f}x" for n in BATCH_SIZES[1:])
        bound = "compute" if extra > 0.25 else "memory"
        out.append(f"| {name} | {one:.1f} | {ratios} | {extra:.2f} | {bound} |")
    return out


def chart(result: dict, path: Path) -> None:
    """tok/s (one stream) against model size, each server, with the bandwidth ceiling."""
    try:
        import matplotlib
    except ImportError:  # the extra `endmark[bench]` brings it
        print("matplotlib is not installed: no ladder chart", file=sys.stderr)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    by_server: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for name, f in result["figures"].items():
        rung, quant, server = name.split(" ", 2)
        size = result["sizes"][f"{rung} {quant}"] / 2**20
        by_server[server].append((size, statistics.median(f["decode"])))
    for server, points in by_server.items():
        xs, ys = zip(*sorted(points), strict=True)
        ax.plot(xs, ys, marker="o", label=server)
    sizes = np.linspace(min(result["sizes"].values()), max(result["sizes"].values()), 50)
    ax.plot(sizes / 2**20, result["bandwidth_gbs"] * 1e9 / sizes, "k--",
            label=f"ceiling ({result['bandwidth_gbs']:.1f} GB/s read)")  # fmt: skip
    ax.set_xlabel("model file MiB")
    ax.set_ylabel("one-stream decode tok/s")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ladder")
    parser.add_argument("--rungs", default="0.5B,1.5B", help=f"of {', '.join(RUNGS)}")
    parser.add_argument("--quants", default="Q4_K_M,Q8_0")
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("-n", "--n-predict", type=int, default=128)
    parser.add_argument("-r", "--rounds", type=int, default=4)
    parser.add_argument("--chart", type=Path, help="write the plot here (PNG)")
    args = parser.parse_args()
    result = run(args.rungs.split(","), args.quants.split(","), args.threads, args.n_predict,
                 args.rounds)  # fmt: skip
    print(json.dumps(result, indent=1))
    print(markdown(result))
    if args.chart is not None:
        chart(result, args.chart)
    return 0


if __name__ == "__main__":
    sys.exit(main())
