"""`endmark serve` and `endmark complete`; flag names follow llama-server."""

from __future__ import annotations

import argparse
import logging
import queue
import sys
from collections.abc import Sequence

from endmark.generation import Done, Event, Failed, TokenEvent
from endmark.invalid import InvalidRequest
from endmark.sampling import SamplingParams
from endmark.settings import Settings

log = logging.getLogger("endmark")


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", help="GGUF file (default: the bundled SmolLM2-135M-Instruct)")
    p.add_argument("-c", "--ctx-size", type=int, help="context size in tokens, all slots together")
    p.add_argument("-t", "--threads", type=int, help="CPU threads (default: all cores)")
    p.add_argument("-np", "--parallel", type=int, help="number of slots (concurrent requests)")
    p.add_argument("-b", "--batch-size", type=int, help="tokens per decode step")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=None,
        help="log every sampled token and its end decision",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="endmark", description="A local LLM server where every model ends cleanly."
    )
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve a GGUF model over HTTP")
    _model_flags(serve)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8080)")
    serve.add_argument("--queue-size", type=int, help="requests that may wait for a slot")
    serve.add_argument("-a", "--alias", help="model name shown to clients")
    complete = sub.add_parser("complete", help="stream one completion to stdout, no server")
    _model_flags(complete)
    complete.add_argument("prompt")
    complete.add_argument("-n", "--n-predict", type=int, default=-1)
    complete.add_argument("--temp", type=float, default=0.8)
    complete.add_argument("--seed", type=int, default=-1)
    complete.add_argument("--stop", action="append", default=[])
    return parser


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if verbose:
        logging.getLogger("endmark.generation").setLevel(logging.DEBUG)


class ProgressBar:
    """llama.cpp's load progress, drawn on stderr."""

    def __init__(self) -> None:
        self._last = -1

    def __call__(self, value: float) -> None:
        step = 1 if sys.stderr.isatty() else 10
        pct = int(value * 100) // step * step
        if pct == self._last:
            return
        self._last = pct
        bar = "#" * (pct // 5)
        end = "\n" if pct >= 100 else ""
        sys.stderr.write(f"\rloading model [{bar:<20}] {pct:3d}%{end}")
        sys.stderr.flush()


def _settings(args: argparse.Namespace) -> Settings:
    keys = (
        "model",
        "ctx_size",
        "threads",
        "parallel",
        "batch_size",
        "verbose",
        "host",
        "port",
        "queue_size",
        "alias",
        "chat_template",
    )
    return Settings.from_env(**{k: getattr(args, k, None) for k in keys})


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from endmark.models import resolve_model
    from endmark.server.app import create_app

    settings = _settings(args)
    setup_logging(settings.verbose)
    try:
        path = resolve_model(settings.model)
    except FileNotFoundError as exc:
        print(f"endmark: {exc}", file=sys.stderr)
        return 2
    settings.model = str(path)
    app = create_app(settings, on_progress=ProgressBar())
    print(f"endmark: serving {path.name} at http://{settings.host}:{settings.port}", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0


def complete(args: argparse.Namespace) -> int:
    from endmark.runtime import load_runtime

    settings = _settings(args)
    settings.parallel = 1
    setup_logging(settings.verbose)
    rt = load_runtime(settings, ProgressBar())
    events: queue.Queue[Event] = queue.Queue()
    try:
        request = rt.make_request(
            args.prompt,
            SamplingParams(temperature=args.temp, seed=args.seed),
            n_predict=args.n_predict,
            stop=args.stop,
            label="complete",
        )
        rt.scheduler.submit(request, events.put)
        while True:
            event = events.get()
            if isinstance(event, TokenEvent):
                sys.stdout.write(event.text)
                sys.stdout.flush()
            elif isinstance(event, Done):
                sys.stdout.write(event.finish.tail + "\n")
                print(f"[end: {event.finish.describe()}]", file=sys.stderr)
                return 0
            elif isinstance(event, Failed):
                print(f"endmark: {event.message}", file=sys.stderr)
                return 1
    except InvalidRequest as exc:
        print(f"endmark: {exc}", file=sys.stderr)
        return 2
    finally:
        rt.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "complete":
        return complete(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
