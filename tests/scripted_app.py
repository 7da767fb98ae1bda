"""The real app, serving a runtime on the scripted engine: a dialect's renderer is tested on
exactly the tokens a test scripts, through the real scheduler, generation and routes.

`ScriptedApp.post(path, body, *answers)` scripts the answers and sends the request (no port:
httpx's ASGI transport); `sse_events` and `ndjson_lines` read a stream back.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from endmark.loading import build_runtime
from endmark.runtime import Runtime
from endmark.server.app import create_app
from endmark.settings import Settings
from tests.scripted_engine import Answer, Script, ScriptedEngine

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def scripted_runtime(engine: ScriptedEngine, settings: Settings) -> Runtime:
    """A runtime on `engine`, made as `endmark serve` makes one (template, end tokens, call
    and think formats, scheduler)."""
    assert settings.model is not None
    return build_runtime(engine, settings, Path(settings.model))


class ScriptedApp:
    """`create_app` with its runtime already loaded on a scripted engine (`engine`, or one
    made with the defaults)."""

    def __init__(
        self, settings: Settings | None = None, engine: ScriptedEngine | None = None
    ) -> None:
        self._dir = tempfile.TemporaryDirectory()
        model = Path(self._dir.name) / "scripted.gguf"
        model.write_bytes(b"GGUF")
        self.engine = engine or ScriptedEngine()
        self.settings = replace(
            settings or Settings(), model=str(model), alias="scripted",
            parallel=self.engine.n_seq_max,
        )  # fmt: skip
        self.runtime = scripted_runtime(self.engine, self.settings)
        self.app = create_app(self.settings)  # its lifespan never runs: nothing loads
        self.app.state.loading.runtime = self.runtime

    def post(self, path: str, body: dict[str, Any], *answers: Script) -> httpx.Response:
        """Script `answers` for the requests to come, then send this one."""
        self.engine.add(*answers)

        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://scripted") as c:
                return await c.post(path, json=body, timeout=60)

        return asyncio.run(send())

    def client(self) -> httpx.AsyncClient:
        """A client of the app (no port), for tests that send many requests at once."""
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url="http://scripted", timeout=60)

    def close(self) -> None:
        self.runtime.close()
        self._dir.cleanup()


@contextmanager
def scripted_app(
    settings: Settings | None = None, engine: ScriptedEngine | None = None
) -> Iterator[ScriptedApp]:
    app = ScriptedApp(settings, engine)
    try:
        yield app
    finally:
        app.close()


def sse_events(text: str) -> list[tuple[str | None, Any]]:
    """A server-sent event stream as (event name, data): data parsed as JSON, or the bare
    word (`[DONE]`)."""
    out: list[tuple[str | None, Any]] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name, data = None, ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data += line[len("data: ") :]
        out.append((name, data if data.startswith("[") else json.loads(data)))
    return out


def ndjson_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass(frozen=True)
class Case:
    """One scripted answer, and what every dialect must make of it: the content, reasoning
    and calls (name, arguments), and why it ended (`eos`, `word`, `limit`, or `calls`, the
    tool-call reason of ending rule 7)."""

    name: str
    script: str
    content: str = ""
    reasoning: str = ""
    calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    ended: str = "eos"
    stop: tuple[str, ...] = ()
    limit: int | None = None


WEATHER = (("get_weather", {"city": "Paris"}),)
CASES = [
    Case("content", "Hello world", content="Hello world"),
    Case("reasoning", "<think>\nHmm.\n</think>\n\nParis", content="\n\nParis",
         reasoning="\nHmm.\n"),
    Case("call", CALL, calls=WEATHER, ended="calls"),
    Case("content and call", "Let me look.\n" + CALL, content="Let me look.\n", calls=WEATHER,
         ended="calls"),
    Case("stop word", "Hello world. Bye", content="Hello world", ended="word", stop=(".",)),
    Case("length", "Hello world Paris the", content="Hello world", ended="limit", limit=2),
]  # fmt: skip
FAILING = Answer("Hello world Paris", fail_at=2)  # the decode for the third token fails
FAILURE = "generation failed: scripted failure at step 2"


def cases() -> Any:
    """`CASES` for `pytest.mark.parametrize`, each named."""
    import pytest

    return pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
