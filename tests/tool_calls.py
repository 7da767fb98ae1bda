"""Reading tool calls back from the `openai` SDK, for the end-to-end tests of calls."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import openai


def streamed_calls(
    client: openai.OpenAI, markup: Iterable[str] = (), **kw: Any
) -> tuple[str | None, list[tuple[str, Any]]]:
    """A streamed answer's finish reason and its calls, assembled from the deltas; no content
    delta may hold any of `markup`."""
    markup = tuple(markup)
    parts: dict[int, dict[str, str]] = {}
    reason = None
    for chunk in client.chat.completions.create(stream=True, **kw):
        if not chunk.choices:
            continue
        for d in chunk.choices[0].delta.tool_calls or []:
            part = parts.setdefault(d.index, {"name": "", "arguments": ""})
            part["name"] += d.function.name or "" if d.function else ""
            part["arguments"] += d.function.arguments or "" if d.function else ""
        assert not any(m in (chunk.choices[0].delta.content or "") for m in markup)
        reason = chunk.choices[0].finish_reason or reason
    return reason, [(p["name"], json.loads(p["arguments"])) for _, p in sorted(parts.items())]
