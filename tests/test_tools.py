"""What a request offers: its tools, and how it may use them."""

from __future__ import annotations

from endmark.tools import MAX_CALLS, Tool, ToolRequest

TOOLS = (Tool("get_weather"), Tool("add"))


def test_a_forced_choice_and_the_tools_it_leaves_callable() -> None:
    assert not ToolRequest(TOOLS).forced and not ToolRequest(TOOLS, "none").forced
    assert ToolRequest(TOOLS, "required").forced and ToolRequest(TOOLS, "add").forced
    assert ToolRequest(TOOLS, "required").callable == TOOLS
    assert [t.name for t in ToolRequest(TOOLS, "add").callable] == ["add"]


def test_calls_a_turn_may_make() -> None:
    assert ToolRequest(TOOLS, "required").max_calls == MAX_CALLS
    assert ToolRequest(TOOLS, "add").max_calls == 1  # as OpenAI's forced function
    assert ToolRequest(TOOLS, "auto", parallel=False).max_calls == 1


def test_tools_take_the_shape_templates_expect() -> None:
    assert Tool("f", "Does f").as_openai() == {
        "type": "function",
        "function": {"name": "f", "description": "Does f", "parameters": {"type": "object"}},
    }
