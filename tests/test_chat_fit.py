"""Conversations fitted to what each real template accepts (`chat_fit`), as llama.cpp fits
them: the failures of issue 24 that came from the renderer, each on the template it hit."""

from __future__ import annotations

import json
from typing import Any

import pytest

from endmark.calls import learn_call_strategy
from endmark.chat import ChatTemplate, TemplateRenderError, check_plain_render
from endmark.chat_fit import TemplateCaps, fit_messages, fitted_id
from tests.gguf_factory import TEMPLATES

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}  # fmt: skip
LONG_ID = "call_0123456789abcdef01234567"


def real(name: str) -> ChatTemplate:
    return ChatTemplate((TEMPLATES / f"{name}.jinja").read_text(), name, "<s>", "</s>")


def conversation(call_id: str = LONG_ID, arguments: Any = None) -> list[dict[str, Any]]:
    """A client's conversation: a system message, a call (arguments as an object, as the
    dialects pass them), its result."""
    args = {"city": "Lyon"} if arguments is None else arguments
    call = {"id": call_id, "type": "function",
            "function": {"name": "get_weather", "arguments": args}}  # fmt: skip
    return [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Lyon?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": "sunny-22C"},
    ]


def test_functionary_v3_2_takes_arguments_as_text_and_loads() -> None:
    """Failure 1: the template concatenates `arguments` to a string; a dict made loading
    fail. Both forms a client sends now render, and learning never raises."""
    t = real("meetkai-functionary-medium-v3.2")
    assert not t.caps.object_arguments and t.caps.writes_calls
    expected = '>>>get_weather\n{"city": "Lyon"}<|eot_id|>'
    assert expected in t.render(conversation(), True, tools=[WEATHER])
    as_text = conversation(arguments=json.dumps({"city": "Lyon"}))
    assert expected in t.render(as_text, True, tools=[WEATHER])
    learn_call_strategy(t, ["<|eot_id|>"])  # never raises
    check_plain_render(t)


@pytest.mark.parametrize("name", ["Apriel-1.6-15b-Thinker-fixed", "unsloth-Apriel-1.5"])
def test_apriel_takes_arguments_as_an_object_though_it_lists_tools_as_python(name: str) -> None:
    """Its tools are written as Python's repr (`'city'`); its calls' arguments as JSON."""
    t = real(name)
    assert t.caps.object_arguments
    prompt = t.render(conversation(arguments=json.dumps({"city": "Lyon"})), True, tools=[WEATHER])
    assert '"arguments": {"city": "Lyon"}' in prompt


def test_firefunction_v2_gets_functions_and_datetime() -> None:
    """Failure 2: `functions` and `datetime` are the renderer's, as llama.cpp gives them."""
    t = real("fireworks-ai-llama-3-firefunction-v2")
    plain = t.render([{"role": "user", "content": "Hi"}], True)
    assert "Today is " in plain and "Available functions as JSON spec:\n\nToday" in plain
    with_tools = t.render(conversation(), True, tools=[WEATHER])
    assert '"name": "get_weather"' in with_tools.split("Today is")[0]
    assert ' functools[{"name": "get_weather", "arguments": {"city": "Lyon"}}]' in with_tools


def test_mistral_small_gets_ids_of_nine_letters_and_digits_consistently() -> None:
    """Failure 3: an OpenAI id is rewritten to the 9 characters the template checks for, the
    same in the call and its result, and the same every turn (the prompt keeps its prefix)."""
    t = real("Mistral-Small-3.2-24B-Instruct-2506")
    assert t.caps.id_length == 9
    text = t.render(conversation(), True, tools=[WEATHER])
    short = fitted_id(LONG_ID, 9)
    assert len(short) == 9 and short.isalnum() and short == fitted_id(LONG_ID, 9)
    assert f"[CALL_ID]{short}[ARGS]" in text and f"[TOOL_RESULTS]{short}[TOOL_CONTENT]" in text
    assert fitted_id("abc123XYZ", 9) == "abc123XYZ"  # an id that fits stays


@pytest.mark.parametrize("name", ["MiniMax-M2", "openai-gpt-oss-120b"])
def test_tool_results_follow_calls_the_template_writes(name: str) -> None:
    """Failure 3: calls are not moved into text for a template that writes them, so its own
    check ("Message has tool role, but there was no previous assistant message with a tool
    call!") holds."""
    t = real(name)
    text = t.render(conversation(), True, tools=[WEATHER])
    assert "sunny-22C" in text and "get_weather" in text.split("Weather in Lyon?")[-1]
    assert "<tool_call>" not in text.split("Weather in Lyon?")[-1]  # not the generic format


def test_phi_3_5_keeps_every_tool_result() -> None:
    """Failure 3: Phi-3.5 writes no calls and drops `tool` messages: the calls go into the
    text in the generic format and each result into a user turn."""
    t = real("microsoft-Phi-3.5-mini-instruct")
    assert not t.caps.writes_calls and not t.caps.writes_tool_results
    messages = [*conversation(), {"role": "tool", "tool_call_id": "x", "content": "windy-9"}]
    text = t.render(messages, True)
    call = '<tool_call>{"name": "get_weather", "arguments": {"city": "Lyon"}}</tool_call>'
    assert f"<|assistant|>\n{call}<|end|>" in text
    results = "<tool_response>\nsunny-22C\n</tool_response>\n<tool_response>\nwindy-9\n"
    assert f"<|user|>\n{results}" in text


def test_gemma_2_takes_system_text_in_the_first_user_turn() -> None:
    """Failure 7: gemma-2 raises "System role not supported"; the system text (endmark's tool
    instructions too) goes into the first user turn, as llama.cpp merges it."""
    t = real("google-gemma-2-2b-it")
    assert not t.caps.system_role
    with pytest.raises(TemplateRenderError, match="System role not supported"):
        t.render_given(conversation()[:2], True)
    text = t.render(conversation(), True)
    assert text.startswith("<s><start_of_turn>user\nBe brief.\nWeather in Lyon?<end_of_turn>")
    assert "<start_of_turn>user\n<tool_response>\nsunny-22C\n</tool_response>" in text
    alone = t.render([{"role": "system", "content": "Only this."}], True)
    assert "<start_of_turn>user\nOnly this.<end_of_turn>" in alone


def test_fitting_leaves_what_a_template_takes_alone() -> None:
    anything = TemplateCaps(writes_calls=True)
    messages = conversation()
    fitted = fit_messages(messages, anything)
    assert fitted[2]["tool_calls"] == messages[2]["tool_calls"] and fitted[2]["content"] == ""
    assert fitted[:2] == messages[:2] and fitted[3] == messages[3]
    as_text = fit_messages(messages, TemplateCaps(writes_calls=True, object_arguments=False))
    assert as_text[2]["tool_calls"][0]["function"]["arguments"] == '{"city": "Lyon"}'


def test_a_template_that_cannot_render_a_plain_chat_stops_loading_with_its_message() -> None:
    broken = ChatTemplate("{{ raise_exception('no chat here') }}", "broken")
    with pytest.raises(TemplateRenderError, match="cannot render a plain conversation: no chat"):
        check_plain_render(broken)
    odd = ChatTemplate("{{ messages[0]['content'] + {} }}", "odd")  # a TypeError in Jinja
    with pytest.raises(TemplateRenderError, match="failed"):
        odd.render([{"role": "user", "content": "x"}], True)
    assert odd.caps == TemplateCaps(writes_tool_results=False)  # learned without raising


def test_a_probe_that_raises_falls_back_to_the_generic_format_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import endmark.calls as calls

    def broken(*_: Any) -> None:
        raise TypeError('can only concatenate str (not "dict") to str')

    for kind in calls.KINDS:
        monkeypatch.setattr(kind, "learn", classmethod(broken))
    with caplog.at_level("WARNING", logger="endmark"):
        assert learn_call_strategy(real("Qwen-Qwen2.5-7B-Instruct"), ["<|im_end|>"]) is None
    (record,) = [r for r in caplog.records if "tool-call probe" in r.getMessage()]
    assert 'can only concatenate str (not "dict") to str' in record.getMessage()
