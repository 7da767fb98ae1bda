"""Keys, limits, CORS and shutdown, each on a server started for the purpose."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from endmark.cli import _is_loopback
from tests.conftest import RunningServer, start_server, stop_server

HI = [{"role": "user", "content": "Hi"}]
PROTECTED: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/props", None),
    ("GET", "/slots", None),
    ("GET", "/metrics", None),
    ("GET", "/v1/models", None),
    ("POST", "/completion", {"prompt": "Hi", "n_predict": 1}),
    ("POST", "/tokenize", {"content": "Hi"}),
    ("POST", "/detokenize", {"tokens": [1]}),
    ("POST", "/apply-template", {"messages": HI}),
    ("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 1}),
    ("POST", "/v1/chat/completions", {"messages": HI, "max_tokens": 1}),
]  # fmt: skip


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("locked")
    key_file = folder / "keys.txt"
    key_file.write_text("# team keys\nkey-from-file\n")
    srv = start_server(
        folder, "--api-key", "key-one,key-two", "--api-key-file", str(key_file),
        "-np", "1", "-c", "1024", "--n-predict-cap", "5", "--max-body-bytes", "4000", "--metrics",
        "--cors", "http://app.example",
    )  # fmt: skip
    yield srv
    stop_server(srv)


def call(url: str, method: str, path: str, body: Any, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, url + path, json=body, headers=headers, timeout=60)


@pytest.mark.parametrize("method,path,body", PROTECTED, ids=[p for _, p, _ in PROTECTED])
def test_every_protected_route_wants_a_right_key(
    locked: RunningServer, method: str, path: str, body: Any
) -> None:
    for key in (None, "wrong-key", "key-one-x"):
        r = call(locked.url, method, path, body, key)
        assert r.status_code == 401, (path, key)
        err = r.json()["error"]
        assert err["type"] == "authentication_error" and "API key" in err["message"]
        if path.startswith("/v1"):
            assert set(err) == {"message", "type", "param", "code"}
    for key in ("key-one", "key-two", "key-from-file"):
        assert call(locked.url, method, path, body, key).status_code == 200, (path, key)


def test_health_needs_no_key_and_the_sdk_sends_one(locked: RunningServer) -> None:
    assert httpx.get(f"{locked.url}/health", timeout=10).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{locked.url}/v1", api_key="nope", max_retries=0).models.list()
    sdk = openai.OpenAI(base_url=f"{locked.url}/v1", api_key="key-two", max_retries=0)
    assert sdk.models.list().data


def test_the_server_caps_tokens_per_request(locked: RunningServer) -> None:
    body = {"prompt": "Once upon a time", "n_predict": 100, "ignore_eos": True}
    r = call(locked.url, "POST", "/completion", body, "key-one").json()
    assert r["tokens_predicted"] == 5 and r["stop_type"] == "limit"


def test_a_body_over_the_limit_is_413(locked: RunningServer) -> None:
    big = {"prompt": "x" * 5000}
    for path in ("/completion", "/v1/completions"):
        r = call(locked.url, "POST", path, big, "key-one")
        assert r.status_code == 413 and "limit" in r.json()["error"]["message"]
    chunked = httpx.post(
        f"{locked.url}/completion",
        content=iter([b'{"prompt": "', b"y" * 5000, b'"}']),
        headers={"Authorization": "Bearer key-one", "Content-Type": "application/json"},
        timeout=60,
    )
    assert chunked.status_code == 413


def test_cors_allows_only_the_configured_origin(locked: RunningServer) -> None:
    pre = httpx.options(
        f"{locked.url}/v1/chat/completions",
        headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"},
        timeout=10,
    )  # fmt: skip
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "http://app.example"
    other = httpx.get(f"{locked.url}/health", headers={"Origin": "http://evil.example"}, timeout=10)
    assert "access-control-allow-origin" not in other.headers


def test_cors_reflects_any_origin_by_default_as_llama_server(server: RunningServer) -> None:
    r = httpx.get(f"{server.url}/health", headers={"Origin": "http://app.example"}, timeout=10)
    assert r.headers["access-control-allow-origin"] == "http://app.example"
    assert r.headers["access-control-allow-credentials"] == "true"


@pytest.mark.parametrize(
    "body,field",
    [
        ({"stop": [f"s{i}" for i in range(17)]}, "stop"),
        ({"stop": ["x" * 501]}, "stop"),
        ({"grammar": "root ::= " + " | ".join(f'"w{i}"' for i in range(12000))}, "grammar"),
        ({"json_schema": {"enum": ["v" * 100] * 700}}, "json_schema"),
        ({"t_max_predict_ms": -1}, "t_max_predict_ms"),
    ],
)
def test_request_limits_are_400s_naming_the_field(
    server: RunningServer, body: dict[str, Any], field: str
) -> None:
    r = httpx.post(f"{server.url}/completion", json={"prompt": "Hi", **body}, timeout=60)
    assert r.status_code == 400 and field in r.json()["error"]["message"]


def test_t_max_predict_ms_stops_a_long_generation(server: RunningServer) -> None:
    body = {"prompt": "Once upon a time", "n_predict": 3000, "ignore_eos": True}
    r = httpx.post(
        f"{server.url}/completion", json={**body, "t_max_predict_ms": 300}, timeout=120
    ).json()
    assert r["stop_type"] == "limit" and 0 < r["tokens_predicted"] < 3000
    assert r["timings"]["predicted_ms"] < 3000


def test_loopback_detection() -> None:
    assert _is_loopback("127.0.0.1") and _is_loopback("localhost") and _is_loopback("::1")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.4")


def test_sigterm_lets_running_requests_end_cleanly_and_exits_zero(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "-np", "2", "-c", "2048", "--shutdown-grace", "2")
    results: dict[str, Any] = {}

    def short() -> None:
        r = httpx.post(f"{srv.url}/completion", json={"prompt": "Hi", "n_predict": 60,
                                                      "ignore_eos": True}, timeout=60)  # fmt: skip
        results["short"] = r.json()

    def endless() -> None:
        body = {"prompt": "Once", "n_predict": 100000, "ignore_eos": True, "stream": True}
        events = []
        with httpx.stream("POST", f"{srv.url}/completion", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
        results["endless"] = events

    threads = [threading.Thread(target=endless), threading.Thread(target=short)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    srv.process.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)
    assert srv.process.wait(timeout=30) == 0
    assert results["short"]["tokens_predicted"] == 60  # finished within the grace period
    last = results["endless"][-1]  # cut after the grace period, with a clean error event
    assert last["error"]["message"] == "the server is shutting down"
    assert all("content" in e for e in results["endless"][:-1])
    log = srv.log()
    assert "shutting down: running requests get 2s to finish" in log
