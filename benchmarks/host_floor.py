"""How much of endmark's host CPU per streamed token is its code's, and how much the cores it
shares with llama.cpp's decode add to it.

`python -m benchmarks.host_floor` streams 512 chunks, one every 10 ms (as a 100 tok/s model
would), from each server in turn, and reads the event loop's CPU per chunk and the
scheduler thread's per token (its decode left out) from /proc, as `benchmarks.host_cpu` does:
- *raw*: uvicorn (uvloop, httptools) and a bare ASGI app that sends each chunk a thread hands
  it through `call_soon_threadsafe` and an `asyncio.Queue`: the floor of any Python server
  on uvicorn;
- *endmark*: endmark's real app, scheduler and streaming path, on the test suite's scripted
  engine (`tests/scripted_engine.py`), whose decode sleeps 10 ms (its replay's own CPU is
  counted as the decode's): endmark's own work, with the cores free;
- *endmark beside a decode*: the same while another process runs llama.cpp's one-token
  decodes of the bundled model on both cores, as the real server's decode does;
- *the bundled model*: the real server, as `benchmarks.host_cpu` measures it. Its loop can
  only run while the scheduler's thread is inside `llama_decode` (the one time that thread
  lets go of the GIL), so on two cores every one of its instructions runs beside the decode.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from benchmarks.host_cpu import idle_rate, measure, named, per_token, thread_cpu
from benchmarks.servers import Server, free_port
from endmark.models import bundled_model_path
from endmark.thread_names import EVENT_LOOP, name_this_thread

N_CHUNKS = 512
PERIOD = 0.01  # seconds between tokens


async def raw_app(
    scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
) -> None:
    """A health check, and one stream of chunks a thread hands over, every `PERIOD`."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/health":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[int | None] = asyncio.Queue()

    def produce() -> None:
        for i in range(N_CHUNKS):
            time.sleep(PERIOD)
            loop.call_soon_threadsafe(queue.put_nowait, i)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=produce, daemon=True).start()
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    chunk = b'data: {"object":"text_completion","choices":[{"index":0,"text":" word"}]}\n\n'
    while await queue.get() is not None:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def scripted_app() -> Any:
    """endmark's app on the scripted engine, each decode taking `PERIOD` (asleep, as
    llama.cpp's decode leaves the GIL)."""
    from endmark.settings import Settings
    from tests.scripted_app import ScriptedApp
    from tests.scripted_engine import ScriptedEngine

    engine = ScriptedEngine(respond=lambda prompt: " word" * (N_CHUNKS + 16), words=[" word"])
    replay = engine.decode

    def decode(inputs: Any) -> Any:
        cpu = time.thread_time()
        rows = replay(inputs)  # the double's own work: counted as the decode's, left out
        engine.compute_cpu_seconds += time.thread_time() - cpu
        time.sleep(PERIOD)
        return rows

    engine.decode = decode  # type: ignore[method-assign]
    return ScriptedApp(Settings(metrics=True), engine).app


def serve(kind: str, port: int) -> None:
    import uvicorn

    app = raw_app if kind == "raw" else scripted_app()
    name_this_thread(EVENT_LOOP)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def decode_loop(seconds: float) -> None:
    """One-token decodes of the bundled model on 2 threads, back to back, for `seconds`."""
    from endmark.engine import SeqInput
    from endmark.engine.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine(str(bundled_model_path()), n_ctx=512, n_threads=2)
    engine.decode([SeqInput(0, list(range(100, 164)), 0, want_logits=False)])
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        engine.decode([SeqInput(0, [200], 64)])
        engine.drop(0, 64)


def loop_us_per_chunk(server: Server, path: str, body: dict[str, Any]) -> float:
    assert server.proc is not None
    pid = server.proc.pid
    idle = idle_rate(pid)
    before = named(thread_cpu(pid), EVENT_LOOP)
    start = time.perf_counter()
    n = 0
    with httpx.stream("POST", server.url + path, json=body, timeout=120) as response:
        for line in response.iter_lines():
            n += line.startswith("data: ") and line != "data: [DONE]"
    wall = time.perf_counter() - start
    after = named(thread_cpu(pid), EVENT_LOOP)
    assert before is not None and after is not None
    return ((after.seconds - before.seconds) - idle * wall) * 1e6 / n


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.host_floor")
    parser.add_argument("-r", "--repeats", type=int, default=3)
    parser.add_argument("--serve", choices=("raw", "endmark"), help=argparse.SUPPRESS)
    parser.add_argument("--decode-for", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return 0
    if args.decode_for:
        decode_loop(args.decode_for)
        return 0
    me = [sys.executable, "-m", "benchmarks.host_floor"]
    figures: dict[str, dict[str, list[float]]] = {}
    port = free_port()
    server = Server("raw", [*me, "--serve", "raw", "--port", str(port)], port)
    server.start()
    try:
        body = {"stream": True}
        figures["raw uvicorn app"] = {
            "loop_us": [loop_us_per_chunk(server, "/", body) for _ in range(args.repeats)]
        }
    finally:
        server.stop()
    for label, beside in (("endmark, scripted engine", False),
                          ("endmark, scripted engine, beside a decode", True)):  # fmt: skip
        port = free_port()
        server = Server(label, [*me, "--serve", "endmark", "--port", str(port)], port)
        server.start()
        burner = None
        try:
            if beside:
                seconds = args.repeats * (N_CHUNKS * PERIOD * 1.5 + 4) + 10
                burner = subprocess.Popen([*me, "--decode-for", str(seconds)],
                                          stderr=subprocess.DEVNULL)  # fmt: skip
                time.sleep(3)  # its model loaded
            per_token(server, 16)  # warm-up
            runs = [per_token(server, N_CHUNKS) for _ in range(args.repeats)]
        finally:
            if burner is not None:
                burner.kill()
            server.stop()
        figures[label] = {k: [run[k] for run in runs] for k in ("scheduler_us", "loop_us")}
    label = "endmark, the bundled model (`benchmarks.host_cpu`)"
    figures[label] = measure(str(bundled_model_path()), 2, N_CHUNKS // 2, args.repeats)
    print("| server | scheduler thread us per token | event loop us per chunk |")
    print("|---|---|---|")
    for label, f in figures.items():
        cells = [
            f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})" if (v := f.get(k)) else "-"
            for k in ("scheduler_us", "loop_us")
        ]
        print(f"| {label} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
