"""Recorded answers: a fixed set of greedy requests on `/completion`, `/v1/completions` and
`/v1/chat/completions`, and what the server answered, kept in tests/data/recorded.json.

They hold the wire format still while the dialects are rebuilt on one result (issue 13): the
answers must stay the same apart from ids, timestamps and timings. After a deliberate change,
record them again with `ENDMARK_RECORD=1 python -m pytest tests/e2e/test_recorded.py`. Answers are
kept per CPU (llama.cpp's kernels differ between instruction sets, and so do greedy tokens).
"""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer

RECORDED = Path(__file__).resolve().parent.parent / "data" / "recorded.json"
VOLATILE = {"id", "created", "timings", "system_fingerprint", "t_first_ms"}
GREEDY = {"temperature": 0, "cache_prompt": False, "max_tokens": 32}
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
          "required": ["city"]}  # fmt: skip
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}

REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("/completion", {"prompt": "The capital of France is", "n_predict": 12}),
    ("/completion", {"prompt": "Count: 1, 2, 3,", "n_predict": 16, "stop": [" 6"], "n_probs": 2}),
    ("/completion", {"prompt": "A city as JSON:", "n_predict": 24, "json_schema": SCHEMA}),
    ("/completion", {"prompt": "Once upon a time", "n_predict": 10, "stream": True}),
    ("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 12}),
    ("/v1/completions", {"prompt": "Count: 1, 2, 3,", "max_tokens": 16, "stop": " 6",
                         "logprobs": 2}),
    ("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 10, "stream": True}),
    ("/v1/chat/completions", {"messages": CHAT}),
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 6, "logprobs": True,
                              "top_logprobs": 2}),
    ("/v1/chat/completions", {"messages": CHAT, "stop": ["Paris"]}),
    ("/v1/chat/completions", {"messages": CHAT, "response_format": {
        "type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}}}),
    ("/v1/chat/completions", {"messages": CHAT, "tools": [TOOL], "tool_choice": "required"}),
    ("/v1/chat/completions", {"messages": CHAT, "stream": True}),
    ("/v1/chat/completions", {"messages": CHAT, "tools": [TOOL], "tool_choice": "required",
                              "stream": True}),
]  # fmt: skip


def stable(value: Any) -> Any:
    """`value` without what changes from run to run: ids, timestamps, timings, float noise."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    if isinstance(value, float):
        return round(value, 3)
    return value


def call_ids(value: Any) -> Any:
    """`value` without tool call ids, which are random."""
    if isinstance(value, dict):
        is_call = value.get("type") == "function"
        return {k: call_ids(v) for k, v in value.items() if k != "id" or not is_call}
    if isinstance(value, list):
        return [call_ids(v) for v in value]
    return value


def answer(server: RunningServer, path: str, body: dict[str, Any]) -> Any:
    full = {**GREEDY, **body}
    if not body.get("stream"):
        r = httpx.post(server.url + path, json=full, timeout=120)
        return {"status": r.status_code, "body": stable(call_ids(r.json()))}
    events = []
    with httpx.stream("POST", server.url + path, json=full, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(stable(call_ids(json.loads(line[6:]))))
    return {"status": r.status_code, "events": events}


def cpu() -> str:
    """Which CPU kernels llama.cpp runs: greedy answers of this small quantized model differ
    between CPUs (the same code gave other tokens on an AMD EPYC than where it was first
    recorded), so answers are recorded per CPU model and instruction set."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", info)
    flags = re.search(r"flags\s*:\s*(.*)", info)
    simd = sorted(f for f in (flags.group(1).split() if flags else []) if f.startswith("avx"))
    return " ".join([model.group(1).strip() if model else platform.machine(), *simd])


def test_answers_are_as_recorded(server: RunningServer) -> None:
    got = [{"path": p, "request": b, "answer": answer(server, p, b)} for p, b in REQUESTS]
    recorded = json.loads(RECORDED.read_text()) if RECORDED.exists() else {}
    if os.environ.get("ENDMARK_RECORD"):
        recorded[cpu()] = got
        RECORDED.write_text(json.dumps(recorded, indent=1, ensure_ascii=False) + "\n")
        pytest.skip(f"recorded {len(got)} answers for {cpu()} to {RECORDED}")
    if cpu() not in recorded:
        pytest.skip(f"no answers recorded on this CPU ({cpu()}): ENDMARK_RECORD=1 records them")
    want = recorded[cpu()]
    assert [(w["path"], w["request"]) for w in want] == [(g["path"], g["request"]) for g in got]
    for w, g in zip(want, got, strict=True):
        assert g["answer"] == w["answer"], f"{g['path']} {json.dumps(g['request'])}"
