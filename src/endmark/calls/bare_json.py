"""Bare JSON: Llama 3.x writes a call as `{"name", "parameters"}` alone (or after
`<|python_tag|>`), running to the end of the turn."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import ClassVar

from endmark.calls.json_body import JsonCalls
from endmark.calls.json_probe import probe_json
from endmark.calls.json_tags import BARE_STARTS
from endmark.chat import ChatTemplate


@dataclass(frozen=True)
class BareJson(JsonCalls):
    kind: ClassVar[str] = "bare_json"

    @property
    def bare(self) -> bool:
        return True

    def opens_bare(self, text: str) -> bool:
        return text.lstrip().startswith("{")

    @classmethod
    def learn(cls, template: ChatTemplate, end_texts: Collection[str]) -> BareJson | None:
        probe = probe_json(template, end_texts)
        if probe is None or probe.array or probe.before not in BARE_STARTS:
            return None
        return cls(LLAMA3.name, LLAMA3.start, LLAMA3.end, probe.args_key, probe.short_ids,
                   probe.keys.name, probe.keys.order)  # fmt: skip


LLAMA3 = BareJson("llama3", "<|python_tag|>", args_key="parameters")
