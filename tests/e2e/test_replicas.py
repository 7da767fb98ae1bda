"""endmark replicas on Ray Serve: two replicas of the bundled model, one thread each, behind
one address (`endmark serve --replicas 2`, which starts a local Ray cluster)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer, start_server

pytest.importorskip("ray.serve")

PREFIXES = [
    f"You are the archivist of {place}. " + f"Every answer about {place} cites the logbook. " * 16
    for place in ("Corran Point", "Ardnamurchan", "Skerryvore", "Bell Rock")
]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(
        tmp_path_factory.mktemp("replicas"), "--replicas", "2", "-t", "1", "--metrics",
        "-c", "4096", "-np", "4", timeout=240,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while httpx.get(f"{server.url}/health", timeout=30).json().get("replicas") != 2:
        assert time.monotonic() < deadline, "the router never saw both replicas"
        time.sleep(0.5)
    yield server
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait()


def chat(server: RunningServer, system: str, question: str) -> httpx.Response:
    body = {"messages": [{"role": "system", "content": system},
                         {"role": "user", "content": question}],
            "max_tokens": 4, "temperature": 0}  # fmt: skip
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)


def slots(server: RunningServer) -> list[dict[str, Any]]:
    return httpx.get(f"{server.url}/slots", timeout=30).json()  # type: ignore[no-any-return]


def test_eight_concurrent_requests_succeed_on_both_replicas(replicas: RunningServer) -> None:
    with ThreadPoolExecutor(8) as ex:
        answers = list(ex.map(lambda i: chat(replicas, "Be brief.", f"Count to {i}."), range(8)))
    assert all(r.status_code == 200 for r in answers)
    assert all(r.json()["choices"][0]["finish_reason"] in ("stop", "length") for r in answers)
    assert len({r.headers["x-endmark-replica"] for r in answers}) == 2


def test_a_repeated_prefix_lands_on_the_replica_that_holds_it(replicas: RunningServer) -> None:
    for prefix in PREFIXES:
        first = chat(replicas, prefix, "When was it built?")
        second = chat(replicas, prefix, "Who kept it?")
        assert first.status_code == second.status_code == 200
        assert second.headers["x-endmark-replica"] == first.headers["x-endmark-replica"]
        cached = second.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
        assert cached >= 150, f"only {cached} tokens were cached"


def test_slots_and_metrics_cover_every_replica(replicas: RunningServer) -> None:
    listed = slots(replicas)
    assert len({s["replica"] for s in listed}) == 2 and len(listed) == 8  # 4 slots each
    text = httpx.get(f"{replicas.url}/metrics", timeout=30).text
    labelled = {line.split('replica="')[1].split('"')[0] for line in text.splitlines()
                if line.startswith("endmark_requests_total{")}  # fmt: skip
    assert len(labelled) == 2


def test_a_killed_replica_ends_its_stream_cleanly_and_the_others_serve(
    replicas: RunningServer,
) -> None:
    pids = {s["replica"]: s["pid"] for s in slots(replicas)}
    body = {"prompt": "Once upon a time", "n_predict": 2000, "ignore_eos": True, "stream": True}
    events = []
    with httpx.stream("POST", f"{replicas.url}/completion", json=body, timeout=60) as r:
        victim = r.headers["x-endmark-replica"]
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
                if len(events) == 5:
                    os.kill(pids[victim], signal.SIGKILL)
    assert "error" in events[-1] and victim in events[-1]["error"]["message"]
    start = time.monotonic()
    answers = [chat(replicas, "Be brief.", f"Name a colour, {i}.") for i in range(6)]
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    assert time.monotonic() - start < 10


def test_health_and_sigterm_exit_zero(replicas: RunningServer, tmp_path: Path) -> None:
    assert httpx.get(f"{replicas.url}/health", timeout=30).status_code == 200
    replicas.process.send_signal(signal.SIGTERM)
    assert replicas.process.wait(timeout=90) == 0
