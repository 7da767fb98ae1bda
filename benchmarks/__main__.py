"""`python -m benchmarks`: endmark beside its peers in one run, written to docs/benchmarks.md.

All servers run at once on the same GGUF and threads; each measurement is repeated, taking
turns between the servers (this machine's speed drifts by up to 20% from minute to minute),
and reported as median (min-max). llama-server is built once from the llama-cpp-python sdist
(see benchmarks/llama_server.py) and skipped, with a note, if that fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from datetime import date
from importlib.util import find_spec
from pathlib import Path

from benchmarks import host_cpu, ladder, report
from benchmarks.clients import (
    aggregate_rate,
    answer_rate,
    embed_ms_per_input,
    first_token_ms,
    prompt_rate,
    server_decode_rate,
    stream_rate,
)
from benchmarks.llama_server import ensure_built
from benchmarks.models import endmark_router, llama_server_router, measure_router, model_folder
from benchmarks.prompt_cache import measure_prompt_cache
from benchmarks.replicas import both_ready, endmark_replicas
from benchmarks.servers import Server, endmark, llama_cpp_python, llama_server
from endmark.models import bundled_model_path

CHAT_PROMPT = (
    "<|im_start|>user\nWrite a long story about a lighthouse keeper.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
STORY = "Once upon a time, in a small village by the sea, there lived"
STORY_SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "story": {"type": "string"}},
    "required": ["title", "story"],
}
# Never complete within the token budget, so every step pays for the mask.
LONG_SCHEMA = {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 500}
# A call whose arguments never complete within the budget: every token pays for its mask.
LONG_TOOL = {
    "type": "function",
    "function": {
        "name": "log_tasks",
        "description": "Log the tasks of the day, one short line each",
        "parameters": {
            "type": "object",
            "properties": {"tasks": LONG_SCHEMA},
            "required": ["tasks"],
        },
    },
}
# Issue 15's workloads. Grounded: an answer that copies its prompt (prompt lookup pays).
PASSAGE = (
    "The lighthouse at Corran Point was built in 1858 from granite quarried on the island "
    "of Mull. Its keeper, a widower named Angus Reid, climbed the hundred and twelve steps "
    "every evening at dusk to trim the wicks, polish the great lens, and wind the clockwork "
    "that turned the light. In winter the gales drove spray against the lantern glass, and "
    "on the worst nights he stayed awake until dawn, writing in the log how many ships had "
    "passed and whether the fog signal had been sounded. His daughter Morag rowed across "
    "from the village twice a week with bread, paraffin and letters. She later wrote that "
    "her father never missed a single night in thirty-one years, though he twice broke his "
    "wrist on the iron ladder and once nursed a drowned fisherman back to life in the "
    "kitchen below the tower. When the light was automated in 1962, the board offered him a "
    "cottage on the mainland; he refused it, saying the sea had been his only neighbour for "
    "too long to leave it now. He died in the keeper's house the following spring, and the "
    "villagers say the beam still turns a little slower on the anniversary of his death, as "
    "if someone were winding it by hand. Today the tower is a museum, and visitors can read "
    "his logbooks, which record the weather, the ships and the small events of an isolated "
    "life with the same careful handwriting from the first page to the last."
)
GROUNDED = {
    "messages": [{"role": "user", "content": f"Repeat this text exactly:\n\n{PASSAGE}"}],
    "max_tokens": 160,
    "temperature": 0,
}
# Six records with four fixed keys each: keys, quotes and braces are forced (fast-forward).
RECORD = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "city": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "email": {"type": "string", "maxLength": 32},
    },
    "required": ["name", "city", "age", "email"],
    "additionalProperties": False,
}
RECORDS = {"type": "array", "items": RECORD, "minItems": 6, "maxItems": 6}
SIX_RECORDS = {
    "messages": [{"role": "user", "content": "List six people as JSON: name, city, age, email."}],
    "max_tokens": 400,
    "temperature": 0,
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "people", "schema": RECORDS},
    },
}
CLIENTS = (1, 2, 4, 8)
ROUTER_FOLDER = Path.home() / ".cache" / "endmark" / "bench-models"
DOCS = Path(__file__).resolve().parent.parent / "docs"

Figures = dict[str, dict[str, list[float]]]  # server -> metric -> values


def bare_loop_rate(model: str, threads: int, n: int) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bare_loop", model, str(threads), str(n), CHAT_PROMPT],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["tokens_per_second"])


def long_prompt(i: int) -> str:
    """About 1,000 tokens, different every time so that no cache can serve it."""
    lines = [f"Note {i}.{k}: the harbour light was checked at dawn and logged." for k in range(55)]
    return "\n".join(lines) + "\nSummary:"


def measure(server: Server, args: argparse.Namespace, rep: int, figures: Figures) -> None:
    f = figures[server.name]
    n = args.n_predict
    r = stream_rate(
        server.url, "/v1/completions", {"prompt": STORY, "max_tokens": n, "temperature": 0}
    )
    f["decode"].append(r["tokens_per_second"])
    f["ttft_ms"].append(first_token_ms(server.url, {"prompt": STORY, "temperature": 0}))
    f["prompt"].append(prompt_rate(server.url, long_prompt(rep)))
    for c in CLIENTS:
        body = {"prompt": STORY, "max_tokens": n, "temperature": 0}
        f[f"clients_{c}"].append(aggregate_rate(server.url, c, body))
    chat = {
        "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
        "max_tokens": n,
        "temperature": 0,
        "response_format": {"type": "json_object", "schema": STORY_SCHEMA},
    }
    try:
        f["schema"].append(
            stream_rate(server.url, "/v1/chat/completions", chat)["tokens_per_second"]
        )
    except RuntimeError as exc:
        print(f"{server.name}: JSON-schema decode failed: {exc}", file=sys.stderr)
    known_tokens(server, f)


def known_tokens(server: Server, f: dict[str, list[float]]) -> None:
    """Issue 15's rows: an answer that copies its prompt, and six records under a schema.
    Each server's own decode rate (its `timings`: the prompt, the same work for both, left
    out), and the wall-clock rate of the whole request beside it; endmark's draft counts."""
    path = "/v1/chat/completions"
    for key, body in (("grounded", GROUNDED), ("records", SIX_RECORDS)):
        try:
            rate, answer = answer_rate(server.url, path, {**body, "cache_prompt": False})
        except RuntimeError as exc:
            print(f"{server.name}: {key} failed: {exc}", file=sys.stderr)
            continue
        timings = answer.get("timings") or {}
        if "predicted_per_second" not in timings:
            continue  # llama-cpp-python's server reports no timings
        f[key].append(float(timings["predicted_per_second"]))
        f[f"{key}_wall"].append(rate)
        if key == "grounded" and timings.get("draft_n"):
            f["acceptance"].append(timings["draft_n_accepted"] / timings["draft_n"])


def endmark_constrained(server: Server, n: int, f: dict[str, list[float]]) -> None:
    """Issue 4's pair: the same native request with and without a schema mask."""
    greedy = {"prompt": CHAT_PROMPT, "max_tokens": n, "temperature": 0, "ignore_eos": True}
    f["unconstrained"].append(
        stream_rate(server.url, "/v1/completions", greedy)["tokens_per_second"]
    )
    f["constrained"].append(
        stream_rate(server.url, "/v1/completions", {**greedy, "json_schema": LONG_SCHEMA})[
            "tokens_per_second"
        ]
    )


def endmark_tool_calls(server: Server, n: int, f: dict[str, list[float]]) -> None:
    """Issue 12's pair: one chat decoding n tokens without tools, and under `tool_choice:
    required` (the bundled model's template knows no tools: endmark's generic format)."""
    chat = {
        "messages": [{"role": "user", "content": "Log the lighthouse keeper's tasks for today."}],
        "max_tokens": n,
        "temperature": 0,
    }
    path = "/v1/chat/completions"
    f["chat_plain"].append(server_decode_rate(server.url, path, {**chat, "ignore_eos": True}))
    tools = {"tools": [LONG_TOOL], "tool_choice": "required"}
    f["chat_tools"].append(server_decode_rate(server.url, path, {**chat, **tools}))


def endmark_embeddings(server: Server, rep: int, f: dict[str, list[float]]) -> None:
    """Issue 13's pair: 16 inputs in one `/v1/embeddings` call, and the same 16 in 16 calls
    (new texts each repeat, so no cache could serve them)."""
    inputs = [f"Note {rep}.{k}: the harbour light was checked at dawn." for k in range(16)]
    f["embed_batch_ms"].append(embed_ms_per_input(server.url, inputs, batched=True))
    f["embed_single_ms"].append(embed_ms_per_input(server.url, inputs, batched=False))


def measure_replicas(args: argparse.Namespace, figures: Figures, notes: list[str]) -> None:
    """2 replicas x 1 thread, alone on the machine, at 1 and 8 clients."""
    server = endmark_replicas(args.model)
    try:
        server.start(timeout=300)
        deadline = time.monotonic() + 60
        while not both_ready(server) and time.monotonic() < deadline:
            time.sleep(0.5)
        aggregate_rate(server.url, 8, {"prompt": STORY, "max_tokens": 8})  # warm-up
        for _ in range(args.repeats):
            for c in (1, 8):
                body = {"prompt": STORY, "max_tokens": args.n_predict, "temperature": 0}
                figures[server.name][f"clients_{c}"].append(aggregate_rate(server.url, c, body))
    except (RuntimeError, OSError) as exc:
        notes.append(f"the replicas rows failed: {exc}.")
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("-m", "--model", default=str(bundled_model_path()))
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("-n", "--n-predict", type=int, default=128)
    parser.add_argument("-r", "--repeats", type=int, default=5)
    parser.add_argument("--skip-llama-server", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print, leave the docs alone")
    parser.add_argument("--ladder", default="0.5B,1.5B", help="rungs; '': no ladder")
    args = parser.parse_args()

    notes: list[str] = []
    servers = [endmark(args.model, args.threads)]
    binary: Path | None = None
    peer = llama_cpp_python(args.model, args.threads)
    if peer is None:
        notes.append("llama-cpp-python's server was skipped: `pip install -e '.[bench]'` adds it.")
    else:
        servers.append(peer)
    if not args.skip_llama_server:
        try:
            binary = ensure_built()
            servers.append(llama_server(binary, args.model, args.threads))
        except RuntimeError as exc:
            notes.append(f"llama-server was skipped: {exc}.")

    figures: Figures = defaultdict(lambda: defaultdict(list))
    memory: dict[str, tuple[float, float]] = {}
    try:
        for s in servers:
            s.start()
            aggregate_rate(s.url, 1, {"prompt": STORY, "max_tokens": 8})  # warm-up
        for rep in range(args.repeats):
            figures["bare llama-cpp-python loop"]["decode"].append(
                bare_loop_rate(args.model, args.threads, args.n_predict)
            )
            for s in servers:
                print(f"repeat {rep + 1}/{args.repeats}: {s.name}", file=sys.stderr)
                measure(s, args, rep, figures)
            endmark_constrained(servers[0], args.n_predict, figures["endmark"])
            endmark_tool_calls(servers[0], args.n_predict, figures["endmark"])
            endmark_embeddings(servers[0], rep, figures["endmark"])
        memory = {s.name: s.memory_mib() for s in servers}
    finally:
        for s in servers:
            s.stop()

    routers = [endmark_router(model_folder(args.model, ROUTER_FOLDER), args.threads)]
    if binary is not None:
        routers.append(llama_server_router(binary, ROUTER_FOLDER, args.threads))
    for r in routers:  # one at a time: a cold load is the measure, so nothing else runs
        try:
            r.start()
            for _ in range(args.repeats):
                measure_router(r, figures[r.name])
        except (RuntimeError, OSError) as exc:
            notes.append(f"{r.name}'s several-models rows failed: {exc}.")
        finally:
            r.stop()

    try:  # alone too: the cold prompt and the restarts are the measure
        measure_prompt_cache(args.model, args.threads, args.repeats, figures["endmark"])
    except (RuntimeError, OSError) as exc:
        notes.append(f"the prompt cache rows failed: {exc}.")

    if find_spec("ray") is not None:  # the extra `endmark[ray]`
        measure_replicas(args, figures, notes)
    else:
        notes.append("the replicas rows were skipped: `pip install -e '.[ray]'` adds Ray Serve.")

    host = host_cpu.measure(args.model, args.threads, args.n_predict, args.repeats)
    rungs = ladder.run(args.ladder.split(","), list(ladder.QUANTS), args.threads,
                       args.n_predict, max(4, args.repeats)) if args.ladder else None  # fmt: skip

    stamp = f"Made by `python -m benchmarks` on {date.today().isoformat()}"
    text = report.markdown(figures, memory, args, notes, stamp, CLIENTS)
    text += "\n" + host_cpu.markdown(host, args.model)
    if rungs is not None:
        text += "\n" + ladder.markdown(rungs) + "\n![ladder](ladder.png)\n"
    print(text)
    if not args.no_write:
        DOCS.mkdir(parents=True, exist_ok=True)
        (DOCS / "benchmarks.md").write_text(text)
        report.chart(figures, memory, CLIENTS, DOCS / "benchmarks.png")
        if rungs is not None:
            ladder.chart(rungs, DOCS / "ladder.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
