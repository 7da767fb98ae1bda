"""The Jinja templates run in: llama.cpp's variables and leniency, in the sandbox."""

from __future__ import annotations

from datetime import datetime

import pytest

from endmark.chat import ChatTemplate, TemplateRefused, TemplateRenderError

HI = [{"role": "user", "content": "Hi"}]


def render(source: str, **extra: object) -> str:
    return ChatTemplate(source, "t").render_given(HI, True, **extra)


def test_the_renderer_variables_are_llama_cpps() -> None:
    today = datetime.now()
    assert render("{{ datetime }}|{{ date_string }}") == (f"{today:%b %d %Y}|{today:%d %b %Y}")
    assert render("{{ enable_thinking }}|{{ add_generation_prompt }}") == "True|True"
    assert render("{{ strftime_now('%Y') }}") == str(today.year)
    assert render("[{{ functions }}]") == "[]"  # no tools: empty, as firefunction needs
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert '"name": "f"' in render("{{ functions }}", tools=tools)
    assert render("{{ tools is defined }}", tools=[]) == "False"  # none offered, none given
    assert render("{{ enable_thinking }}", enable_thinking=False) == "False"  # a request's own


def test_undefined_is_empty_as_in_llama_cpp() -> None:
    assert render("{{ 'a' + nothing + 'b' }}|{{ nothing.at.all }}|") == "ab||"
    assert render("{% for x in nothing %}x{% endfor %}ok") == "ok"


def test_lists_take_append_and_pop_and_generation_blocks_render() -> None:
    source = (
        "{% set q = [] %}{% set _ = q.append(1) %}{% set _ = q.append(2) %}{{ q.pop(0) }}{{ q }}"
    )
    assert render(source) == "1[2]"
    assert render("{% generation %}said{% endgeneration %}") == "said"


def test_python_internals_stay_out() -> None:
    with pytest.raises(TemplateRefused):
        ChatTemplate("{{ messages.__class__ }}", "t")
    with pytest.raises(TemplateRenderError, match="refused"):
        render("{{ {}.update({'a': 1}) }}")
