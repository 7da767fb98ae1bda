"""`endmark serve --replicas N`: endmark as a Ray Serve application.

An ingress deployment holds the HTTP address; N replica deployments each hold a whole endmark
(its own engine and slots). A request goes to the replica that holds its prompt's prefix,
else to the least loaded one (`endmark.replicas.routing`). `--replicas MIN..MAX` lets Ray
Serve scale the replicas on their queues.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from dataclasses import dataclass
from typing import Any

from endmark.server.http.dialect import Dialect
from endmark.settings import Settings

log = logging.getLogger("endmark.replicas")
APP_NAME = "endmark"


@dataclass(frozen=True)
class ReplicaCount:
    min: int
    max: int

    @property
    def fixed(self) -> bool:
        return self.min == self.max


def parse_replicas(text: str) -> ReplicaCount:
    """`N`, or `MIN..MAX` for autoscaling."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:\.\.\s*(\d+)\s*)?", text)
    if not m:
        raise ValueError(f"--replicas: {text!r} is not N or MIN..MAX")
    low = int(m.group(1))
    high = int(m.group(2)) if m.group(2) else low
    if high < 1 or low > high:
        raise ValueError(f"--replicas: {text!r} needs 1 <= MIN <= MAX")
    return ReplicaCount(low, high)


def build(settings: Settings, count: ReplicaCount, dialects: tuple[Dialect, ...]) -> Any:
    """The Serve application: the ingress bound to the replicas. `dialects`: the table the
    replicas speak, for the ingress's errors, routing text and broken-stream events."""
    from ray import serve
    from ray.serve.config import RequestRouterConfig

    from endmark.replicas.ingress import Ingress
    from endmark.replicas.replica import EndmarkReplica

    class Replica(EndmarkReplica):
        def __init__(self, settings: Settings) -> None:
            name = serve.get_replica_context().replica_id.unique_id
            super().__init__(settings, name)

    scaling: dict[str, Any] = (
        {"num_replicas": count.min}
        if count.fixed
        else {
            "autoscaling_config": {
                "min_replicas": count.min,
                "max_replicas": count.max,
                "target_ongoing_requests": settings.parallel,
            }
        }  # fmt: skip
    )
    replicas = serve.deployment(
        Replica,
        name="EndmarkReplica",
        ray_actor_options={"num_cpus": settings.threads or 1},
        max_ongoing_requests=settings.parallel + settings.queue_size,
        graceful_shutdown_timeout_s=settings.shutdown_grace,
        health_check_period_s=2,
        health_check_timeout_s=30,
        # by its import path: the router must share its module with the ingress that reads it
        request_router_config=RequestRouterConfig(
            request_router_class="endmark.replicas.routing:PrefixAwareRouter"
        ),
        **scaling,
    )
    ingress = serve.deployment(
        Ingress,
        name="EndmarkIngress",
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=10_000,
        graceful_shutdown_timeout_s=settings.shutdown_grace + 5,
    )
    return ingress.bind(replicas.bind(settings), settings.api_keys(), dialects)


def run(
    settings: Settings, count: ReplicaCount, address: str | None, dialects: tuple[Dialect, ...]
) -> int:
    """Start (or join) a Ray cluster, serve the application on `--host`/`--port`, and stay
    until SIGTERM or Ctrl-C; then drain the replicas and exit 0."""
    import ray
    from ray import serve

    stop = threading.Event()
    ray.init(address=address, include_dashboard=False, log_to_driver=settings.verbose)
    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which sets its own
        signal.signal(sig, lambda *_: stop.set())
    serve.start(http_options={"host": settings.hosts()[0], "port": settings.port})
    serve.run(build(settings, count, dialects), name=APP_NAME, route_prefix="/", blocking=False)
    where = f"http://{settings.hosts()[0]}:{settings.port}"
    print(f"endmark: serving {count.min}..{count.max} replicas at {where}", flush=True)
    stop.wait()
    log.info("shutting down: replicas get %ds to finish", settings.shutdown_grace)
    serve.delete(APP_NAME)  # drains: each replica's running requests get the grace time
    if address is None:  # the local cluster was ours; a joined one keeps its other apps
        serve.shutdown()
    ray.shutdown()
    return 0
