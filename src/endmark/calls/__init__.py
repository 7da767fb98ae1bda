"""Tool-call formats, one strategy class per kind (DESIGN.md, `calls/`), and thinking's.

`learn_call_strategy` tries each kind on the model's template, in order; a model whose
template knows no tools gets `GENERIC`, endmark's own format.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from endmark.calls.bare_json import LLAMA3, BareJson
from endmark.calls.base import CallStrategy, MalformedCall, ToolCall, new_call_id
from endmark.calls.generic import GENERIC, Generic, generic_system_prompt, with_system_text
from endmark.calls.harmony import HARMONY, HarmonyCalls
from endmark.calls.headed import HeadedCalls
from endmark.calls.json_array import MISTRAL, JsonArray
from endmark.calls.json_body import JsonCalls
from endmark.calls.json_named import NamedJson
from endmark.calls.json_tags import HERMES, JsonInTags
from endmark.calls.lark import MAX_STRING, closed
from endmark.calls.literal_args import LiteralArgs
from endmark.calls.tagged_args import QWEN3_CODER, TaggedArgs
from endmark.calls.think import Reasoning, ThinkFormat, learn_think_format
from endmark.calls.xtml import KIMI_K3, XtmlCalls
from endmark.chat import ChatTemplate, Template

log = logging.getLogger("endmark")

# Tried in this order; each says None for a template that writes calls another way.
KINDS: tuple[type[CallStrategy], ...] = (
    JsonArray, BareJson, JsonInTags, NamedJson, TaggedArgs, HarmonyCalls, LiteralArgs,
    HeadedCalls, XtmlCalls,
)  # fmt: skip


def learn_call_strategy(template: Template, end_texts: Collection[str]) -> CallStrategy | None:
    """How the template writes an assistant's tool calls, read from rendered probe calls
    (`end_texts`: the texts that end a turn). None: the template knows no tools."""
    if not isinstance(template, ChatTemplate) or "tool" not in template.source:
        return None
    if not template.caps.writes_calls:
        return None  # its renders would show the generic format `chat_fit` writes calls in
    failure = ""
    for kind in KINDS:
        try:
            learned = kind.learn(template, end_texts)
        except Exception as exc:  # noqa: BLE001 - probing never stops loading
            failure = failure or f"{kind.kind}: {exc}"
            continue
        if learned is not None:
            return learned
    if failure:
        log.warning("the chat template (%s) failed a tool-call probe (%s): tool calls use "
                    "endmark's generic format", template.name, failure)  # fmt: skip
    return None


__all__ = [
    "GENERIC",
    "HARMONY",
    "HERMES",
    "KINDS",
    "LLAMA3",
    "MAX_STRING",
    "MISTRAL",
    "QWEN3_CODER",
    "BareJson",
    "CallStrategy",
    "Generic",
    "HarmonyCalls",
    "HeadedCalls",
    "JsonArray",
    "JsonCalls",
    "JsonInTags",
    "LiteralArgs",
    "KIMI_K3",
    "XtmlCalls",
    "MalformedCall",
    "NamedJson",
    "Reasoning",
    "TaggedArgs",
    "ThinkFormat",
    "ToolCall",
    "closed",
    "generic_system_prompt",
    "learn_call_strategy",
    "learn_think_format",
    "new_call_id",
    "with_system_text",
]
