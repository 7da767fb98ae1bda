"""No request can stop the server: hostile constraints in every dialect are a quick 4xx (or a
200 whose output validates), while `/health` and other requests go on being served.

A 50,000-value enum is over the 64 KiB schema limit where a dialect has one (a 400), and runs
where it has not (Ollama's `format`); a 200 cut by the token limit is closed JSON, which parses
and may not validate (a pattern the model never ends)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import httpx
import jsonschema
import openai

from tests.conftest import RunningServer


def nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "maxLength": 4}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


SCHEMAS: dict[str, dict[str, Any]] = {
    "nested 200 deep": nested(200),
    "a $ref cycle": {"$ref": "#/$defs/a",
                     "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}},
    "a 50,000-value enum": {"enum": [f"v{i}" for i in range(50_000)]},
    "a catastrophic pattern": {"type": "string", "pattern": "(a+)+$"},
}  # fmt: skip
GRAMMARS = {  # the same regex as a grammar: Lark (llguidance's own syntax) and GBNF
    "a catastrophic Lark regex": "start: /(a+)+$/",
    "a catastrophic GBNF rule": 'root ::= ("a"+)+',
}
A_RUN = {"type": "string", "pattern": "^a+$"}  # what the grammars allow
ASK = "Answer with JSON."
LIMIT = 12  # tokens: enough for an enum value (`"v12345"`), few for a run of a's
MESSAGES = [{"role": "user", "content": ASK}]


def as_tool_input(schema: dict[str, Any]) -> dict[str, Any]:
    """Anthropic's JSON output is a forced tool, whose input is an object."""
    defs = {"$defs": schema["$defs"]} if "$defs" in schema else {}
    inner = {k: v for k, v in schema.items() if k != "$defs"}
    return {"type": "object", "properties": {"v": inner}, "required": ["v"], **defs}


@dataclass(frozen=True)
class Dialect:
    """How one dialect is asked for JSON, and how its answer is read."""

    path: str
    body: Callable[[dict[str, Any]], dict[str, Any]]  # the request for a schema
    output: Callable[[dict[str, Any]], Any]  # the answer's JSON, parsed
    cut: Callable[[dict[str, Any]], bool]  # the token limit ended it


def message_text(body: dict[str, Any]) -> str:
    item = next(i for i in body["output"] if i["type"] == "message")
    return item["content"][0]["text"]  # type: ignore[no-any-return]


def tool_input(body: dict[str, Any]) -> Any:
    return next(b for b in body["content"] if b["type"] == "tool_use")["input"]


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}


def answer_tool(schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": "answer", "description": "The answer.", "input_schema": as_tool_input(schema)}


DIALECTS = {
    "native": Dialect("/completion",
        lambda s: {"prompt": ASK, "n_predict": LIMIT, "json_schema": s},
        lambda b: json.loads(b["content"]), lambda b: b["stop_type"] == "limit"),
    "chat": Dialect("/v1/chat/completions",
        lambda s: {"messages": MESSAGES, "max_tokens": LIMIT,
                   "response_format": response_format(s)},
        lambda b: json.loads(b["choices"][0]["message"]["content"]),
        lambda b: b["choices"][0]["finish_reason"] == "length"),
    "completions": Dialect("/v1/completions",
        lambda s: {"prompt": ASK, "max_tokens": LIMIT, "response_format": response_format(s)},
        lambda b: json.loads(b["choices"][0]["text"]),
        lambda b: b["choices"][0]["finish_reason"] == "length"),
    "responses": Dialect("/v1/responses",
        lambda s: {"input": ASK, "max_output_tokens": LIMIT,
                   "text": {"format": {"type": "json_schema", "name": "a", "schema": s}}},
        lambda b: json.loads(message_text(b)), lambda b: b["status"] == "incomplete"),
    "anthropic": Dialect("/v1/messages",
        lambda s: {"model": "m", "messages": MESSAGES, "max_tokens": LIMIT,
                   "tools": [answer_tool(s)], "tool_choice": {"type": "tool", "name": "answer"}},
        tool_input, lambda b: b["stop_reason"] == "max_tokens"),
    "ollama": Dialect("/api/chat",
        lambda s: {"messages": MESSAGES, "format": s, "stream": False,
                   "options": {"num_predict": LIMIT}},
        lambda b: json.loads(b["message"]["content"]), lambda b: b["done_reason"] == "length"),
}  # fmt: skip

# (name, dialect, request body, the schema a whole answer follows)
Case = tuple[str, Dialect, dict[str, Any], dict[str, Any]]


def cases() -> list[Case]:
    out: list[Case] = []
    for what, schema in SCHEMAS.items():
        for name, d in DIALECTS.items():
            follows = as_tool_input(schema) if name == "anthropic" else schema
            out.append((f"{name}, {what}", d, d.body(schema), follows))
    native, chat = DIALECTS["native"], DIALECTS["chat"]
    as_text = {  # the dialects that take a grammar, the output read as text
        "native": (replace(native, output=lambda b: b["content"]),
                   {"prompt": ASK, "n_predict": LIMIT}),
        "chat": (replace(chat, output=lambda b: b["choices"][0]["message"]["content"]),
                 {"messages": MESSAGES, "max_tokens": LIMIT}),
    }  # fmt: skip
    for what, grammar in GRAMMARS.items():
        for name, (d, body) in as_text.items():
            out.append((f"{name}, {what}", d, {**body, "grammar": grammar}, A_RUN))
    return out


def stream_one(sdk: openai.OpenAI, i: int) -> str | None:
    """A plain streamed chat beside the hostile ones; its finish reason."""
    finish = None
    for chunk in sdk.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": f"Count from {i} to {i + 20}."}],
        max_tokens=16,
        stream=True,
    ):
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    return finish


class HealthWatch:
    """Polls `/health` until stopped; a miss is a poll not answered within 1 s twice in a row."""

    def __init__(self, url: str) -> None:
        self.url, self.polls, self.misses = url, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _run(self) -> None:
        while not self._stop.is_set():
            self.polls += 1
            if not (self._answers() or self._answers()):
                self.misses += 1
            self._stop.wait(0.2)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def test_hostile_constraints_are_quick_4xx_or_valid_while_all_else_is_served(
    server: RunningServer,
) -> None:
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    all_cases = cases()

    def send(case: Case) -> tuple[Case, int, float, dict[str, Any]]:
        start = time.monotonic()
        r = httpx.post(f"{server.url}{case[1].path}", json=case[2], timeout=120)
        return case, r.status_code, time.monotonic() - start, r.json()

    with HealthWatch(server.url) as health, ThreadPoolExecutor(len(all_cases) + 4) as pool:
        streams = [pool.submit(stream_one, sdk, i) for i in range(4)]
        results = list(pool.map(send, all_cases))
        finishes = [s.result(timeout=120) for s in streams]

    assert health.polls > 0 and health.misses == 0
    assert all(f in ("length", "stop") for f in finishes), finishes
    refused = []
    for (name, dialect, _, schema), status, seconds, body in results:
        assert status < 500, f"{name}: {status} {body}"
        if status >= 400:
            assert seconds < 10, f"{name}: refused after {seconds:.1f} s"
            message = json.dumps(body)
            assert "<state>" not in message and "non-verbose" not in message, f"{name}: {message}"
            refused.append(name)
        elif not dialect.cut(body):  # a cut answer is closed: it parses, and may not validate
            jsonschema.validate(dialect.output(body), schema)
        elif dialect.path != "/v1/messages":  # (a forced call cut short is item 1's)
            dialect.output(body)
    # The deep schema and the cycle are refused in every dialect; so is a body nested deeper
    # than Python's JSON decoder goes.
    deep = '{"messages": [], "x": ' + "[" * 5000 + "]" * 5000 + "}"
    r = httpx.post(f"{server.url}/v1/chat/completions", content=deep, timeout=30,
                   headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]["message"]
    for what in ("nested 200 deep", "a $ref cycle"):
        assert sum(name.endswith(what) for name in refused) == len(DIALECTS), refused
