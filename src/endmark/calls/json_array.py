"""A JSON array after a marker: Mistral writes `[TOOL_CALLS][{"name", "arguments"}, ...]`,
every call of the turn in one array that runs to the end of the turn."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import ClassVar

from endmark.calls.json_body import JsonCalls
from endmark.calls.json_probe import probe_json
from endmark.chat import ChatTemplate


@dataclass(frozen=True)
class JsonArray(JsonCalls):
    kind: ClassVar[str] = "json_array"
    array: ClassVar[bool] = True

    def opens_bare(self, text: str) -> bool:
        return self.bare and text.lstrip().startswith("[")

    @classmethod
    def learn(cls, template: ChatTemplate, end_texts: Collection[str]) -> JsonArray | None:
        probe = probe_json(template, end_texts)
        if probe is None or not probe.array:
            return None
        known = (probe.before, probe.end) == (MISTRAL.start, MISTRAL.end)
        return cls("mistral" if known else "learned", probe.before, probe.end, probe.args_key,
                   probe.short_ids, probe.keys.name, probe.keys.order, probe.pretty)  # fmt: skip


MISTRAL = JsonArray("mistral", "[TOOL_CALLS]", short_ids=True)
