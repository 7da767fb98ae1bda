"""A conversation fitted to what its chat template accepts, as llama.cpp fits it
(`common/chat.cpp` workarounds, `common/jinja/caps.cpp` probes).

Templates differ in what they check and what they can write: a system role or none (gemma-2),
a call's `arguments` as an object (`tojson`, `.items()`) or as a JSON text (functionary v3.2
concatenates it), call ids of any shape or exactly 9 letters and digits (Mistral), tool
results shown or dropped (Phi-3.5). What one template accepts is learned once by probe renders
(`learn_caps`); every render then fits the messages to it (`fit_messages`), so a request is
refused only for what the template itself refuses, with its own message.

A template that cannot write calls at all gets them written into the message text in
endmark's generic format, and its tool results as user turns, so that none is lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("endmark")

# endmark's generic call format (`calls/generic.py` writes the same)
GENERIC_CALL_START = "<tool_call>"
GENERIC_CALL_END = "</tool_call>"
RESULT_START = "<tool_response>\n"
RESULT_END = "\n</tool_response>"

FIT_TOOL_NAME = "endmark_fit_fn"
FIT_ARG_KEY = "endmark_fit_arg"
FIT_ARG_VALUE = "endmark-fit-value-8c2e"
FIT_RESULT = "endmark-fit-result-8c2e"
FIT_SYSTEM = "endmark-fit-system-8c2e"
FIT_USER = "endmark-fit-user-8c2e"
LONG_ID = "call_endmark0fit0probe0id0001"  # OpenAI's shape: `call_`, then 24 more
MAX_ID_LENGTH = 40
OBJECT_ARGS = {FIT_ARG_KEY: FIT_ARG_VALUE}

Render = Callable[..., str]  # (messages, add_generation_prompt, **variables) -> text; may raise


@dataclass(frozen=True)
class TemplateCaps:
    """What a template accepts and writes, learned by `learn_caps`."""

    system_role: bool = True
    writes_calls: bool = False
    object_arguments: bool = True  # False: a call's `arguments` is given as a JSON text
    id_length: int = 0  # 0: any id; else ids of exactly this many letters and digits
    writes_tool_results: bool = True
    call_content: str | None = ""  # an assistant's empty content beside its calls


CAN_ANYTHING = TemplateCaps(writes_calls=True)  # messages go through as they are


def fit_tool() -> dict[str, Any]:
    parameters = {"type": "object", "properties": {FIT_ARG_KEY: {"type": "string"}},
                  "required": [FIT_ARG_KEY]}  # fmt: skip
    function = {"name": FIT_TOOL_NAME, "description": "probe", "parameters": parameters}
    return {"type": "function", "function": function}


def _call_conversation(
    arguments: Any, call_id: str, content: str | None = ""
) -> list[dict[str, Any]]:
    """llama.cpp's capability probe: a call, its result, an answer and a new question."""
    call = {"id": call_id, "type": "function",
            "function": {"name": FIT_TOOL_NAME, "arguments": arguments}}  # fmt: skip
    return [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": content, "tool_calls": [call]},
        {"role": "tool", "content": FIT_RESULT, "tool_call_id": call_id, "name": FIT_TOOL_NAME},
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": "Thanks"},
    ]


def _attempt(render: Render, messages: list[dict[str, Any]], **variables: Any) -> str | None:
    try:
        return render(messages, False, **variables)
    except Exception:  # noqa: BLE001 - a refused probe is an answer, not an error
        return None


def _failure(render: Render, messages: list[dict[str, Any]], **variables: Any) -> str:
    """The template's own message for a render it refuses ("" if it renders)."""
    try:
        render(messages, False, **variables)
    except Exception as exc:  # noqa: BLE001
        return str(exc)
    return ""


def _writes_arguments(text: str | None) -> bool:
    """Whether a render wrote the probe call's arguments as JSON (not as an escaped string,
    nor as Python's repr of a dict). Only the call is read: the tools a template lists may
    be written as Python's repr (Apriel), the call's arguments as JSON all the same."""
    if text is None or FIT_ARG_VALUE not in text:
        return False
    key = text[: text.index(FIT_ARG_VALUE)].rfind(FIT_ARG_KEY)
    written = text[max(key - 2, 0) : key + len(FIT_ARG_KEY) + 2] if key >= 0 else ""
    return f'\\"{FIT_ARG_KEY}\\"' not in written and f"'{FIT_ARG_KEY}'" not in written


def learn_caps(render: Render, name: str = "") -> TemplateCaps:
    """What the template accepts, from probe renders (`render` renders messages as they are
    given). Never raises: what cannot be learned keeps llama.cpp's default."""
    shown = f" ({name})" if name else ""
    system_role = _learn_system_role(render, shown)
    tools = [fit_tool()]
    shape = _learn_call_shape(render, tools)
    if shape is None:
        plain = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."},
                 {"role": "tool", "content": FIT_RESULT, "tool_call_id": "call00001"}]  # fmt: skip
        results = FIT_RESULT in (_attempt(render, plain, tools=tools) or "")
        why = _failure(render, _call_conversation(OBJECT_ARGS, "call00001"), tools=tools)
        log.info("the chat template%s writes no tool calls%s: a history's calls are written as "
                 "text in endmark's generic format", shown, f" ({why})" if why else "")  # fmt: skip
        caps = TemplateCaps(system_role, writes_tool_results=results)
    else:
        object_arguments, content, written = shape
        if not object_arguments:
            log.info("the chat template%s takes a call's arguments as a JSON text", shown)
        args = OBJECT_ARGS if object_arguments else json.dumps(OBJECT_ARGS)
        id_length = _learn_id_length(render, args, content, tools, shown)
        caps = TemplateCaps(system_role, True, object_arguments, id_length, FIT_RESULT in written,
                            content)  # fmt: skip
    if not caps.writes_tool_results:
        log.info("the chat template%s shows no tool results: they are given as user turns", shown)
    return caps


def _learn_system_role(render: Render, shown: str) -> bool:
    """Whether the template takes a system message: it neither refuses one nor drops its
    text while it shows the user's (one that refuses or shows no text at all tells nothing)."""
    system = [{"role": "system", "content": FIT_SYSTEM}, {"role": "user", "content": FIT_USER}]
    text = _attempt(render, system)
    if text is not None and (FIT_SYSTEM in text or FIT_USER not in text):
        return True
    if text is None and _attempt(render, system[1:]) is None:
        return True  # it refuses a plain chat too: nothing to learn here
    why = _failure(render, system) or "the system text is not rendered"
    log.info("the chat template%s takes no system role (%s): system text goes into the first "
             "user turn", shown, why)  # fmt: skip
    return False


def _learn_call_shape(render: Render, tools: list[Any]) -> tuple[bool, str | None, str] | None:
    """How the template writes a call: whether it takes the arguments as an object (else as
    a JSON text), the content it wants beside calls ("", or None as DeepSeek-R1's checks),
    and the probe's render. None: it writes no calls."""
    for content in ("", None):
        as_object = _attempt(render, _call_conversation(OBJECT_ARGS, "call00001", content),
                             tools=tools)  # fmt: skip
        if _writes_arguments(as_object):
            return True, content, as_object or ""
        as_text = _attempt(render, _call_conversation(json.dumps(OBJECT_ARGS), "call00001",
                                                      content), tools=tools)  # fmt: skip
        if as_text is not None and FIT_ARG_VALUE in as_text:
            return False, content, as_text
        if as_object is not None and FIT_ARG_VALUE in as_object:
            return True, content, as_object
    return None


def _learn_id_length(
    render: Render, args: Any, content: str | None, tools: list[Any], shown: str
) -> int:
    """0 when the template takes OpenAI's call ids; else the length of the letters-and-digits
    ids it takes (Mistral's: 9), 0 again if it takes none we tried."""
    if _attempt(render, _call_conversation(args, LONG_ID, content), tools=tools) is not None:
        return 0
    why = _failure(render, _call_conversation(args, LONG_ID, content), tools=tools)
    for length in (9, *range(1, MAX_ID_LENGTH + 1)):
        conversation = _call_conversation(args, _alnum_id("fit", length), content)
        if _attempt(render, conversation, tools=tools):
            log.info("the chat template%s takes call ids of %d letters and digits (%s): ids are "
                     "rewritten to fit", shown, length, why)  # fmt: skip
            return length
    return 0


def _alnum_id(seed: str, length: int) -> str:
    """A stable id of `length` letters and digits for `seed` (the same one every turn, so
    that a conversation's prompt keeps its prefix)."""
    digest = hashlib.sha256(seed.encode()).hexdigest()
    while len(digest) < length:
        digest += hashlib.sha256(digest.encode()).hexdigest()
    return digest[:length]


def fitted_id(call_id: Any, length: int) -> Any:
    """`call_id` as a template that takes ids of `length` letters and digits accepts it."""
    if not length or not isinstance(call_id, str):
        return call_id
    if len(call_id) == length and call_id.isascii() and call_id.isalnum():
        return call_id
    return _alnum_id(call_id, length)


def fit_messages(messages: Sequence[Mapping[str, Any]], caps: TemplateCaps) -> list[dict[str, Any]]:
    """`messages` as the template accepts them (`caps`): system text in the first user turn,
    calls with the arguments and ids it takes or written as text, every tool result shown."""
    out = [_fit_message(m, caps) for m in messages]
    if not caps.writes_tool_results:
        out = _results_as_user_turns(out)
    if not caps.system_role:
        out = _system_in_first_user_turn(out)
    return out


def _fit_message(message: Mapping[str, Any], caps: TemplateCaps) -> dict[str, Any]:
    m = dict(message)
    if m.get("tool_call_id") is not None:
        m["tool_call_id"] = fitted_id(m["tool_call_id"], caps.id_length)
    calls = m.get("tool_calls")
    if not calls:
        return m
    if not m.get("content"):
        m["content"] = caps.call_content if caps.writes_calls else ""
    if not caps.writes_calls:
        del m["tool_calls"]
        m["content"] = str(m["content"]) + "".join(_generic_call(c) for c in calls)
        return m
    m["tool_calls"] = [_fit_call(c, caps) for c in calls]
    return m


def _fit_call(call: Mapping[str, Any], caps: TemplateCaps) -> dict[str, Any]:
    call = dict(call)
    if "id" in call:
        call["id"] = fitted_id(call["id"], caps.id_length)
    function = call.get("function")
    if isinstance(function, Mapping) and "arguments" in function:
        function = dict(function)
        function["arguments"] = _arguments_as(function["arguments"], caps.object_arguments)
        call["function"] = function
    return call


def _arguments_as(arguments: Any, as_object: bool) -> Any:
    if as_object and isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    if not as_object and not isinstance(arguments, str):
        return json.dumps(arguments, ensure_ascii=False)
    return arguments


def _generic_call(call: Mapping[str, Any]) -> str:
    """A call as endmark's generic format writes it: `<tool_call>{"name", "arguments"}`."""
    function = call.get("function") or {}
    arguments = _arguments_as(function.get("arguments", {}), True)
    body = json.dumps({"name": function.get("name", ""), "arguments": arguments},
                      ensure_ascii=False)  # fmt: skip
    return GENERIC_CALL_START + body + GENERIC_CALL_END


def _results_as_user_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool results the template would drop (or refuse) as user turns, and those next to a
    user turn joined with it: templates that check that roles alternate still accept them."""
    out: list[dict[str, Any]] = []
    joinable = False  # whether the last turn in `out` holds a result turned into user text
    for m in messages:
        is_result = m.get("role") == "tool"
        if is_result:
            m = {"role": "user", "content": RESULT_START + str(m.get("content") or "") + RESULT_END}
        if (
            m.get("role") == "user"
            and out
            and out[-1].get("role") == "user"
            and (joinable or is_result)
        ):
            out[-1] = {**out[-1], "content": f"{out[-1].get('content') or ''}\n{m['content']}"}
        else:
            out.append(m)
        joinable = is_result or (joinable and m.get("role") == "user")
    return out


def _system_in_first_user_turn(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The leading system message merged into the turn after it, as llama.cpp does; with no
    user turn after it, it becomes one."""
    if not messages or messages[0].get("role") != "system":
        return messages
    system, rest = messages[0], messages[1:]
    text = str(system.get("content") or "")
    if rest and rest[0].get("role") == "user" and isinstance(rest[0].get("content"), str):
        return [{**rest[0], "content": f"{text}\n{rest[0]['content']}"}, *rest[1:]]
    return [{"role": "user", "content": text}, *rest]
