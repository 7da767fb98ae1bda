"""`endmark probe` against a deliberately leaky fake server: each failure is named right."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from endmark.probe import BAD_JSON, LEAKED, LIMIT, NEXT_TURN, PARTIAL_STOP, Prober, probe
from tests.conftest import free_port

STORY = "The lighthouse stands tall on the rocky shore. Its light guides the ships home."


def leaky_text(endpoint: str, body: dict[str, Any]) -> tuple[str, str]:
    """What a badly behaved server answers: (text, finish reason)."""
    if body.get("grammar"):
        return "{}<|im_end|>", "stop"
    if body.get("json_schema") or body.get("response_format"):
        return '{"city": "Paris"', "stop"
    if body.get("stop"):
        stop = body["stop"][0]
        return STORY[: STORY.index(stop)] + stop[:3], "stop"
    prompt = json.dumps(body.get("messages") or body.get("prompt"))
    if "lighthouse" in prompt:
        return STORY, "stop"
    if endpoint == "/completion":
        return "Paris " * 40, "length"
    if endpoint == "/v1/completions":
        return "Paris is the capital.\nuser\nWhat about Spain?", "stop"
    return "Paris is the capital of France.<|im_end|>", "stop"


def fake_app() -> FastAPI:
    app = FastAPI()

    def shape(endpoint: str, text: str, finish: str, chunk: bool) -> dict[str, Any]:
        if endpoint == "/completion":
            return {
                "content": text,
                "stop": True,
                "stop_type": "limit" if finish == "length" else "eos",
            }
        if endpoint == "/v1/completions":
            return {"choices": [{"index": 0, "text": text, "finish_reason": finish}]}
        key = "delta" if chunk else "message"
        return {"choices": [{"index": 0, key: {"content": text}, "finish_reason": finish}]}

    for endpoint in ("/completion", "/v1/completions", "/v1/chat/completions"):

        async def route(request: Request, endpoint: str = endpoint) -> Any:
            body = await request.json()
            text, finish = leaky_text(endpoint, body)
            if not body.get("stream"):
                return JSONResponse(shape(endpoint, text, finish, False))

            async def events() -> Any:
                for i in range(0, len(text), 5):
                    piece = shape(endpoint, text[i : i + 5], "", True)
                    if endpoint == "/completion":
                        piece["stop"] = False
                    else:
                        piece["choices"][0]["finish_reason"] = None
                    yield f"data: {json.dumps(piece)}\n\n"
                yield f"data: {json.dumps(shape(endpoint, '', finish, True))}\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        app.post(endpoint)(route)
    return app


@pytest.fixture(scope="module")
def leaky() -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(fake_app(), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.post(f"{url}/completion", json={"prompt": "x"}, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(5)


def test_each_failure_is_named(leaky: str) -> None:
    cells = Prober(leaky).run()
    verdicts = {(c.check, c.endpoint, c.stream): c.verdict for c in cells}
    assert len(cells) == 4 * 3 * 2
    for stream in (False, True):
        assert verdicts[("answer", "/completion", stream)] == LIMIT
        assert verdicts[("answer", "/v1/completions", stream)] == NEXT_TURN
        assert verdicts[("answer", "/v1/chat/completions", stream)] == LEAKED
        for endpoint in ("/completion", "/v1/completions", "/v1/chat/completions"):
            assert verdicts[("stop string", endpoint, stream)] == PARTIAL_STOP
            assert verdicts[("grammar", endpoint, stream)] == LEAKED
            assert verdicts[("json schema", endpoint, stream)] == BAD_JSON


def test_the_exit_code_and_table_say_it_failed(
    leaky: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert probe(leaky, None, "m", as_json=False) == 1
    out = capsys.readouterr().out
    assert "partial stop-string leak" in out and "leaked end-token text" in out
    assert probe(leaky, None, "m", as_json=True) == 1
    assert len(json.loads(capsys.readouterr().out)) == 24


@pytest.fixture()
def dropping(leaky: str) -> Iterator[str]:
    """A proxy in front of the fake server that closes every other connection unanswered, as a
    server does when it drops a kept-alive connection just as a request goes out on it."""
    import socket

    target = ("127.0.0.1", int(leaky.rsplit(":", 1)[1]))
    listener = socket.create_server(("127.0.0.1", 0))
    count = {"n": 0}

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            dst.close()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            count["n"] += 1
            if count["n"] % 2:
                conn.recv(65536)
                conn.close()
                continue
            upstream = socket.create_connection(target)
            threading.Thread(target=pipe, args=(conn, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, conn), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def test_a_dropped_connection_is_retried_not_an_error_cell(dropping: str) -> None:
    cells = Prober(dropping).run()
    assert len(cells) == 24 and not [c for c in cells if c.verdict == "error"]
