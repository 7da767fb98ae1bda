"""The runtime as the server calls it: prepared off the event loop, within a budget."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from typing import Any

import httpx

from endmark.generation import GenerationRequest
from endmark.loop_inbox import LoopInbox
from endmark.spec import RequestSpec
from tests.scripted_app import ScriptedApp, scripted_app, sse_events
from tests.test_scheduler import BreakingConstraint

JSON_MODE = {"response_format": {"type": "json_object"}, "max_tokens": 8}
HI = [{"role": "user", "content": "Hi"}]


async def slow_request_and_health(
    app: ScriptedApp, release: threading.Event
) -> tuple[httpx.Response, bool, httpx.Response]:
    """A constrained chat request, and `/health` while it is being prepared; then the
    compile may end (the loop's executor waits for it on closing)."""
    transport = httpx.ASGITransport(app=app.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://scripted") as c:
        body = {"messages": HI, **JSON_MODE}
        slow = asyncio.create_task(c.post("/v1/chat/completions", json=body, timeout=60))
        await asyncio.sleep(0)  # it starts
        health = await c.get("/health")
        first = not slow.done()
        refused = await slow
        release.set()
        return health, first, refused


def test_a_constraint_over_the_time_budget_is_a_400_and_blocks_no_one() -> None:
    with scripted_app() as app:
        release = threading.Event()
        prepare = app.runtime.prepare

        def slow_compile(spec: RequestSpec, counting: bool = False) -> list[GenerationRequest]:
            if spec.constraint is not None:
                release.wait(30)  # a compile that takes its time, on the worker thread
            return prepare(spec)

        app.runtime.prepare = slow_compile  # type: ignore[method-assign]
        app.runtime.prepare_timeout = 0.2
        try:
            health, first, refused = asyncio.run(slow_request_and_health(app, release))
        finally:
            release.set()
    assert health.status_code == 200 and first  # answered while the compile went on
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "response_format" and error["type"] == "invalid_request_error"
    assert error["message"] == (
        "response_format: the constraint is too large or too complex to compile within the "
        "server's limits (0.2 s)"
    )


REASON = "response_format: the constraint failed: it is too complex (fuel)"
SAY = [{"role": "user", "content": "Hi"}]


def openai_choice(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return body["choices"][0]["finish_reason"], body["choices"][0]["endmark"]


# each dialect's request, and where its answer says the cut and the note
DIALECTS: dict[str, tuple[dict[str, Any], Any]] = {
    "/v1/chat/completions": ({"messages": SAY, "max_tokens": 8}, openai_choice),
    "/v1/completions": ({"prompt": "Hi", "max_tokens": 8}, openai_choice),
    "/completion": ({"prompt": "Hi", "n_predict": 8}, lambda b: (b["stop_type"], b)),
    "/v1/messages": ({"model": "m", "messages": SAY, "max_tokens": 8},
                     lambda b: (b["stop_reason"], b["endmark"])),
    "/v1/responses": ({"input": "Hi", "max_output_tokens": 8},
                      lambda b: (b["status"], b["endmark"])),
    "/api/chat": ({"model": "m", "messages": SAY, "stream": False, "options": {"num_predict": 8}},
                  lambda b: (b["done_reason"], b["endmark"])),
}  # fmt: skip
CUT_WORDS = {"length", "limit", "max_tokens", "incomplete"}


def test_a_constraint_failing_mid_answer_ends_it_with_a_note_in_every_dialect() -> None:
    """Never an error in the middle of an answer (nor a 500): the answer so far, cut there,
    with `constraint_error` in endmark's account, in each dialect's own shape."""
    with scripted_app() as app:
        prepare = app.runtime.prepare

        def breaking(spec: RequestSpec, counting: bool = False) -> list[GenerationRequest]:
            n_vocab = app.runtime.n_vocab
            return [replace(r, constraint=BreakingConstraint(n_vocab, 2))  # type: ignore[arg-type]
                    for r in prepare(replace(spec, constraint=None))]  # fmt: skip

        app.runtime.prepare = breaking  # type: ignore[method-assign]
        for path, (body, read) in DIALECTS.items():
            r = app.post(path, body, "Hello world, how are you")
            assert r.status_code == 200, (path, r.text)
            reason, detail = read(r.json())
            assert reason in CUT_WORDS and detail["constraint_error"] == REASON, (path, r.json())


def test_a_whole_answer_reaches_the_loop_in_one_wake_up(monkeypatch: Any) -> None:
    """A non-streamed answer's events are held on the worker's side until it ends: the loop
    turns once for it, not once a token (each turn runs beside the decode's threads)."""
    drains = 0
    drain = LoopInbox._drain

    def counting(inbox: LoopInbox) -> None:
        nonlocal drains
        drains += 1
        drain(inbox)

    monkeypatch.setattr(LoopInbox, "_drain", counting)
    script = "One two three four five six seven eight nine ten."
    body = {"prompt": "Count", "max_tokens": 64}
    with scripted_app() as app:
        whole = app.post("/v1/completions", body, script)
        woken = drains
        streamed = app.post("/v1/completions", {**body, "stream": True}, script)
    assert woken == 1
    text = "".join(c["choices"][0]["text"] for _, c in sse_events(streamed.text)[:-1])
    assert whole.json()["choices"][0]["text"] == text == script
    assert whole.json()["choices"][0]["finish_reason"] == "stop"
