"""`GET /metrics` in Prometheus text format, read from the runtime's activity at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from endmark.runtime import Runtime
from endmark.server.http.errors import ApiError
from endmark.server.http.llamacpp_metrics import llamacpp_metrics
from endmark.server.http.state import runtime_of

router = APIRouter()


class RuntimeCollector(Collector):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        now = self.rt.activity()
        st = now.stats
        requests = CounterMetricFamily(
            "endmark_requests", "Generation requests by outcome", labels=["outcome"]
        )
        requests.add_metric(["finished"], st.requests_finished)
        requests.add_metric(["failed"], st.requests_failed)
        requests.add_metric(["cancelled"], st.requests_cancelled)
        yield requests
        yield GaugeMetricFamily("endmark_requests_running", "Requests in a slot", now.running)
        yield GaugeMetricFamily("endmark_requests_queued", "Requests waiting", now.queued)
        yield GaugeMetricFamily("endmark_slots", "Slots (parallel sequences)", now.slots)
        yield CounterMetricFamily(
            "endmark_prompt_tokens", "Prompt tokens evaluated", st.prompt_tokens
        )
        yield CounterMetricFamily(
            "endmark_generated_tokens", "Tokens generated", st.generated_tokens
        )
        yield GaugeMetricFamily(
            "endmark_prompt_tokens_per_second",
            "Prompt tokens per second of prompt time, since start",
            st.prompt_tokens / st.prompt_seconds if st.prompt_seconds else 0.0,
        )
        yield GaugeMetricFamily(
            "endmark_generated_tokens_per_second",
            "Generated tokens per second of generation time, per request, since start",
            st.generated_tokens / st.generation_seconds if st.generation_seconds else 0.0,
        )
        yield CounterMetricFamily(
            "endmark_decode_cpu_seconds",
            "CPU time of the scheduler's thread inside the engine's decode (the rest of its "
            "CPU is endmark's own work)",
            st.decode_cpu_seconds,
        )
        yield from prompt_cache_metrics(self.rt.prompt_cache())


def prompt_cache_metrics(summary: dict[str, Any] | None) -> Iterator[Metric]:
    """The persistent prompt cache's counters (none without `--cache-dir`/`--cache-ram`)."""
    if summary is None:
        return
    lookups = CounterMetricFamily(
        "endmark_prompt_cache_lookups", "Prompt cache lookups by result", labels=["result"]
    )
    lookups.add_metric(["hit"], summary["hits"])
    lookups.add_metric(["miss"], summary["misses"])
    yield lookups
    held = GaugeMetricFamily(
        "endmark_prompt_cache_bytes", "Bytes of stored states by tier", labels=["tier"]
    )
    held.add_metric(["ram"], summary["ram_bytes"])
    held.add_metric(["disk"], summary["disk_bytes"])
    yield held
    yield CounterMetricFamily(
        "endmark_prompt_cache_restored_tokens", "Prompt tokens restored instead of decoded",
        summary["restored_tokens"],
    )  # fmt: skip
    yield CounterMetricFamily(
        "endmark_prompt_cache_restore_seconds", "Time spent restoring states",
        summary["restore_ms"] / 1000.0,
    )  # fmt: skip


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    rt = runtime_of(request)
    if not rt.settings.metrics:
        raise ApiError(501, "the /metrics endpoint is off: start the server with --metrics")
    registry = getattr(request.app.state, "metrics_registry", None)
    if registry is None:
        registry = CollectorRegistry()
        registry.register(RuntimeCollector(rt))
        request.app.state.metrics_registry = registry
    # llama-server's own metrics first, endmark's beside them
    text = llamacpp_metrics(rt.activity()).encode() + generate_latest(registry)
    return Response(text, media_type=CONTENT_TYPE_LATEST)


def labelled(texts: dict[str, str], label: str) -> Iterator[Metric]:
    """Several servers' metrics (Prometheus text, by name) as one set, each sample labelled
    with its server's name: a family's samples from all of them together, as the format
    requires."""
    families: dict[str, Metric] = {}
    for name, text in texts.items():
        for family in text_string_to_metric_families(text):
            merged = families.setdefault(
                family.name, Metric(family.name, family.documentation, family.type)
            )
            for s in family.samples:
                merged.add_sample(s.name, {**s.labels, label: name}, s.value)
    yield from families.values()
