"""The JSON call kinds (JSON in tags, bare JSON, a JSON array after a marker, and endmark's
generic format): learned from templates, parsed, and their grammars checked with llguidance
against real vocabularies: the bundled model's, and a Mistral-style test model whose call
marker is a special token not written in angle brackets. History goes back through templates."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from endmark.calls import (
    GENERIC,
    HERMES,
    LLAMA3,
    MAX_STRING,
    MISTRAL,
    BareJson,
    CallStrategy,
    JsonArray,
    JsonInTags,
    MalformedCall,
    closed,
    generic_system_prompt,
    learn_call_strategy,
    with_system_text,
)
from endmark.chat import BUILTIN_TEMPLATES, ChatTemplate
from endmark.constraints import Constraint, ConstraintCompiler, ConstraintSpec
from endmark.endings import EogSet
from endmark.tools import Tool, ToolRequest
from tests.gguf_factory import FAMILIES, build_gguf

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = Tool("get_weather", "The weather", CITY)
ADD = Tool("add", "Add", {"type": "object", "properties": {"a": {"type": "number"}}})
TOOLS = (WEATHER, ADD)


class Vocab:
    """An engine and a compiler of constraints over its vocabulary."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.eog = EogSet.from_vocab(engine.vocab)
        self.compiler = ConstraintCompiler(
            lambda: engine.lltokenizer(self.eog.ids()), engine.vocab.n_vocab
        )
        self.control = {engine.vocab.text(t): t for t in engine.vocab.control}

    def matcher(self, fmt: CallStrategy, request: ToolRequest, lazy: bool = False) -> Constraint:
        grammar = fmt.grammar(request, self.control, lazy)
        return self.compiler.matcher(self.compiler.compile(ConstraintSpec("lark", grammar, "t")))

    def accepts(self, matcher: Constraint, text: str) -> bool:
        """Whether `text` is a whole answer the grammar allows; a marker that is a special
        token is that token (and text after it gets no SentencePiece dummy-prefix space)."""
        tokens: list[int] = []
        markers = "|".join(re.escape(m) for m in sorted(self.control, key=len, reverse=True))
        for part in re.split(f"({markers})", text):
            if part in self.control:
                tokens.append(self.control[part])
            elif part:
                tokens += self.compiler.tokenizer.tokenize_str(part)
        for token in tokens:
            if not matcher.mask()[token]:
                return False
            matcher.consume(token)
        return matcher.accepting


@pytest.fixture(scope="module")
def bundled(engine: Any) -> Vocab:
    return Vocab(engine)


@pytest.fixture(scope="module")
def mistral(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vocab]:
    from endmark.engine.llamacpp import LlamaCppEngine

    path = build_gguf(tmp_path_factory.mktemp("m") / "m.gguf", FAMILIES["mistral_tools"])
    engine = LlamaCppEngine(str(path), n_ctx=256, n_threads=1, n_seq_max=1)
    yield Vocab(engine)
    engine.close()


def call(name: str, args: dict[str, Any], key: str = "arguments") -> str:
    return json.dumps({"name": name, key: args})  # the separators the grammar asks for


def test_a_forced_call_must_name_a_tool_and_match_its_parameters(bundled: Vocab) -> None:
    request = ToolRequest(TOOLS, "required")
    good = "<tool_call>" + call("get_weather", {"city": "Paris"}) + "</tool_call>"
    assert bundled.accepts(bundled.matcher(GENERIC, request), good)
    for bad in (
        "Sure! " + good,
        "<tool_call>" + call("get_time", {"zone": "UTC"}) + "</tool_call>",
        "<tool_call>" + call("get_weather", {"town": "Paris"}) + "</tool_call>",
        "<tool_call>" + call("get_weather", {}) + "</tool_call>",
    ):
        assert not bundled.accepts(bundled.matcher(GENERIC, request), bad), bad


def test_a_named_tool_and_one_call_only(bundled: Vocab) -> None:
    one = "<tool_call>" + call("add", {"a": 1}) + "</tool_call>"
    named = ToolRequest(TOOLS, "add")
    assert bundled.accepts(bundled.matcher(HERMES, named), one)
    assert not bundled.accepts(bundled.matcher(HERMES, named), one + one)  # as OpenAI's
    weather = "<tool_call>" + call("get_weather", {"city": "Rome"}) + "</tool_call>"
    assert not bundled.accepts(bundled.matcher(HERMES, named), weather)
    assert bundled.accepts(bundled.matcher(HERMES, ToolRequest(TOOLS, "required")), one + one)
    single = ToolRequest(TOOLS, "required", parallel=False)
    assert not bundled.accepts(bundled.matcher(HERMES, single), one + one)


def test_a_lazy_grammar_starts_after_the_marker_the_model_wrote(bundled: Vocab) -> None:
    lazy = bundled.matcher(HERMES, ToolRequest(TOOLS, "auto"), lazy=True)
    assert bundled.accepts(lazy, call("add", {"a": 2}) + "</tool_call>")


def test_llama3_calls_are_bare_json_with_parameters(bundled: Vocab) -> None:
    grammar = LLAMA3.grammar(ToolRequest(TOOLS, "required"), bundled.control)
    assert "python_tag" not in grammar.split("call_json:")[0]  # written as the template does
    m = bundled.matcher(LLAMA3, ToolRequest(TOOLS, "required"))
    assert bundled.accepts(m, call("add", {"a": 1}, key="parameters"))


def test_a_special_token_without_angle_brackets_is_named_by_id(mistral: Vocab) -> None:
    grammar = MISTRAL.grammar(ToolRequest(TOOLS, "required"), mistral.control)
    assert f"<[{mistral.control['[TOOL_CALLS]']}]>" in grammar
    answer = "[TOOL_CALLS]" + json.dumps([{"name": "add", "arguments": {"a": 1}}])
    assert mistral.accepts(mistral.matcher(MISTRAL, ToolRequest(TOOLS, "required")), answer)
    m = mistral.matcher(MISTRAL, ToolRequest(TOOLS, "required"))  # not spelled out as text
    assert not m.mask()[mistral.engine.tokenize("[", False, False)[0]]


def test_closed_schemas_refuse_made_up_keys_and_bound_free_strings() -> None:
    schema = closed(WEATHER.parameters)
    assert schema["additionalProperties"] is False
    assert schema["properties"]["city"]["maxLength"] == MAX_STRING
    enum = closed({"type": "string", "enum": ["a"]})
    assert "maxLength" not in enum
    assert closed({"type": "object", "additionalProperties": True, "properties": {}})[
        "additionalProperties"
    ]


def test_history_calls_are_written_in_the_format_and_tools_described() -> None:
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]  # fmt: skip
    assert GENERIC.history(messages) == messages  # the template's render fits them
    chatml = ChatTemplate(BUILTIN_TEMPLATES["chatml"], "chatml")  # it cannot write calls
    written = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    assert f"assistant\n{written}<|im_end|>" in chatml.render(messages, False)
    prompt = generic_system_prompt(ToolRequest(TOOLS))
    assert "get_weather" in prompt and "<tool_call>" in prompt
    with_system = with_system_text([{"role": "system", "content": "Be brief."}], "Tools.")
    assert with_system == [{"role": "system", "content": "Be brief.\n\nTools."}]
    assert with_system_text([], "Tools.") == [{"role": "system", "content": "Tools."}]


def test_a_lazy_grammar_reads_what_was_written_without_a_dummy_prefix(mistral: Vocab) -> None:
    """SentencePiece tokenizes text alone with a leading space; the call the model has begun
    must reach the grammar as written."""
    lazy = MISTRAL.grammar(ToolRequest(TOOLS, "auto"), mistral.control, lazy=True)
    grammar = mistral.compiler.compile(ConstraintSpec("lark", lazy, "tools"))
    matcher = mistral.compiler.matcher(grammar, '[{"name": "add", "argu')
    assert not matcher.accepting
    assert mistral.accepts(matcher, 'ments": {"a": 1}}]')


def test_each_json_kind_is_learned_from_its_template() -> None:
    """The one JSON analysis (the text around a probe call's JSON) decides the kind: a known
    family keeps its name, markers no list knows are learned as they are."""
    cases = {
        "hermes": (["<|im_end|>"], JsonInTags, ("hermes", "<tool_call>", "</tool_call>")),
        "unknown_tools": (["<|over_to_you|>"], JsonInTags,
                          ("learned", "<|fn_call|>", "<|/fn_call|>")),
        "llama3_tools": (["<|eot_id|>"], BareJson, ("llama3", "<|python_tag|>", "")),
        "mistral_tools": (["</s>"], JsonArray, ("mistral", "[TOOL_CALLS]", "")),
    }  # fmt: skip
    for family, (ends, kind, (name, start, end)) in cases.items():
        fmt = learn_call_strategy(ChatTemplate(FAMILIES[family].template, family), ends)
        assert type(fmt) is kind and (fmt.name, fmt.start, fmt.end) == (name, start, end)
    llama3 = learn_call_strategy(ChatTemplate(FAMILIES["llama3_tools"].template, "l"), [])
    mistral = learn_call_strategy(ChatTemplate(FAMILIES["mistral_tools"].template, "m"), [])
    assert isinstance(llama3, BareJson) and llama3.args_key == "parameters"
    assert isinstance(mistral, JsonArray) and mistral.short_ids
    assert learn_call_strategy(ChatTemplate(BUILTIN_TEMPLATES["chatml"], "chatml"), []) is None


def test_numbers_come_out_as_the_model_wrote_them() -> None:
    """Read as a float, 1e999 would be written back as `Infinity`, which is not JSON."""
    body = '{"name": "add", "arguments": {"a": 1e999, "b": [0.10, -2], "c": "x"}}'
    (call,) = HERMES.parse(body)
    assert call.arguments == '{"a": 1e999, "b": [0.10, -2], "c": "x"}'
    assert json.loads(call.arguments)["b"] == [0.1, -2]
    with pytest.raises(MalformedCall, match="no name"):
        HERMES.parse('{"name": 5, "arguments": {}}')
    (first, second) = MISTRAL.parse(json.dumps([{"name": "a", "arguments": {}}] * 2))
    assert len(first.id) == 9 and first.id != second.id


def test_only_bare_kinds_open_a_call_without_a_marker() -> None:
    assert LLAMA3.opens_bare('  {"name"') and not LLAMA3.opens_bare("Hello")
    assert not HERMES.opens_bare('{"name"') and not MISTRAL.opens_bare("[{")
    assert JsonArray("learned", "").opens_bare("[{")


def test_a_history_round_trips_through_the_templates() -> None:
    """A call parsed from what the model wrote goes back into the history and the template
    writes it as the model did: the same JSON, between the same markers."""
    body = json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})
    (call,) = HERMES.parse(body)
    turn = {"role": "assistant", "content": "", "tool_calls": [
        {"id": call.id, "type": "function",
         "function": {"name": call.name, "arguments": json.loads(call.arguments)}}]}  # fmt: skip
    messages = [{"role": "user", "content": "Weather?"}, turn]
    hermes = ChatTemplate(FAMILIES["hermes"].template, "hermes")
    history, variables = HERMES.prompt_inputs(messages, ToolRequest(TOOLS))
    assert "tools" in variables and history == messages
    assert f"<tool_call>\n{body}\n</tool_call>" in hermes.render(history, False, **variables)
    history, variables = GENERIC.prompt_inputs(messages, ToolRequest(TOOLS))
    assert variables == {} and history[0]["role"] == "system"
    assert history[-1] == turn  # written by the template: its own format, or the generic one
    chatml = ChatTemplate(BUILTIN_TEMPLATES["chatml"], "chatml")
    assert f"<tool_call>{body}</tool_call>" in chatml.render(history, False)


def test_a_pretty_printed_format_takes_its_templates_indents_but_no_runaway_blanks() -> None:
    """Command R+ writes its calls with `tojson(indent=4)`: its grammar takes a line break and
    an indent between tokens, where a compact format's takes none."""
    from tests.scripted_engine import ScriptedEngine

    vocab = Vocab(ScriptedEngine())
    pretty = JsonInTags("learned", "<tool_call>", "</tool_call>", pretty=True)
    forced = ToolRequest(TOOLS, "required")
    text = ('<tool_call>{\n    "name": "get_weather",\n    "arguments": {\n        "city": '
            '"Paris"\n    }\n}</tool_call>')  # fmt: skip
    assert vocab.accepts(vocab.matcher(pretty, forced), text)
    runaway = text.replace("{\n", "{\n" + " " * 40, 1)
    assert not vocab.accepts(vocab.matcher(pretty, forced), runaway)
    compact = JsonInTags("learned", "<tool_call>", "</tool_call>")
    assert not vocab.accepts(vocab.matcher(compact, forced), text)


def test_minimax_m1_writes_a_turns_calls_one_a_line_in_one_section() -> None:
    """Learned from its template: parsed whole, and closed to calls when cut anywhere."""
    from endmark.channels import ChannelSplitter
    from tests.gguf_factory import TEMPLATES

    source = (TEMPLATES / "MiniMax-M1.jinja").read_text()
    fmt = learn_call_strategy(ChatTemplate(source, "MiniMax-M1"), ())
    assert isinstance(fmt, JsonInTags) and fmt.lines and fmt.start == "<tool_calls>"
    text = ('<tool_calls>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
            '{"name": "add", "arguments": {"a": 2}}\n</tool_calls>')  # fmt: skip
    for cut in range(len(fmt.start), len(text) + 1):
        splitter = ChannelSplitter(fmt, tools=TOOLS, callable=TOOLS)
        pieces = splitter.push(text[:cut]) + splitter.finish(cut=True)
        calls = [(p.call.name, json.loads(p.call.arguments)) for p in pieces if p.call]
        assert calls and calls[0][0] == "get_weather", text[:cut]
    assert calls == [("get_weather", {"city": "Paris"}), ("add", {"a": 2})]
