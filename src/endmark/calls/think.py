"""Thinking: the markers a model writes its reasoning between, learned from its template, and
how a request wants the reasoning handled."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, replace

from endmark.chat import Template, TemplateRefused, TemplateRenderError

PROBE_REASONING = "endmark-probe-reasoning-3d9a"
PROBE_ANSWER = "endmark-probe-answer-3d9a"
# Pairs known from model families, for a template that does not write reasoning back
KNOWN_MARKERS = (
    ("<think>", "</think>"),
    ("<seed:think>", "</seed:think>"),
    ("[THINK]", "[/THINK]"),
    ("<|START_THINKING|>", "<|END_THINKING|>"),
)
_TAG_AT_END = re.compile(r"(<[^<>\s]+>|\[[^\[\]\s]+\])$")
_TAG_AT_START = re.compile(r"^(<[^<>\s]+>|\[[^\[\]\s]+\])")


@dataclass(frozen=True)
class ThinkFormat:
    """The markers around reasoning; `open` when the generation prompt already opened it."""

    start: str = "<think>"
    end: str = "</think>"
    open: bool = False
    markup: tuple[str, ...] = ()  # outside reasoning, structure, never content (harmony's)


@dataclass(frozen=True)
class Reasoning:
    """How a request wants thinking handled: llama-server's `reasoning_format` and budget."""

    format: str = "auto"  # none: thinking stays in content
    budget: int = -1  # tokens; 0 skips thinking, -1 has no limit


HARMONY_ANALYSIS = "<|channel|>analysis<|message|>"
# gpt-oss reasons in the analysis channel; its other messages' headers and ends are markup
HARMONY = ThinkFormat(
    HARMONY_ANALYSIS, "<|end|>",
    markup=("<|start|>assistant", "<|channel|>final<|message|>",
            "<|channel|>commentary<|message|>", "<|end|>"),
)  # fmt: skip

# Kimi K3 thinks in an XTML block; its answer's own tags (`response`, the message's close)
# are markup
XTML = ThinkFormat(
    "<|open|>think<|sep|>", "<|close|>think<|sep|>",
    markup=("<|open|>response<|sep|>", "<|close|>response<|sep|>", "<|close|>message<|sep|>"),
)  # fmt: skip


def _reasoning_render(template: Template, key: str) -> str:
    """A turn with reasoning (given as `key`: `thinking`, `reasoning_content`) rendered;
    "" where the template refuses it (learning never raises: a failed probe teaches nothing)."""
    turn = {"role": "assistant", "content": PROBE_ANSWER, key: PROBE_REASONING}
    try:
        return template.render([{"role": "user", "content": "Hello"}, turn], False)
    except Exception:  # noqa: BLE001
        return ""


def _writes_channels(template: Template) -> bool:
    """Whether the template writes an assistant's reasoning (its `thinking`) as a message
    in harmony's analysis channel (gpt-oss)."""
    text = _reasoning_render(template, "thinking")
    return f"{HARMONY_ANALYSIS}{PROBE_REASONING}{HARMONY.end}" in text


def _written_markers(template: Template) -> tuple[str, str] | None:
    """The tags the template writes around an assistant's `reasoning_content`, if it does."""
    turn = {"role": "assistant", "content": PROBE_ANSWER, "reasoning_content": PROBE_REASONING}
    try:
        text = template.render([{"role": "user", "content": "Hello"}, turn], False)
    except (TemplateRenderError, TemplateRefused):
        return None
    at = text.find(PROBE_REASONING)
    if at < 0:
        return None
    before, after = text[:at].rstrip(), text[at + len(PROBE_REASONING) :].lstrip()
    start, end = _TAG_AT_END.search(before), _TAG_AT_START.match(after)
    if start is None or end is None or start.group(0) == end.group(0):
        return None
    # a whole marker, not the last piece of one (Kimi K3's `<|open|>think<|sep|>`)
    glued = before[: start.start()][-1:].isalnum() or after[end.end() :][:1].isalnum()
    return None if glued else (start.group(0), end.group(0))


def _writes_xtml(template: Template) -> bool:
    """Whether the template writes an assistant's reasoning in Kimi K3's XTML think block."""
    text = _reasoning_render(template, "reasoning_content")
    return f"{XTML.start}{PROBE_REASONING}{XTML.end}" in text


def learn_think_format(template: Template, token_texts: Collection[str]) -> ThinkFormat | None:
    """The markers the model thinks between: those its template writes around reasoning, else
    a known pair its template or its vocabulary has; and whether the generation prompt
    already opens the block (Qwen3, SmolLM3). None: the model does not think."""
    source = getattr(template, "source", "")
    if HARMONY_ANALYSIS in source and _writes_channels(template):
        return HARMONY
    known = XTML if XTML.start in source or "open_tag('think')" in source else None
    if known is not None and _writes_xtml(template):
        return replace(known, open=_opened(template, known.start))
    markers = _written_markers(template) or next(
        ((s, e) for s, e in KNOWN_MARKERS if s in source or s in token_texts), None
    )
    if markers is None:
        return None
    start, end = markers
    return ThinkFormat(start, end, open=_opened(template, start))


def _opened(template: Template, start: str) -> bool:
    """Whether the generation prompt opens the thinking itself."""
    try:
        prompt = template.render([{"role": "user", "content": "Hello"}], True)
    except (TemplateRenderError, TemplateRefused):
        return False
    return prompt.rstrip().endswith(start)
