"""The results as a Markdown page and a PNG chart."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from benchmarks.clients import FIRST_TOKENS
from benchmarks.prompt_cache import ROWS as PROMPT_CACHE_ROWS
from benchmarks.prompt_cache import targets as prompt_cache_targets

Values = Mapping[str, Sequence[float]]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def cell(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def ratio(a: Sequence[float], b: Sequence[float]) -> str:
    return f"{median(a) / median(b):.2f}x" if a and b else "n/a"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}, Python {platform.python_version()}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def markdown(
    figures: Mapping[str, Values],
    memory: Mapping[str, tuple[float, float]],
    args: argparse.Namespace,
    notes: list[str],
    stamp: str,
    clients: Sequence[int],
) -> str:
    names = list(figures)
    metric_rows = [
        ("decode tok/s (one stream)", "decode"),
        ("time to first token, ms", "ttft_ms"),
        ("prompt processing tok/s (~1,000 tokens)", "prompt"),
        *[(f"aggregate tok/s, {c} client{'s' * (c > 1)}", f"clients_{c}") for c in clients],
        ("JSON-schema decode tok/s (chat)", "schema"),
        ("grounded: copy ~300 words, 160 tokens, decode tok/s (server's timings)", "grounded"),
        ("grounded, tok/s of the whole request (prompt included)", "grounded_wall"),
        ("draft tokens accepted, grounded (endmark)", "acceptance"),
        ("json-schema: six records of four keys, decode tok/s (server's timings)", "records"),
        ("json-schema, tok/s of the whole request (prompt included)", "records_wall"),
        ("chat decode tok/s, no tools (server's timings)", "chat_plain"),
        ("chat decode tok/s, `tool_choice: required` (server's timings)", "chat_tools"),
        ("embeddings ms per input, 16 inputs in one call", "embed_batch_ms"),
        ("embeddings ms per input, 16 calls of one", "embed_single_ms"),
        (
            "several models: time to first token, cold model (its load included), ms",
            "router_cold_ms",
        ),
        ("several models: time to first token, warm model, ms", "router_warm_ms"),
        (
            "several models: time to first token, switching back to a loaded model, ms",
            "router_switch_ms",
        ),
        *PROMPT_CACHE_ROWS,
    ]
    rows = [[label] + [cell(figures[n].get(key, [])) for n in names] for label, key in metric_rows]
    rows.append(
        ["resident memory MiB (now / peak)"]
        + [f"{memory[n][0]:.0f} / {memory[n][1]:.0f}" if n in memory else "-" for n in names]
    )
    ours = figures.get("endmark", {})
    cpp = figures.get("llama-server (C++)", {})
    py = figures.get("llama-cpp-python server", {})
    bare = figures.get("bare llama-cpp-python loop", {})
    mem = (
        f"{memory['endmark'][0] / memory['llama-server (C++)'][0]:.2f}x"
        if "endmark" in memory and "llama-server (C++)" in memory
        else "n/a"
    )
    targets = [
        ["endmark / llama-server, one stream", ratio(ours.get("decode", []), cpp.get("decode", [])), ">= 0.97x (this model; 1.0x on the ladder's)"],
        ["endmark / llama-server, 4 clients", ratio(ours.get("clients_4", []), cpp.get("clients_4", [])), ">= 0.97x (this model; 1.0x on the ladder's)"],
        ["endmark / llama-server, grounded (copying the prompt)", ratio(ours.get("grounded", []), cpp.get("grounded", [])), ">= 1.5x"],
        ["endmark / llama-server, json-schema (six records)", ratio(ours.get("records", []), cpp.get("records", [])), ">= 2.0x"],
        ["endmark / llama-server, resident memory", mem, "<= 1.2x"],
        ["endmark 4 clients / endmark 1 client", ratio(ours.get("clients_4", []), ours.get("clients_1", [])), ">= 1.3x"],
        ["endmark / llama-cpp-python server, 4 clients", ratio(ours.get("clients_4", []), py.get("clients_4", [])), ">= 2x"],
        ["endmark / bare llama-cpp-python loop, one stream", ratio(ours.get("decode", []), bare.get("decode", [])), ">= 0.95x"],
        ["endmark under a JSON schema / without (native, same prompt)", ratio(ours.get("constrained", []), ours.get("unconstrained", [])), ">= 0.9x"],
        ["endmark under `tool_choice: required` / without tools (chat)", ratio(ours.get("chat_tools", []), ours.get("chat_plain", [])), ">= 0.9x"],
        ["endmark router / llama-server router, time to first token on a cold model", ratio(ours.get("router_cold_ms", []), cpp.get("router_cold_ms", [])), "<= 1.3x"],
        ["endmark, several models: switching to a loaded model / staying on it (time to first token)", ratio(ours.get("router_switch_ms", []), ours.get("router_warm_ms", [])), "~1.0x (no load time)"],
        ["2 replicas x 1 thread (Ray Serve) / 1 server x 2 threads, 1 client", ratio(figures.get("endmark, 2 replicas x 1 thread (Ray Serve)", {}).get("clients_1", []), ours.get("clients_1", [])), "report (one machine)"],
        ["2 replicas x 1 thread (Ray Serve) / 1 server x 2 threads, 8 clients", ratio(figures.get("endmark, 2 replicas x 1 thread (Ray Serve)", {}).get("clients_8", []), ours.get("clients_8", [])), "report (one machine)"],
        ["endmark embeddings, time per input: one call of 16 / 16 calls", ratio(ours.get("embed_batch_ms", []), ours.get("embed_single_ms", [])), "< 1.0x"],
        *prompt_cache_targets(ours),
    ]  # fmt: skip
    note_text = "".join(f"\n- {n}" for n in notes)
    return f"""# Benchmarks

{stamp}; every figure on this page comes from that one run. Machine: {machine()}.
Model: `{Path(args.model).name}`; {args.threads} threads for every server; endmark and
llama-server with 4 slots and a 4,096-token context, llama-cpp-python's server with its one
(it has no slots) and the same context; otherwise each runs with its own defaults (flash
attention: `auto` in both, which llama.cpp turns on for this CPU).
Each figure is the median of {args.repeats} repeats, (min-max) beside it; the servers take
turns within each repeat.{note_text}

![chart](benchmarks.png)

## Results

{table(["measure", *names], rows)}

How each is taken: *decode* streams one `/v1/completions` request ({args.n_predict} tokens,
greedy, a story prompt) and counts chunks per second from the first to the last; *time to
first token* is from sending to the first chunk, the median of {FIRST_TOKENS} short streams (2 tokens)
of that prompt right after it, so cached in every server; *prompt processing* sends a different
~1,000-token prompt each time for one token (`cache_prompt: false`); *aggregate* sends N such
requests at once and divides all generated tokens by the wall time; *JSON-schema decode*
streams a chat completion under `response_format: json_object` with a schema; *memory* is
the server process's resident set after all runs. *grounded* asks a chat to repeat a
~300-word passage (160 tokens, greedy) and *json-schema* asks for six records of four keys
under a `json_schema` response format (greedy), both with `cache_prompt: false`: the decode
rate is each server's own `timings` (the prompt, the same work for both, left out), and the
whole request's rate (completion tokens over the wall time) is beside it. endmark's
prompt-lookup drafts and its checked runs of forced tokens are on by default; *draft tokens
accepted* is the share of its drafted tokens the model confirmed. The bare loop is one `llama_decode` and
llama.cpp's greedy sampler per token in Python, no server: the ceiling for a Python server.

## Targets

{table(["comparison", "measured", "target"], targets)}

The constrained pair is endmark alone: the same greedy request on `/v1/completions` with
`ignore_eos`, with and without a schema (an array of at least 500 short strings) that never
completes within the budget, so every token pays for an llguidance mask. The tool-call pair
is endmark alone too: one chat request on `/v1/chat/completions` ({args.n_predict} tokens,
greedy), without tools (`ignore_eos`) and with one tool under `tool_choice: required`, whose
arguments (an array of at least 500 short strings) never complete within the budget. The
bundled model's template knows no tools, so this is endmark's generic format: a system
message describes the tool, and the call grammar constrains every token. Both rates are the
server's own `timings` (tokens after the first over their time), so the longer prompt of the
tool request (the tool's description) costs nothing here but what it costs each step. The
embeddings pair is endmark alone as well: 16 short texts (new ones each repeat) sent to
`/v1/embeddings` in one call, then the same 16 in a call each; milliseconds per input, wall
time at the client.

The several-models rows run each router alone, after the others have stopped: endmark with
`--models-dir` and `--models-max 2`, beside llama-server's router with the same flags, over a
folder holding this model twice under two names. Each repeat unloads both, then streams a
4-token chat answer: to the first model (cold: starting its worker process and loading it
are in the time), to it again (warm), to the second, and back to the first (a switch between
two loaded models).

The prompt cache rows are endmark alone, run after the others: one slot, `--cache-dir` in a
fresh folder, a ~3,000-token system prompt (new each repeat) and a question, 4 tokens
streamed from `/v1/completions`. Cold: the first time; warm, the slot holds it: another
question; warm, host memory: after a short request took the one slot (its state went to the
host-memory tier); after a restart: the server stopped (it stores what the slot holds) and
started again, a short request to warm the process, then another question, restored from the
disk.

The replicas column is `endmark serve --replicas 2 -t 1` (a local Ray cluster, Ray Serve's
HTTP proxy, endmark's ingress and prefix-aware router, two replicas of one thread each), run
alone after the others, on the same two cores as the single server's two threads; its rows
are the aggregate rows above. See [scale-out.md](scale-out.md) for what to expect on more
machines.
"""


def chart(
    figures: Mapping[str, Values],
    memory: Mapping[str, tuple[float, float]],
    clients: Sequence[int],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    servers = [n for n in figures if n != "bare llama-cpp-python loop"]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    panels = [("decode", "one-stream decode tok/s"), ("prompt", "prompt tok/s (1k tokens)")]
    for ax, (key, title) in zip(axes[:2], panels, strict=True):
        ax.bar(servers, [median(figures[n].get(key, [])) for n in servers], color="C0")
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=20, labelsize=7)
    for n in servers:
        axes[2].plot(clients, [median(figures[n].get(f"clients_{c}", [])) for c in clients],
                     marker="o", label=n)  # fmt: skip
    axes[2].set_title("aggregate tok/s by clients")
    axes[2].set_xticks(list(clients))
    axes[2].legend(fontsize=7)
    axes[3].bar(servers, [memory.get(n, (0, 0))[0] for n in servers], color="C2")
    axes[3].set_title("resident memory MiB")
    axes[3].tick_params(axis="x", labelrotation=20, labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
