"""Load with faults and a slow reader (bounded in count and time; loopback only)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.load import load_round, slots_idle, slow_reader_ratio
from tests.conftest import RunningServer, start_server, stop_server


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = start_server(tmp_path_factory.mktemp("load"))
    yield srv
    stop_server(srv)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_64_clients_with_a_quarter_leaving_mid_stream(fresh: RunningServer) -> None:
    memory = []
    for i in range(2):
        # short answers: each client's last request, queued behind 63 others, is waited for
        load = load_round(fresh.url, clients=64, seconds=5, leave_ratio=0.25, seed=i, max_tokens=16)
        stats = asyncio.run(load)
        assert stats.served > 20 and stats.disconnected > 5
        assert not stats.errors, stats.errors
        assert slots_idle(fresh.url)
        memory.append(rss_mib(fresh.process.pid))
    assert memory[1] < memory[0] * 1.10, memory


def test_a_very_slow_reader_does_not_slow_the_others(fresh: RunningServer) -> None:
    assert asyncio.run(slow_reader_ratio(fresh.url, repeats=2)) >= 0.9
