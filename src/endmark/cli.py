"""`endmark serve` and `endmark complete`; flag names follow llama-server."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import queue
import sys
import threading
from collections.abc import Sequence
from typing import Any

import uvicorn

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
    serve.add_argument(
        "--api-key", help="require Authorization: Bearer KEY (comma-separate several)"
    )
    serve.add_argument("--api-key-file", help="a file of API keys, one per line")
    serve.add_argument("-n", "--n-predict", type=int, help="cap on tokens per request (-1: none)")
    serve.add_argument("--max-body-bytes", type=int, help="largest request body accepted")
    serve.add_argument("--cors", metavar="ORIGIN", help="allow browser requests from ORIGIN")
    serve.add_argument(
        "--shutdown-grace",
        type=int,
        help="seconds running requests get to finish on SIGTERM (default 10)",
    )
    probe = sub.add_parser("probe", help="check how cleanly any server ends its answers")
    probe.add_argument("url", help="the server's base URL, e.g. http://127.0.0.1:8080")
    probe.add_argument("--api-key", help="sent as Authorization: Bearer KEY")
    probe.add_argument("--model", default="default", help="model name for /v1 requests")
    probe.add_argument("--json", action="store_true", help="print the cells as JSON")
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
        "api_key",
        "api_key_file",
        "n_predict",
        "max_body_bytes",
        "cors",
        "shutdown_grace",
    )
    return Settings.from_env(**{k: getattr(args, k, None) for k in keys})


def serve(args: argparse.Namespace) -> int:
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
    if not settings.api_keys() and not _is_loopback(settings.host):
        log.warning("binding %s without --api-key: anyone on the network can use it", settings.host)
    app = create_app(settings, on_progress=ProgressBar())
    print(f"endmark: serving {path.name} at http://{settings.host}:{settings.port}", flush=True)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        timeout_graceful_shutdown=settings.shutdown_grace + 5,
    )
    GracefulServer(config, app, settings.shutdown_grace).run()
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GracefulServer(uvicorn.Server):
    """On SIGTERM/SIGINT: stop accepting, give running generations `grace` seconds to finish,
    then end them with a clean error, so every response closes properly; exit 0."""

    def __init__(self, config: uvicorn.Config, app: Any, grace: int) -> None:
        super().__init__(config)
        self._app = app
        self._grace = grace

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.should_exit:
            log.info("shutting down: running requests get %ds to finish", self._grace)
            timer = threading.Timer(self._grace, self._fail_running)
            timer.daemon = True
            timer.start()
        super().handle_exit(sig, frame)
        # uvicorn re-raises a caught signal after shutting down (exit status -15); a clean,
        # graceful shutdown is a success, so endmark exits 0 instead.
        self._captured_signals.clear()

    def _fail_running(self) -> None:
        runtime = self._app.state.loading.runtime
        if runtime is not None:
            runtime.scheduler.fail_all("the server is shutting down")


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
    if args.command == "probe":
        from endmark.probe import probe

        return probe(args.url, args.api_key, args.model, args.json)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
