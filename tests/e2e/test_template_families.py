"""Real templates that used to stop the server or every request (issue 24), on tiny GGUFs:
functionary v3.2 (arguments concatenated as text: loading failed), firefunction v2
(`functions`, `datetime`: every request was a 400) and gemma-2 (no system role: endmark's own
tool instructions were refused). Each server starts, answers a plain chat, and renders a tool
round trip in the family's own shape.

With `ENDMARK_FULL_MATRIX=1`, every template of tests/data/templates also runs on the bundled
SmolLM2 (`--chat-template-file`): `tool_choice: required` for 2 seeds gives valid calls, a
plain chat is clean, and the second turn after a tool result answers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from endmark.calls.think import HARMONY, HARMONY_ANALYSIS, KNOWN_MARKERS
from endmark.models import bundled_model_path
from tests.conftest import RunningServer, start_server, stop_server
from tests.gguf_factory import FAMILIES, TEMPLATES, Family, build_gguf

FULL = os.environ.get("ENDMARK_FULL_MATRIX") == "1"
LLAMA3 = FAMILIES["llama3"]
GEMMA = Family("gemma2", ("<start_of_turn>", "<end_of_turn>"), "", "<end_of_turn>")
CASES = {
    "meetkai-functionary-medium-v3.2": LLAMA3,
    "fireworks-ai-llama-3-firefunction-v2": LLAMA3,
    "google-gemma-2-2b-it": GEMMA,
}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}  # fmt: skip
CALL_ID = "call_0123456789abcdef01234567"
ROUND_TRIP = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Lyon?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": CALL_ID, "type": "function",
         "function": {"name": "get_weather", "arguments": json.dumps({"city": "Lyon"})}}]},
    {"role": "tool", "tool_call_id": CALL_ID, "content": "sunny-22C"},
]  # fmt: skip
# What each template writes for the call and its result (its own shape; gemma-2's generic)
WRITTEN = {
    "meetkai-functionary-medium-v3.2": ['>>>get_weather\n{"city": "Lyon"}<|eot_id|>',
                                        "<|start_header_id|>tool<|end_header_id|>\n\nsunny-22C"],
    "fireworks-ai-llama-3-firefunction-v2": [
        ' functools[{"name": "get_weather", "arguments": {"city": "Lyon"}}]<|eot_id|>',
        "<|start_header_id|>tool<|end_header_id|>\n\nsunny-22C"],
    "google-gemma-2-2b-it": [
        "<start_of_turn>user\nBe brief.\n\nYou can call tools.",  # endmark's, in the user turn
        '<start_of_turn>model\n<tool_call>{"name": "get_weather", "arguments": {"city": "Lyon"}}',
        "<start_of_turn>user\n<tool_response>\nsunny-22C\n</tool_response><end_of_turn>"],
}  # fmt: skip


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningServer]]:
    """One server per template, started side by side."""

    def start(name: str) -> RunningServer:
        folder = tmp_path_factory.mktemp(name)
        template = (TEMPLATES / f"{name}.jinja").read_text()
        path = build_gguf(folder / "model.gguf", CASES[name], template=template)
        try:
            return start_server(folder, "-m", str(path), "-c", "4096", "-np", "1")
        except RuntimeError:  # a port taken between its choice and the bind: once more
            return start_server(folder, "-m", str(path), "-c", "4096", "-np", "1")

    with ThreadPoolExecutor(len(CASES)) as pool:
        futures = {name: pool.submit(start, name) for name in CASES}
    started = {name: f.result() for name, f in futures.items() if f.exception() is None}
    try:
        for f in futures.values():
            if f.exception() is not None:
                raise f.exception()  # type: ignore[misc]
        yield started
    finally:
        for server in started.values():
            server.process.terminate()  # all at once, then each waited for
        for server in started.values():
            stop_server(server)


@pytest.mark.parametrize("name", list(CASES))
def test_the_server_starts_chats_and_renders_a_tool_round_trip(
    servers: dict[str, RunningServer], name: str
) -> None:
    server = servers[name]
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    plain = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Hello"}], max_tokens=1
    )
    assert plain.choices[0].finish_reason in ("stop", "length")
    body = {"messages": ROUND_TRIP, "tools": [WEATHER]}
    r = httpx.post(f"{server.url}/apply-template", json=body, timeout=60)
    assert r.status_code == 200, r.text
    for text in WRITTEN[name]:
        assert text in r.json()["prompt"], text


# -- the full matrix: every template on the bundled SmolLM2 ----------------------------------


def full_names() -> list[str]:
    return sorted(p.stem for p in TEMPLATES.glob("*.jinja")) if FULL else []


@pytest.mark.skipif(not FULL, reason="ENDMARK_FULL_MATRIX=1 runs every template on SmolLM2")
@pytest.mark.parametrize("name", full_names())
def test_every_template_on_smollm2(tmp_path: Path, name: str) -> None:
    template = TEMPLATES / f"{name}.jinja"
    server = start_server(tmp_path, "-m", str(bundled_model_path()), "-c", "16384", "-np", "4",
                          "--chat-template-file", str(template))  # fmt: skip
    try:
        cells = smollm2_cells(server)
    finally:
        stop_server(server)
    failed = {cell: why for cell, why in cells.items() if why}
    why = "; ".join(f"{cell}: {text}" for cell, text in failed.items())
    print(f"{name}: {len(cells) - len(failed)}/{len(cells)} cells {why}", flush=True)  # noqa: T201
    assert not failed, f"{name}: {why}"


def smollm2_cells(server: RunningServer) -> dict[str, str]:
    """The issue's cells, asked at once: `required` valid for 2 seeds, a plain chat clean,
    the second turn after a tool result rendered and answered. Each cell's value is why it
    failed (the answer, or the request's error), empty where it passed."""
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    ask: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    markers = _markers(httpx.get(f"{server.url}/props", timeout=60).json())

    def required(seed: int) -> str:
        r = client.chat.completions.create(
            model="m", messages=ask, tools=[WEATHER], tool_choice="required",  # type: ignore[arg-type]
            temperature=0.8, seed=seed, max_tokens=160,
        )  # fmt: skip
        calls = r.choices[0].message.tool_calls or []
        valid = bool(calls) and all(
            c.function.name == "get_weather" and "city" in _arguments(c.function.arguments)
            for c in calls
        )
        return "" if valid else _said(r)

    def plain() -> str:  # (no tools: a call's markers are the model's text, not structure)
        r = client.chat.completions.create(model="m", messages=ask, max_tokens=40, seed=1)
        message = r.choices[0].message
        return "" if _clean(r, (markers[0], set())) and not message.tool_calls else _said(r)

    def second_turn() -> str:
        r = client.chat.completions.create(model="m", messages=ROUND_TRIP, tools=[WEATHER],  # type: ignore[arg-type]
                                           max_tokens=40, seed=1)  # fmt: skip
        return "" if _clean(r, markers) or r.choices[0].message.tool_calls else _said(r)

    cells = {"required seed 1": lambda: required(1), "required seed 2": lambda: required(2),
             "plain chat": plain, "second turn": second_turn}  # fmt: skip
    with ThreadPoolExecutor(len(cells)) as pool:
        futures = {cell: pool.submit(ask_cell) for cell, ask_cell in cells.items()}
    return {cell: _why(f) for cell, f in futures.items()}


def _markers(props: dict[str, Any]) -> tuple[set[str], set[str]]:
    """Text that is structure, never an answer's: the end tokens, the end of a turn as text
    and the known think markers (anywhere); the learned call format's markers (in content:
    a call written inside reasoning is reasoning text, ending rule 7). Only tags count: a
    format's "```" or `>>>` is an answer's own text too."""
    fmt = props.get("tool_call_format") or {}
    found = {str(t.get("text", "")) for t in props.get("eog_tokens", [])}
    found |= {str(props.get("end_of_turn_text") or "")}
    found |= {m for pair in KNOWN_MARKERS for m in pair} | {HARMONY_ANALYSIS, HARMONY.end}
    calls = {str(fmt.get("start") or ""), str(fmt.get("end") or "")}

    def tags(texts: set[str]) -> set[str]:
        return {t.strip() for t in texts if any(c.isalpha() for c in t)}

    return tags(found), tags(calls) - tags(found)


def _clean(r: Any, markers: tuple[set[str], set[str]]) -> bool:
    """A clean answer ends with an end token or the limit, says something, and leaks no
    marker into its content or its reasoning. On a template whose prompt opens the thinking,
    40 tokens of a 135M model may be all reasoning: that is clean when the reasoning is in
    `reasoning_content`, as it must be. An answer the model ends at once with its own end
    token says nothing, and is clean too (SmolLM2 does, under some foreign templates and
    seeds: Mistral-Small-3.2's plain chat, Ministral-3-Reasoning's second turn)."""
    choice = r.choices[0]
    content = choice.message.content or ""
    reasoning = getattr(choice.message, "reasoning_content", None) or ""
    said = (content + reasoning).strip()
    ended = (r.model_dump().get("endmark") or {}).get("stopping_token") is not None
    anywhere, in_content = markers
    leaked = [m for m in anywhere if m in content or m in reasoning]
    leaked += [m for m in in_content if m in content]
    finished = choice.finish_reason in ("stop", "length")
    return finished and (bool(said) or ended) and not leaked


def _arguments(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _said(r: Any) -> str:
    """What an answer that failed its cell said: finish, content, reasoning and calls."""
    choice = r.choices[0]
    message = choice.model_dump()["message"]
    said = {k: message.get(k) for k in ("content", "reasoning_content", "tool_calls")}
    return f"finish={choice.finish_reason} {json.dumps(said)[:600]}"


def _why(future: Any) -> str:
    """A cell's failure; a request that failed (a 4xx or 5xx) failed its cell, with its error."""
    try:
        return str(future.result())
    except openai.APIError as exc:
        return f"{type(exc).__name__}: {str(exc)[:400]}"
