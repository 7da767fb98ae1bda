"""Every real chat template in tests/data/templates (llama.cpp's models/templates), in process:
loaded as loading loads a model's (the scripted engine stands in for the model), a tool
round trip rendered as `/apply-template` renders it, and the history's call written as the
template itself writes it.

"The template writes it itself" is checked against a plain render (`render_given`: no
fitting) of the same conversation, given as the family's own clients give it: the call's
arguments and id in the shape the template takes. A template that cannot write calls gets
them in endmark's generic format instead, and keeps every tool result.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest

from endmark.chat import ChatTemplate
from endmark.chat_fit import fitted_id
from endmark.loading import learn
from endmark.prepare import Learned, Preparer
from endmark.server.dialects.openai_protocol import ApplyTemplateRequest
from endmark.settings import Settings
from tests.gguf_factory import TEMPLATES
from tests.scripted_engine import ScriptedEngine

NAMES = sorted(p.stem for p in TEMPLATES.glob("*.jinja"))
CALL_ID = "call_0123456789abcdef01234567"  # OpenAI's shape, as a client sends it back
USER_TEXT = "Weather, please."
RESULT_TEXT = "sunny-22C"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}  # fmt: skip
# Known to fail, each for its precise reason (none today: every template passes)
XFAIL: dict[str, str] = {}


def wire_messages() -> list[dict[str, Any]]:
    """The conversation as an OpenAI client sends it: arguments as a JSON text."""
    function = {"name": "get_weather", "arguments": json.dumps({"city": "Lyon"})}
    call = {"id": CALL_ID, "type": "function", "function": function}
    return [
        {"role": "user", "content": USER_TEXT},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": CALL_ID, "content": RESULT_TEXT},
    ]


@cache
def loaded(name: str) -> tuple[Learned, Preparer]:
    """What loading learns of a model with this template, and its preparer."""
    engine = ScriptedEngine(chat_template=(TEMPLATES / f"{name}.jinja").read_text())
    settings = Settings()
    learned = learn(engine, settings)
    return learned, Preparer(engine, settings, learned)


def apply_template(name: str, tools: bool = True) -> str:
    """What `/apply-template` shows for the round trip (its request model, its prompt path)."""
    body: dict[str, Any] = {"messages": wire_messages()}
    if tools:
        body["tools"] = [WEATHER]
    chat = ApplyTemplateRequest.model_validate(body).to_chat()
    _, prepare = loaded(name)
    return prepare.chat_prompt(
        chat.messages, chat.add_generation_prompt, chat.continue_final_message, chat.tools
    )


def plain_render(template: ChatTemplate) -> str:
    """The conversation rendered as it is given, in the shape the template takes."""
    caps = template.caps
    args: Any = {"city": "Lyon"} if caps.object_arguments else json.dumps({"city": "Lyon"})
    call_id = fitted_id(CALL_ID, caps.id_length)
    call = {"id": call_id, "type": "function",
            "function": {"name": "get_weather", "arguments": args}}  # fmt: skip
    messages = [
        {"role": "user", "content": USER_TEXT},
        {"role": "assistant", "content": caps.call_content, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": RESULT_TEXT},
    ]
    return template.render_given(messages, True, tools=[WEATHER])


def params() -> list[Any]:
    return [pytest.param(n, marks=pytest.mark.xfail(reason=XFAIL[n], strict=True))
            if n in XFAIL else n for n in NAMES]  # fmt: skip


def test_every_template_of_the_folder_is_here() -> None:
    assert len(NAMES) == 70


@pytest.mark.parametrize("name", params())
def test_the_template_loads_and_learning_never_raises(name: str) -> None:
    learned, _ = loaded(name)
    assert isinstance(learned.template, ChatTemplate) and learned.template_error is None


@pytest.mark.parametrize("name", params())
def test_a_tool_round_trip_renders_and_keeps_the_call_and_its_result(name: str) -> None:
    prompt = apply_template(name)
    assert USER_TEXT in prompt and RESULT_TEXT in prompt and "Lyon" in prompt
    assert RESULT_TEXT in apply_template(name, tools=False)  # a history without tools offered


@pytest.mark.parametrize("name", params())
def test_the_history_call_is_written_as_the_template_writes_it(name: str) -> None:
    """From the end of the user's text to the tool result: the call, as the plain render
    writes it. A template that writes no calls shows them in the generic format."""
    learned, _ = loaded(name)
    template = learned.template
    assert isinstance(template, ChatTemplate)
    prompt = apply_template(name)
    if not template.caps.writes_calls:
        generic = '<tool_call>{"name": "get_weather", "arguments": {"city": "Lyon"}}</tool_call>'
        assert generic in prompt
        return
    plain = plain_render(template)
    start = plain.index(USER_TEXT) + len(USER_TEXT)
    segment = plain[start : plain.index(RESULT_TEXT, start)]
    assert "Lyon" in segment and segment in prompt
