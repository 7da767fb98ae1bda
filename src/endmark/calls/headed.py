"""A recipient header before each call: muse-glimmer writes a call as a message addressed to
the tool, its body in another kind's format (tagged arguments):

     to=get_weather<|message|><atem:function_calls>...</atem:function_calls>
    <|eom|><|start|>assistant to=get_time<|message|><atem:function_calls>...

The generation prompt ends where a header begins (`<|start|>assistant`), so the answer's first
call comes without a start marker (the splitter holds the answer's start until the header
tells, `undecided_head`), each further one after the text between two calls (`start`); text
is addressed to the user (` to=user<|message|>`, `content_head`). The header is learned by
diffing a probe call's render; the body's kind from the renders with the headers taken out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from endmark.calls.base import CallClose, CallStrategy, MalformedCall, ToolCall
from endmark.calls.diff import content_head
from endmark.calls.lark_marks import marked
from endmark.calls.literal_learn import MARK
from endmark.calls.probe import PROBE_TOOL_NAME
from endmark.calls.tagged_args import TaggedArgs
from endmark.calls.tagged_learn import PROBE_ARGS, PROBE_TOOL
from endmark.calls.turn_diff import call_section
from endmark.chat import ChatTemplate
from endmark.json_close import Reach
from endmark.tools import Tool, ToolRequest

_NAME = r"[A-Za-z_][\w.\-]*"


@dataclass(frozen=True)
class HeadedCalls(CallStrategy):
    name: str
    start: str  # between one call and the next one's header (`<|eom|><|start|>assistant`)
    end: str  # the body's end marker
    head_open: str  # before the tool's name (` to=`)
    head_close: str  # after it (`<|message|>`)
    body: CallStrategy  # the call's body, after the header
    content_head: str = ""  # the header of text (` to=user<|message|>`)

    kind: ClassVar[str] = "headed"

    @classmethod
    def learn(cls, template: ChatTemplate, end_texts: Collection[str]) -> HeadedCalls | None:
        one = call_section(template, PROBE_TOOL, [PROBE_ARGS]) or ""
        named = one.find(PROBE_TOOL_NAME)
        head_open = one[:named] if named > 0 else ""
        if not head_open.strip() or any(c in head_open for c in "<[{\n"):
            return None
        after = one[named + len(PROBE_TOOL_NAME) :]
        close = MARK.match(after)
        if close is None or PROBE_TOOL_NAME not in after[close.end() :]:
            return None
        head_close = close.group(0)
        header = re.escape(head_open) + _NAME + re.escape(head_close)
        body = TaggedArgs.learn(_Unheaded(template, header), end_texts)
        if body is None:
            return None
        two = call_section(template, PROBE_TOOL, [PROBE_ARGS, PROBE_ARGS]) or ""
        first_end = two.find(body.end) + len(body.end) if body.end else -1
        second = two.find(head_open, max(first_end, 0))
        if first_end <= 0 or second < 0:
            return None
        start = two[first_end:second]
        if not start.strip():
            return None
        return cls("learned", start, body.end, head_open, head_close, body,
                   content_head(template))  # fmt: skip

    # -- reading ----------------------------------------------------------------------------

    def _header(self) -> re.Pattern[str]:
        opening = re.escape(self.head_open.strip())
        return re.compile(rf"\s*{opening}(?P<name>{_NAME}){re.escape(self.head_close)}")

    def _split(self, body: str) -> tuple[str, str] | None:
        """The tool the header names and the body's text after its start marker; None while
        the header or that marker is not whole."""
        found = self._header().match(body)
        if found is None:
            return None
        rest = body[found.end() :].lstrip()
        if not rest.startswith(self.body.start):
            return None
        return found.group("name"), rest[len(self.body.start) :]

    def opens_bare(self, text: str) -> bool:
        if self.content_head and text.strip().startswith(self.content_head.strip()):
            return False
        return self._header().match(text) is not None

    def undecided_head(self, text: str) -> bool:
        stripped, opening = text.lstrip(), self.head_open.strip()
        if len(text) > 120 or self.opens_bare(text):
            return False
        if self.content_head and stripped.startswith(self.content_head.strip()):
            return False
        if len(stripped) <= len(opening):
            return opening.startswith(stripped)
        if not stripped.startswith(opening):
            return False
        rest = stripped[len(opening) :]
        name = re.match(_NAME, rest)
        tail = rest[name.end() :] if name else rest
        return self.head_close.startswith(tail)

    def parse(self, body: str, tools: Sequence[Tool] = ()) -> list[ToolCall]:
        split = self._split(body)
        if split is None:
            raise MalformedCall(f"a {self.name} tool call has no whole header")
        return self.body.parse(split[1], tools)

    def inside_value(self, body: str) -> bool:
        split = self._split(body)
        return split is not None and self.body.inside_value(split[1])

    def closing(self, body: str, tools: Sequence[Tool]) -> CallClose | None:
        """The body closed as its kind closes it; a header cut short finished as the tool's
        whose name it begins, and that tool's call written after it."""
        if not tools:
            return None
        split = self._split(body)
        if split is not None:
            name, rest = split
            tool = [t for t in tools if t.name == name] or list(tools)
            return self.body.closing(rest, tool)
        written = body.lstrip()
        for tool in tools:
            head = f"{self.head_open.strip()}{tool.name}{self.head_close}{self.body.start}"
            if head.startswith(written) or written.startswith(head[: len(written)]):
                if not head.startswith(written):
                    continue
                inner = self.body.closing("", [tool])
                if inner is None:
                    return None
                return CallClose(head[len(written) :] + inner.text, inner.end, len(tools) > 1)
        return None

    def reach(self, body: str, tools: Sequence[Tool]) -> Reach | None:
        split = self._split(body)
        return None if split is None else self.body.reach(split[1], tools)

    # -- constraining -----------------------------------------------------------------------

    def grammar(self, request: ToolRequest, control: Mapping[str, int], lazy: bool = False) -> str:
        """Each call its header, then one call as the body's kind constrains it; `start`
        between calls. The first call comes without `start`, lazy or not: the answer, or the
        call's text, begins at a header."""
        one = ToolRequest(request.tools, request.choice, parallel=False)
        inner = self.body.grammar(one, control, lazy=True)
        head, _, rules = inner.partition("\nstart:")
        names = " | ".join(json.dumps(t.name) for t in request.callable)
        blank = '" "? ' if self.head_open.startswith(" ") else ""  # written with or without
        opening = blank + marked(self.head_open.strip(), control)
        closing = marked(self.head_close, control)
        body_start = marked(self.body.start, control)
        extra = request.max_calls - 1
        more = f" ({marked(self.start, control)} headed){{0,{extra}}}" if extra else ""
        top = f"start: headed{more}\nheaded: {opening} ({names}) {closing} {body_start} body"
        return f"{head}\n{top}\nbody:{rules}"

    def describe(self) -> dict[str, Any]:
        pieces = {"head_open": self.head_open, "head_close": self.head_close,
                  "content_head": self.content_head, "body": self.body.describe()}  # fmt: skip
        return {**super().describe(), **pieces}


class _Unheaded(ChatTemplate):
    """A template whose renders are read without their call headers, for the body's kind
    to be learned from."""

    def __init__(self, template: ChatTemplate, header: str) -> None:
        super().__init__(template.source, template.name, template.bos_token, template.eos_token)
        self._header = re.compile(header)

    def render(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:  # fmt: skip
        return self._header.sub("", super().render(messages, add_generation_prompt, **extra))
