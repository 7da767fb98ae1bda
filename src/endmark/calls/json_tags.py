"""JSON in tags: Hermes and Qwen 2.5/3 write `<tool_call>{"name", "arguments"}</tool_call>`;
any other pair of markers around one JSON call is learned the same way."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import ClassVar

from endmark.calls.diff import NAMES, Call, call_section
from endmark.calls.json_body import JsonCalls
from endmark.calls.json_probe import probe_json
from endmark.chat import ChatTemplate

BARE_STARTS = ("", "<|python_tag|>")  # the bare-JSON kind's


@dataclass(frozen=True)
class JsonInTags(JsonCalls):
    kind: ClassVar[str] = "json_tags"

    @classmethod
    def learn(cls, template: ChatTemplate, end_texts: Collection[str]) -> JsonInTags | None:
        probe = probe_json(template, end_texts)
        if probe is None or probe.array or probe.before in BARE_STARTS:
            return None
        known = (probe.before, probe.end) == (HERMES.start, HERMES.end)
        # two calls in one `start ... end`, one after the other (MiniMax-M1)
        two = call_section(template, (Call(), Call(1, 1, 1)), end_texts) or ""
        lines = two.count(probe.before) == 1 and all(n in two for n in NAMES)
        return cls("hermes" if known else "learned", probe.before, probe.end, probe.args_key,
                   probe.short_ids, probe.keys.name, probe.keys.order, probe.pretty,
                   lines)  # fmt: skip


HERMES = JsonInTags("hermes", "<tool_call>", "</tool_call>")
