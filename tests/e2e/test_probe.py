"""`endmark probe` against real servers: endmark itself, and llama-cpp-python's server (with
`ENDMARK_FULL_MATRIX=1`: starting it and probing its 16 cells takes ~16 s of the suite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from benchmarks.servers import Server, llama_cpp_python
from endmark.models import bundled_model_path
from tests.conftest import RunningServer


def run_probe(url: str) -> tuple[int, list[dict[str, object]]]:
    out = subprocess.run(
        [sys.executable, "-m", "endmark", "probe", url, "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return out.returncode, json.loads(out.stdout)


def test_endmark_is_clean_in_every_cell(server: RunningServer) -> None:
    code, cells = run_probe(server.url)
    assert len(cells) == 24
    assert {c["verdict"] for c in cells} == {"clean"}, [c for c in cells if c["verdict"] != "clean"]
    assert code == 0


@pytest.fixture(scope="module")
def llama_cpp_server() -> Iterator[Server]:
    if os.environ.get("ENDMARK_FULL_MATRIX") != "1":
        pytest.skip("ENDMARK_FULL_MATRIX=1 probes llama-cpp-python's server too")
    peer = llama_cpp_python(str(bundled_model_path()), threads=2)
    if peer is None:
        pytest.skip("llama-cpp-python's server extras are not installed")
    peer.start()
    yield peer
    peer.stop()


def test_llama_cpp_python_server_gets_a_verdict_in_every_cell(llama_cpp_server: Server) -> None:
    code, cells = run_probe(llama_cpp_server.url)
    endpoints = {c["endpoint"] for c in cells}
    assert {"/v1/completions", "/v1/chat/completions"} <= endpoints
    assert len(cells) == 8 * len(endpoints)
    assert all(c["verdict"] for c in cells)
    assert code in (0, 1)
    print({(c["check"], c["endpoint"], c["stream"]): c["verdict"] for c in cells})
