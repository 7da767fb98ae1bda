"""`endmark serve` and `endmark complete`; flag names follow llama-server."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from endmark import __version__
from endmark.flags import (
    add_model_flags,
    add_serve_flags,
    log_no_effect,
    normalize_argv,
    serve_flag_names,
    unsupported_flag,
)
from endmark.generation import Done, Failed, TokenEvent
from endmark.hub.commands import add_hub_commands, hub_model
from endmark.invalid import InvalidRequest
from endmark.settings import Settings
from endmark.spec import RequestSpec, SamplingSpec
from endmark.thread_names import EVENT_LOOP, name_this_thread

if TYPE_CHECKING:
    from endmark.runtime import Runtime

log = logging.getLogger("endmark")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="endmark",
        description="A local LLM server where every model ends cleanly.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"endmark {__version__}")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve a GGUF model over HTTP", allow_abbrev=False)
    add_serve_flags(serve)
    serve.add_argument("--version", action="version", version=f"endmark {__version__}")
    probe = sub.add_parser("probe", help="check how cleanly any server ends its answers")
    probe.add_argument("url", help="the server's base URL, e.g. http://127.0.0.1:8080")
    probe.add_argument("--api-key", help="sent as Authorization: Bearer KEY")
    probe.add_argument("--model", default="default", help="model name for /v1 requests")
    probe.add_argument("--json", action="store_true", help="print the cells as JSON")
    complete = sub.add_parser("complete", help="stream one completion to stdout, no server")
    add_model_flags(complete)
    complete.add_argument("prompt")
    complete.add_argument("-n", "--n-predict", type=int, default=-1)
    complete.add_argument("--temp", type=float, default=0.8)
    complete.add_argument("--seed", type=int, default=-1)
    complete.add_argument("--stop", action="append", default=[])
    add_hub_commands(sub)
    return parser


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the router's calls to its workers
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
    names = {f.name for f in fields(Settings)}
    values = {k: v for k, v in vars(args).items() if k in names}
    paths, aliases = values.pop("model", None) or [], values.pop("alias", None) or []
    if len(paths) <= 1:  # one model: its path, and every --alias names it
        values["model"] = paths[0] if paths else None
        values["alias"] = ",".join(aliases) or None
    if values.get("parallel") == -1:
        values["parallel"] = None  # llama-server's "auto": endmark's default of 4
    if values.get("threads") == -1:
        values["threads"] = None
    return Settings.from_env(**values)


def is_router(args: argparse.Namespace, settings: Settings) -> bool:
    return bool(settings.models_dir or settings.models_file or len(args.model or []) > 1)


def serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    setup_logging(settings.verbose)
    log_no_effect(args)
    if args.offline:  # the cache only, for -hf and for the router's downloads alike
        os.environ["HF_HUB_OFFLINE"] = "1"
    if settings.chat_parse_special:
        log.warning(
            "--chat-parse-special: control-token text in chat messages is read as control "
            "tokens, so a message can end its turn and write others' (prompt injection)"
        )
    from endmark.mcp_tools import McpConfigError, read_mcp_servers

    try:  # a bad MCP config stops the start, as llama-server's does
        read_mcp_servers(settings.mcp_servers_config, settings.mcp_servers_json)
    except McpConfigError as exc:
        print(f"endmark: {exc}", file=sys.stderr)
        return 2
    if is_router(args, settings):
        if args.hf_repo:
            print("endmark: -hf serves one model; with several, cached models join the "
                  "catalog and POST /models downloads more", file=sys.stderr)  # fmt: skip
            return 2
        if settings.replicas:
            print("endmark: --replicas serves one model; it does not combine with several",
                  file=sys.stderr)  # fmt: skip
            return 2
        return serve_models(args, settings)
    from endmark.models import check_gguf, resolve_model
    from endmark.server.app import create_app

    if not hub_model(args, settings):
        return 2
    try:
        path = resolve_model(settings.model)
        check_gguf(path)
    except (FileNotFoundError, ValueError) as exc:
        print(f"endmark: {exc}", file=sys.stderr)
        return 2
    settings.model = str(path)
    if settings.replicas:
        return serve_replicas(settings)
    holder: list[GracefulServer] = []
    app = create_app(settings, on_progress=ProgressBar(), on_load_failure=lambda: holder[0].fail())

    def fail_running() -> None:
        runtime = app.state.loading.runtime
        if runtime is not None:
            runtime.fail_all("the server is shutting down")

    return run_server(app, settings, path.name, fail_running, holder)


def serve_models(args: argparse.Namespace, settings: Settings) -> int:
    """Router mode: several models, a worker process each."""
    from endmark.multimodel.catalog import (
        CatalogError,
        check_catalog,
        from_paths,
        parse_bytes,
        parse_duration,
        read_models_file,
        scan_folder,
    )
    from endmark.multimodel.downloads import cached_entries
    from endmark.multimodel.router import create_router_app
    from endmark.server.dialects.registry import DIALECTS

    try:
        entries = from_paths(args.model or [], args.alias or [])
        if settings.models_dir:
            entries += scan_folder(Path(settings.models_dir).expanduser())
        if settings.models_file:
            entries = read_models_file(Path(settings.models_file).expanduser(), entries)
        entries += cached_entries({n for e in entries for n in e.names()})  # as llama-server
        check_catalog(entries)
        parse_duration(settings.keep_alive)
        if settings.models_memory:
            parse_bytes(settings.models_memory)
        app = create_router_app(settings, entries, DIALECTS)
    except (CatalogError, ValueError, LookupError) as exc:
        print(f"endmark: {exc}", file=sys.stderr)
        return 2
    pool = app.state.pool
    listed = ", ".join(e.id for e in entries)
    return run_server(app, settings, f"{len(entries)} model(s) ({listed})", lambda: None,
                      [], on_signal=pool.terminate_all)  # fmt: skip


def serve_replicas(settings: Settings) -> int:
    """Replicas on Ray Serve (`pip install 'endmark[ray]'`)."""
    import importlib.util

    from endmark.replicas.app import parse_replicas, run
    from endmark.server.dialects.registry import DIALECTS

    if importlib.util.find_spec("ray") is None:
        print("endmark: --replicas needs Ray Serve: pip install 'endmark[ray]'", file=sys.stderr)
        return 2
    try:
        count = parse_replicas(settings.replicas or "1")
    except ValueError as exc:
        print(f"endmark: {exc}", file=sys.stderr)
        return 2
    return run(settings, count, settings.ray_address, DIALECTS)


def run_server(
    app: Any,
    settings: Settings,
    what: str,
    fail_running: Callable[[], None],
    holder: list[GracefulServer],
    on_signal: Callable[[], None] = lambda: None,
) -> int:
    hosts = settings.hosts()
    if not settings.api_keys() and not all(_is_loopback(h) for h in hosts):
        log.warning("binding %s without --api-key: anyone on the network can use it", hosts)
    where = ", ".join(f"http://{_url_host(h)}:{settings.port}" for h in hosts)
    print(f"endmark: serving {what} at {where}", flush=True)
    config = uvicorn.Config(
        app,
        host=hosts[0],
        port=settings.port,
        log_level="warning",
        timeout_graceful_shutdown=settings.shutdown_grace + 5,
    )
    server = GracefulServer(config, settings.shutdown_grace, fail_running, on_signal)
    holder.append(server)
    try:
        sockets = _bind_all(hosts, settings.port) if len(hosts) > 1 else None
    except OSError as exc:
        print(f"endmark: cannot bind: {exc}", file=sys.stderr)
        return 1
    name_this_thread(EVENT_LOOP)  # uvicorn runs the event loop on this thread
    server.run(sockets=sockets)
    return server.exit_code


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _bind_all(hosts: Sequence[str], port: int) -> list[socket.socket]:
    """One listening socket per address, for llama-server's comma-separated --host."""
    out = []
    for host in hosts:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        out.append(sock)
    return out


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

    def __init__(
        self,
        config: uvicorn.Config,
        grace: int,
        fail_running: Callable[[], None],
        on_signal: Callable[[], None],
    ) -> None:
        super().__init__(config)
        self._grace = grace
        self._fail_running = fail_running
        self._on_signal = on_signal
        self.exit_code = 0

    def fail(self) -> None:
        """The model could not load: stop serving, and exit non-zero so a supervisor knows."""
        self.exit_code = 1
        self.should_exit = True

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.should_exit:
            log.info("shutting down: running requests get %ds to finish", self._grace)
            self._on_signal()
            timer = threading.Timer(self._grace, self._fail_running)
            timer.daemon = True
            timer.start()
        super().handle_exit(sig, frame)
        # uvicorn re-raises a caught signal after shutting down (exit status -15); a clean,
        # graceful shutdown is a success, so endmark exits 0 instead.
        self._captured_signals.clear()


def complete(args: argparse.Namespace) -> int:
    from endmark.loading import load_runtime

    settings = _settings(args)
    settings.parallel = 1
    setup_logging(settings.verbose)
    if not hub_model(args, settings):
        return 2
    rt = load_runtime(settings, ProgressBar())
    sampling = SamplingSpec(temperature=args.temp, seed=args.seed)
    spec = RequestSpec(
        [args.prompt], "complete", sampling, n_predict=args.n_predict, stop=args.stop
    )
    try:
        return asyncio.run(print_completion(rt, spec))
    except InvalidRequest as exc:
        print(f"endmark: {exc}", file=sys.stderr)
        return 2
    finally:
        rt.close()


async def print_completion(rt: Runtime, spec: RequestSpec) -> int:
    """The text to stdout as it comes, and how it ended to stderr."""
    (request,) = rt.prepare(spec)
    async for event in rt.stream(request):
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
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    raw = normalize_argv(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["serve"]:
        flag = unsupported_flag(raw[1:], serve_flag_names())
        if flag is not None:
            parser.exit(2, f"endmark serve: {flag} is a llama-server flag that endmark does not "
                           "support (see `endmark serve --help`)\n")  # fmt: skip
    args = parser.parse_args(raw)
    if args.command == "serve":
        return serve(args)
    if args.command == "complete":
        return complete(args)
    if args.command in ("pull", "list", "rm"):
        from endmark.hub.commands import run

        return run(args)
    if args.command == "probe":
        from endmark.probe import probe

        return probe(args.url, args.api_key, args.model, args.json)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
