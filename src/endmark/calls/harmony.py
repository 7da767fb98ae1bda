"""Channels: gpt-oss writes every message in a channel (OpenAI's harmony format). Reasoning
is `<|channel|>analysis<|message|>...<|end|>` (`think.HARMONY`), the answer
`<|channel|>final<|message|>...`, and a call a commentary message addressed to the function:

    <|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Rome"}
    <|call|>

(one line, the break aside).

The recipient may also sit in the role header (` to=functions.NAME<|channel|>commentary
json<|message|>`), as gpt-oss's template writes a call back into the history; both are calls.
The recipient's prefix, the call's channel and its end are learned from a probe render.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from endmark.calls.base import (
    CallClose,
    CallStrategy,
    MalformedCall,
    Messages,
    ToolCall,
    new_call_id,
)
from endmark.calls.json_body import json_text, loads_exact
from endmark.calls.lark import GRAMMAR_HEAD, closed, literal
from endmark.calls.lark_marks import marked
from endmark.calls.probe import PROBE_TOOL_NAME, probe_tool, rendered_calls
from endmark.calls.tagged_args import with_object_arguments
from endmark.calls.tagged_close import cut_at
from endmark.chat import ChatTemplate
from endmark.constraints import JSON_OPTIONS
from endmark.json_close import FILL, json_closing
from endmark.tools import Tool, ToolRequest

CHANNEL = "<|channel|>"
MESSAGE = "<|message|>"
CONSTRAIN = "<|constrain|>"
PROBE_TOOL = probe_tool({"endmark_probe_arg": {"type": "integer"}})
# In a call's header, after the function's name: its content type, then the message
HEADER = f" {CONSTRAIN}json{MESSAGE}"
_RECIPIENT = re.compile(r"to=([\w.-]*?)" + re.escape(PROBE_TOOL_NAME))
_CALL_CHANNEL = re.compile(re.escape(CHANNEL) + r"(\w+)")
_NAME = re.compile(r"[^\s<]*")


@dataclass(frozen=True)
class HarmonyCalls(CallStrategy):
    """A call is `start NAME header ARGUMENTS end`: `start` is the channel header that names
    the recipient (`<|channel|>commentary to=functions.`), `role_start` the same recipient
    in the role header; the header up to `<|message|>` is read over, the arguments are
    JSON."""

    name: str = "harmony"
    start: str = f"{CHANNEL}commentary to=functions."
    end: str = "<|call|>"
    role_start: str = " to=functions."
    channel: str = "commentary"

    kind: ClassVar[str] = "channels"
    body_tokens: ClassVar[tuple[str, ...]] = (CHANNEL, CONSTRAIN, MESSAGE)

    @classmethod
    def learn(cls, template: ChatTemplate, end_texts: Collection[str]) -> HarmonyCalls | None:
        """A probe call written as a message to a recipient (`to=functions.NAME`) in a
        channel, its arguments after `<|message|>`: the recipient's prefix, the channel and
        the text after the JSON (the end of a call) are read off the render."""
        body = rendered_calls(template, PROBE_TOOL, [{"endmark_probe_arg": 1}])
        if not body or CHANNEL not in body or MESSAGE not in body:
            return None
        recipient = _RECIPIENT.search(body)
        channel = _CALL_CHANNEL.search(body)
        if recipient is None or channel is None:
            return None
        after = body[body.index(MESSAGE) + len(MESSAGE) :]
        try:
            _, length = json.JSONDecoder().raw_decode(after)
        except ValueError:
            return None
        end = after[length:].strip()
        if not (end.startswith("<|") and end.endswith("|>") and end.count("<|") == 1):
            return None
        prefix, name = recipient.group(1), channel.group(1)
        return cls("harmony", f"{CHANNEL}{name} to={prefix}", end, f" to={prefix}", name)

    @property
    def starts(self) -> tuple[str, ...]:
        """Every marker that opens a call: the recipient in the channel or the role header."""
        return (self.start, self.role_start)

    # -- splitting --------------------------------------------------------------------------

    def _split(self, body: str) -> tuple[str, str, str | None]:
        """The function's name, the header after it, and the arguments (None: the header
        has not reached `<|message|>` yet)."""
        body = body.lstrip()
        name = _NAME.match(body)
        assert name is not None
        rest = body[name.end() :]
        header, found, args = rest.partition(MESSAGE)
        return name.group(0), header, (args if found else None)

    def inside_value(self, body: str) -> bool:
        args = self._split(body)[2]
        return bool(args and args.strip() and json_closing(args.strip()))

    def parse(self, body: str, tools: Sequence[Tool] = ()) -> list[ToolCall]:
        name, _, args = self._split(body.strip().removesuffix(self.end))
        if not name:
            raise MalformedCall(f"a {self.name} tool call names no function")
        if args is None:
            raise MalformedCall(f"a {self.name} tool call has no {MESSAGE}")
        try:
            value = loads_exact(args.strip()) if args.strip() else {}
        except json.JSONDecodeError as exc:
            raise MalformedCall(f"a {self.name} tool call is not JSON: {exc.msg}") from None
        return [ToolCall(name, json_text(value), new_call_id())]

    def closing(self, body: str, tools: Sequence[Tool]) -> CallClose | None:
        """A cut name finished as the tool it begins, a cut header written out, then the
        arguments closed as the tool's schema guides them (`{}` where none were begun)."""
        if not tools:
            return None
        name, header, args = self._split(body)
        fits = [t for t in tools if t.name == name or t.name.startswith(name)]
        tool = next((t for t in fits if t.name == name), fits[0] if fits else None)
        if tool is None:
            return None
        guessed = tool.name != name and len(fits) > 1
        params = tool.parameters if isinstance(tool.parameters, Mapping) else {}
        schema = {**params, FILL: {}}
        if args is not None:
            text = json_closing(args.strip(), schema) if args.strip() else "{}"
            return None if text is None else CallClose(text, self.end, guessed)
        if not header:  # cut in the name, or right after it
            rest = tool.name[len(name) :] + HEADER
        elif HEADER.startswith(header):
            rest = HEADER[len(header) :]
        else:  # a header of its own (`<|channel|>commentary json`): its message marker
            rest = cut_at(header, MESSAGE)[2]
        return CallClose(rest + "{}", self.end, guessed)

    # -- constraining -----------------------------------------------------------------------

    def grammar(self, request: ToolRequest, control: Mapping[str, int], lazy: bool = False) -> str:
        """One call (a harmony message has one recipient), its arguments JSON valid against
        the tool's parameters; the header after the name as gpt-oss writes it, or as its
        template does (`<|channel|>commentary json<|message|>`)."""
        names = []
        rules = []
        for i, tool in enumerate(request.callable):
            names.append(f"fn_{i}")
            schema = {**closed(tool.parameters), "x-guidance": JSON_OPTIONS}
            rules.append(f"fn_{i}: {json.dumps(tool.name)} header args_{i} end")
            rules.append(f"args_{i}: %json {json.dumps(schema)}")
        channel_header = marked(f"{CHANNEL}{self.channel} ", control)
        content_type = f'{literal(CONSTRAIN, control)}? "json" {literal(MESSAGE, control)}'
        opens = f"{marked(self.start, control)} | {marked(self.role_start, control)}"
        first = "fn" if lazy else f"({opens}) fn"
        return (
            f"{GRAMMAR_HEAD}start: {first}\nfn: {' | '.join(names)}\n"
            f'header: (" " | {channel_header}) {content_type}\n'
            f"end: {literal(self.end, control)}\n" + "\n".join(rules) + "\n"
        )

    # -- the prompt -------------------------------------------------------------------------

    def history(self, messages: Messages) -> list[dict[str, Any]]:
        """gpt-oss's template reads an assistant's reasoning from `thinking`, and writes its
        calls' arguments with `tojson`: arguments sent as a JSON text are read into the object
        (else they would be written as a JSON string of JSON)."""
        out = []
        for m in messages:
            m = dict(m)
            if m.get("role") == "assistant" and m.get("reasoning_content") and "thinking" not in m:
                m["thinking"] = m["reasoning_content"]
                if m.get("tool_calls"):
                    m.pop("content", None)
            if m.get("tool_calls"):
                m["tool_calls"] = [with_object_arguments(c) for c in m["tool_calls"]]
            out.append(m)
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "array": False, "arguments_key": ""}


HARMONY = HarmonyCalls()
