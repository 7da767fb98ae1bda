"""Tagged arguments (Qwen3-Coder, GLM): learned from the templates, calls parsed with their
values typed by the tool's schema (whole and cut in pieces), the grammar checked with
llguidance on a vocabulary whose call markers are control tokens, and a history that goes
back through Qwen3-Coder's own template as the model wrote it."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from endmark.calls import QWEN3_CODER, CallStrategy, TaggedArgs, ToolCall, learn_call_strategy
from endmark.calls.json_body import json_text
from endmark.calls.tagged_args import takes_text, typed_value
from endmark.channels import ChannelSplitter
from endmark.chat import ChatTemplate
from endmark.tools import Tool, ToolRequest
from tests.gguf_factory import FAMILIES, build_gguf
from tests.test_calls_json import Vocab

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer", "minimum": 1},
        "metric": {"type": "boolean"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "hours": {"type": "array", "items": {"type": "number"}},
        "where": {"type": "object", "properties": {"lat": {"type": "number"}}},
    },
    "required": ["city", "days"],
}
FORECAST = Tool("forecast", "The forecast", SCHEMA)
TIME = Tool("get_time", "The time", {"type": "object", "properties": {"zone": {"type": "string"}},
                                      "required": ["zone"]})  # fmt: skip
TOOLS = (FORECAST, TIME)
ARGS = {"city": "Paris </tool_call> <b>", "days": 3, "metric": True, "unit": "celsius",
        "hours": [6, 12.5], "where": {"lat": 48.85}}  # fmt: skip
# GLM 4.5/4.6's way, condensed: the name right after the marker, keys and values in tags
GLM = (
    "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content or '' }}"
    "{% for c in m.tool_calls or [] %}<tool_call>{{ c.function.name }}\n"
    "{% for k, v in c.function.arguments.items() %}<arg_key>{{ k }}</arg_key>\n"
    "<arg_value>{{ v if v is string else v | tojson }}</arg_value>\n{% endfor %}</tool_call>"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    "{# tools #}"
)
# MiniMax M2's way, condensed: one wrapper around every call of the turn
WRAPPED = (
    "{% for m in messages %}<|{{ m.role }}|>{% if m.tool_calls %}<calls>\n"
    '{% for c in m.tool_calls %}<invoke name="{{ c.function.name }}">\n'
    '{% for k, v in c.function.arguments.items() %}<parameter name="{{ k }}">{{ v }}'
    "</parameter>\n{% endfor %}</invoke>\n{% endfor %}</calls>{% endif %}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}{# tools #}"
)
QWEN = ChatTemplate(FAMILIES["qwen3_coder"].template, "Qwen3-Coder")


def turn(args: dict[str, Any], name: str = "forecast") -> dict[str, Any]:
    call = {"id": "c1", "type": "function", "function": {"name": name, "arguments": args}}
    return {"role": "assistant", "content": "", "tool_calls": [call]}


def written_by_template(args: dict[str, Any]) -> str:
    """The assistant turn Qwen3-Coder's template writes for a call of `forecast`."""
    user = [{"role": "user", "content": "Weather?"}]
    tools = [t.as_openai() for t in TOOLS]
    prompt = QWEN.render(user, True, tools=tools)
    full = QWEN.render([*user, turn(args)], False, tools=tools)
    assert full.startswith(prompt)
    return full[len(prompt) :].removesuffix("<|im_end|>\n")


def test_the_tags_are_learned_from_the_templates() -> None:
    assert learn_call_strategy(QWEN, ["<|im_end|>"]) == QWEN3_CODER
    glm = learn_call_strategy(ChatTemplate(GLM, "glm"), [])
    assert isinstance(glm, TaggedArgs) and glm.name == "tagged"
    assert glm.fields() == ("<tool_call>", "</tool_call>", "", "", "\n<arg_key>",
                            "</arg_key>\n<arg_value>", "</arg_value>", "\n")  # fmt: skip
    wrapped = learn_call_strategy(ChatTemplate(WRAPPED, "wrapped"), ["<|end|>"])
    assert isinstance(wrapped, TaggedArgs) and wrapped.name == "wrapped"
    assert (wrapped.start, wrapped.end) == ("<calls>", "</calls>")
    assert wrapped.again == '\n</invoke>\n<invoke name="'


def test_values_are_typed_by_the_schema() -> None:
    assert takes_text({"type": "string"}) and takes_text({}) and takes_text(None)
    assert takes_text({"type": ["string", "null"]}) and takes_text({"enum": ["a", "b"]})
    assert not takes_text({"type": "integer"}) and not takes_text({"enum": [1, 2]})
    assert typed_value(" 007 ", {"type": "string"}) == " 007 "
    assert json_text(typed_value("1e999", {"type": "number"})) == "1e999"  # as written
    assert typed_value("True", {"type": "boolean"}) is True  # Jinja's `|string` of true
    assert json_text(typed_value('{"a": [1]}', {"type": "object"})) == '{"a": [1]}'
    assert typed_value("not json", {"type": "number"}) == "not json"  # for the schema to judge


def split(text: str, chunks: list[str]) -> tuple[str, list[tuple[str, Any]]]:
    splitter = ChannelSplitter(QWEN3_CODER, tools=TOOLS)
    pieces = [p for chunk in chunks for p in splitter.push(chunk)] + splitter.finish()
    content = "".join(p.text for p in pieces if p.channel == "content")
    calls = [(p.call.name, json.loads(p.call.arguments)) for p in pieces if p.call is not None]
    return content, calls


def test_a_call_the_template_writes_parses_back_whole_and_in_pieces() -> None:
    """The template writes strings as they are (a close marker inside one too), numbers and
    lists as JSON, and a boolean as Python's `True`: the parsed arguments are the call's."""
    text = "Let me look.\n" + written_by_template(ARGS)
    assert "<parameter=days>\n3\n</parameter>" in text and "\nTrue\n" in text
    expected = ("Let me look.\n", [("forecast", ARGS)])
    assert split(text, [text]) == expected
    assert split(text, list(text)) == expected
    rng = random.Random(0)
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(text)), k=8))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert split(text, chunks) == expected
    jsonschema.validate(expected[1][0][1], SCHEMA)


def test_two_calls_and_one_cut_short() -> None:
    one = QWEN3_CODER.written("get_time", {"zone": "UTC"})
    content, calls = split(one + "\n" + one, [one + "\n" + one])
    assert content.strip() == "" and calls == [("get_time", {"zone": "UTC"})] * 2
    splitter = ChannelSplitter(QWEN3_CODER, tools=TOOLS)
    splitter.push("<tool_call>\n<function=get_time>\n<parameter=zone>\nUTC</tool_call>")
    assert splitter.in_call  # a close marker inside a value is the value's text
    (piece,) = splitter.finish(cut=True)  # cut there: closed, its value as written
    assert piece.call is not None and json.loads(piece.call.arguments) == {
        "zone": "UTC</tool_call>"}  # fmt: skip
    assert splitter.closed_by_endmark and not splitter.cut_call


@pytest.fixture(scope="module")
def vocab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vocab]:
    from endmark.engine.llamacpp import LlamaCppEngine

    path = build_gguf(tmp_path_factory.mktemp("q") / "q.gguf", FAMILIES["qwen3_coder"])
    engine = LlamaCppEngine(str(path), n_ctx=256, n_threads=1, n_seq_max=1)
    yield Vocab(engine)
    engine.close()


def test_the_grammar_takes_valid_calls_only(vocab: Vocab) -> None:
    forced = ToolRequest(TOOLS, "required")
    good = QWEN3_CODER.written("forecast", {"city": "Rome", "days": 2, "unit": "fahrenheit"})
    assert vocab.accepts(vocab.matcher(QWEN3_CODER, forced), good)
    assert vocab.accepts(vocab.matcher(QWEN3_CODER, forced), good + "\n" + good)
    for bad in (
        "Sure. " + good,
        QWEN3_CODER.written("forecast", {"city": "Rome"}),  # `days` is required
        QWEN3_CODER.written("forecast", {"city": "Rome", "days": "two"}),
        QWEN3_CODER.written("forecast", {"city": "Rome", "days": 0}),  # minimum 1
        QWEN3_CODER.written("forecast", {"city": "Rome", "days": 2, "unit": "kelvin"}),
        QWEN3_CODER.written("forecast", {"city": "Rome", "days": 2, "wind": "yes"}),
        QWEN3_CODER.written("get_weather", {"city": "Rome"}),
        good.replace("\n</parameter>", "\n</parameter>\n</parameter>", 1),
    ):
        assert not vocab.accepts(vocab.matcher(QWEN3_CODER, forced), bad), bad
    named = ToolRequest(TOOLS, "get_time")
    one = QWEN3_CODER.written("get_time", {"zone": "UTC"})
    assert vocab.accepts(vocab.matcher(QWEN3_CODER, named), one)
    assert not vocab.accepts(vocab.matcher(QWEN3_CODER, named), one + one)
    assert not vocab.accepts(vocab.matcher(QWEN3_CODER, named), good)


def test_a_lazy_grammar_starts_after_the_marker(vocab: Vocab) -> None:
    lazy = vocab.matcher(QWEN3_CODER, ToolRequest(TOOLS, "auto"), lazy=True)
    one = QWEN3_CODER.written("get_time", {"zone": "Europe/Paris"})
    assert vocab.accepts(lazy, one.removeprefix("<tool_call>"))
    assert not vocab.accepts(vocab.matcher(QWEN3_CODER, ToolRequest(TOOLS, "auto"), True), one)


def test_the_history_goes_back_through_the_template_as_written() -> None:
    """Arguments sent as a JSON text (as OpenAI clients send them) are read into the object
    the template writes key by key."""
    as_text = turn({})
    as_text["tool_calls"][0]["function"]["arguments"] = json.dumps(ARGS)
    messages = [{"role": "user", "content": "Weather?"}, as_text]
    history, variables = QWEN3_CODER.prompt_inputs(messages, ToolRequest(TOOLS))
    assert history[1]["tool_calls"][0]["function"]["arguments"] == ARGS
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == json.dumps(ARGS)
    rendered = QWEN.render(history, False, **variables)
    assert written_by_template(ARGS) in rendered and "<name>forecast</name>" in rendered


def test_thinking_then_a_tagged_call_as_qwen3_5_writes_them() -> None:
    """Qwen3.5 opens `<think>` in its prompt and calls with tagged arguments after it."""
    from endmark.calls import ThinkFormat

    one = QWEN3_CODER.written("get_time", {"zone": "UTC"})
    text = "The user wants the time.\n</think>\n\n" + one
    for chunks in ([text], list(text)):
        splitter = ChannelSplitter(QWEN3_CODER, ThinkFormat(open=True), TOOLS)
        pieces = [p for chunk in chunks for p in splitter.push(chunk)] + splitter.finish()
        assert "".join(p.text for p in pieces if p.channel == "reasoning").startswith("The user")
        assert "".join(p.text for p in pieces if p.channel == "content").strip() == ""
        assert [(c.name, json.loads(c.arguments)) for c in splitter.calls] == [
            ("get_time", {"zone": "UTC"})
        ]


@pytest.mark.parametrize("template", [QWEN, ChatTemplate(GLM, "glm")], ids=["qwen3_coder", "glm"])
def test_a_call_cut_anywhere_comes_back_closed(template: ChatTemplate) -> None:
    """Cut after the open marker, in the name, in a key's tag, in a value (a close marker
    inside it too), in a JSON value: one call, of the forecast, its arguments typed JSON;
    the required ones the cut never reached are named in its problem."""
    fmt = learn_call_strategy(template, ["<|im_end|>", "<|user|>"])
    assert isinstance(fmt, TaggedArgs)
    call, splitter = closed_at_every_cut(fmt, fmt.written("forecast", ARGS))
    assert json.loads(call.arguments) == ARGS and not call.problem
    assert not splitter.closed_by_endmark


def closed_at_every_cut(fmt: CallStrategy, text: str) -> tuple[ToolCall, ChannelSplitter]:
    """`text` (a call of the forecast) cut at every character after the start marker: one
    call each time, of the forecast, whose missing required arguments its problem names.
    The call and the splitter of the last cut (the whole text)."""
    for cut in range(len(fmt.start), len(text) + 1):
        splitter = ChannelSplitter(fmt, tools=TOOLS, callable=TOOLS[:1])
        pieces = splitter.push(text[:cut]) + splitter.finish(cut=True)
        (call,) = [p.call for p in pieces if p.call is not None]
        assert call.name == "forecast" and not any(p.text for p in pieces), text[:cut]
        args = json.loads(call.arguments)
        for key in SCHEMA["required"]:
            assert key in args or repr(key) in call.problem, (text[:cut], call.problem)
    return call, splitter


def test_a_value_runs_to_its_whole_close_as_the_grammar_reads_it() -> None:
    """Qwen3.5 on SmolLM2 (issue 24) wrote `France</parameter>`, without the newline its
    close begins with: the grammar read on in the value, the splitter took the call's end
    marker after it as the end of the call, and the parse's error was a 500."""
    body = "\n<function=forecast>\n<parameter=city>\nParis, France</parameter>\n</function>\n"
    assert QWEN3_CODER.inside_value(body)
    assert not QWEN3_CODER.inside_value(body.replace("France</", "France\n</"))
    splitter = ChannelSplitter(QWEN3_CODER, tools=TOOLS)
    pieces = splitter.push("<tool_call>" + body + "</tool_call>\n") + splitter.finish(cut=True)
    (call,) = [p.call for p in pieces if p.call is not None]  # closed, not an error
    assert json.loads(call.arguments)["city"].startswith("Paris, France</parameter>")


def test_a_value_that_holds_the_next_call_s_tags_is_text_at_the_cut() -> None:
    """DeepSeek V4 on SmolLM2 (issue 24) wrote `</invoke>` and a new `<invoke` inside a
    value: cut after them, the value is closed, as the grammar reads it, not a second call."""
    fmt = TaggedArgs("wrapped", "<calls>", "</calls>", '\n<invoke name="', '">',
                     '\n<parameter name="', '">', "</parameter>", "\n</invoke>\n",
                     again='\n</invoke>\n<invoke name="')  # fmt: skip
    head = '<calls>\n<invoke name="forecast">\n<parameter name="city">'
    text = head + 'Paris\n</invoke>\n<invoke name="forecast">\n<parameter name="ci'
    splitter = ChannelSplitter(fmt, tools=TOOLS, callable=TOOLS[:1])
    pieces = splitter.push(text) + splitter.finish(cut=True)
    (call,) = [p.call for p in pieces if p.call is not None]
    assert json.loads(call.arguments)["city"].startswith("Paris\n</invoke>")
