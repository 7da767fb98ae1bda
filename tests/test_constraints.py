from __future__ import annotations

from typing import Any

import pytest

from endmark.constraints import (
    ConstraintCompiler,
    ConstraintFailure,
    ConstraintSpec,
    closed_objects,
    endless_ref,
    json_depth,
)
from endmark.endings import EogSet
from endmark.invalid import InvalidRequest


@pytest.fixture(scope="module")
def compiler(engine) -> ConstraintCompiler:  # type: ignore[no-untyped-def]
    eog = EogSet.from_vocab(engine.vocab)
    return ConstraintCompiler(lambda: engine.lltokenizer(eog.ids()), engine.vocab.n_vocab)


def test_end_tokens_are_allowed_only_where_the_grammar_accepts(compiler, engine) -> None:  # type: ignore[no-untyped-def]
    c = compiler.matcher(compiler.compile(ConstraintSpec("grammar", 'root ::= "{}"', "grammar")))
    mask = c.mask()
    assert mask.dtype == bool and mask.shape == (engine.vocab.n_vocab,)
    assert not mask[2] and not mask[0]
    (brace,) = engine.tokenize("{}", False, False)
    assert mask[brace] and mask.sum() == 1
    c.consume(brace)
    assert c.accepting and c.complete


def test_a_grammar_that_may_go_on_is_accepting_but_not_complete(compiler, engine) -> None:  # type: ignore[no-untyped-def]
    g = compiler.compile(ConstraintSpec("grammar", 'root ::= "a" "b"*', "grammar"))
    c = compiler.matcher(g)
    c.consume(engine.tokenize("a", False, False)[0])
    assert c.accepting and not c.complete
    assert c.mask()[2]  # <|im_end|> may end it here


def test_json_schema_and_json_object_compile(compiler) -> None:  # type: ignore[no-untyped-def]
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert compiler.compile(ConstraintSpec("json_schema", schema, "json_schema"))
    assert compiler.compile(ConstraintSpec("json_object", None, "response_format"))


@pytest.mark.parametrize(
    "spec,message",
    [
        (ConstraintSpec("grammar", 'root ::= "a', "grammar"), "grammar: Failed to convert"),
        (ConstraintSpec("grammar", "root ::= missing", "grammar"), "missing"),
        (ConstraintSpec("grammar", "", "grammar"), "non-empty"),
        (ConstraintSpec("json_schema", {"type": "nonsense"}, "json_schema"), "nonsense"),
        (ConstraintSpec("json_schema", {"if": {}}, "json_schema"), "Unimplemented keys"),
        (ConstraintSpec("json_schema", [1], "json_schema"), "must be a JSON object"),
    ],
)
def test_compile_errors_name_the_field_and_quote_the_compiler(compiler, spec, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest, match=message) as info:
        compiler.compile(spec)
    assert info.value.param == spec.field
    assert str(info.value).startswith(spec.field + ":")


def test_a_rejected_token_is_a_failure_not_a_stop(compiler, engine) -> None:  # type: ignore[no-untyped-def]
    c = compiler.matcher(compiler.compile(ConstraintSpec("grammar", 'root ::= "yes"', "g")))
    with pytest.raises(ConstraintFailure):
        c.consume(engine.tokenize(" no", False, False)[0])


def test_an_object_takes_no_unlisted_keys_unless_its_schema_says_so(compiler, engine) -> None:  # type: ignore[no-untyped-def]
    (comma,) = engine.tokenize(",", False, False)
    (close,) = engine.tokenize("}", False, False)
    listed = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    for schema, more_keys in ((listed, False), ({**listed, "additionalProperties": True}, True)):
        grammar = compiler.compile(ConstraintSpec("json_schema", schema, "json_schema"))
        mask = compiler.matcher(grammar, written='{"a": 1').mask()
        assert mask[close] and mask[comma] == more_keys


def nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def test_closing_objects_walks_each_level_once() -> None:
    closed = closed_objects(nested(300))  # walked twice per level, it would take 2^300 steps
    for _ in range(300):
        assert closed["additionalProperties"] is False
        closed = closed["properties"]["a"]
    assert closed == {"type": "string"}


def test_a_schema_nested_too_deeply_is_refused_before_any_recursion(compiler) -> None:  # type: ignore[no-untyped-def]
    assert json_depth(nested(2)) == 5 and json_depth(1) == 0 and json_depth([[]]) == 2
    assert compiler.compile(ConstraintSpec("json_schema", nested(40), "response_format"))
    with pytest.raises(InvalidRequest, match="nested 401 levels deep") as info:
        compiler.compile(ConstraintSpec("json_schema", nested(200), "response_format"))
    assert info.value.param == "response_format"


DEFS_A = "#/$defs/a"
CYCLES = [
    {"$ref": DEFS_A, "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": DEFS_A}}},
    {"$ref": "#"},
    {"$ref": DEFS_A, "$defs": {"a": {"allOf": [{"$ref": DEFS_A}]}}},
    {"type": "object", "properties": {"x": {"$ref": "#"}}, "required": ["x"]},
    {"type": "object", "properties": {"x": {"$ref": DEFS_A}}, "$defs": {"a": {"$ref": DEFS_A}}},
    {"type": "array", "minItems": 1, "items": {"$ref": "#"}},
]
RECURSIVE = [  # each has a way out: a finite value
    {"$ref": DEFS_A, "$defs": {"a": {"anyOf": [{"$ref": DEFS_A}, {"type": "string"}]}}},
    {"type": "object", "properties": {"x": {"$ref": "#"}}},
    {"type": "array", "items": {"$ref": "#"}},
    {"$ref": "#/$defs/node", "$defs": {"node": {"type": "object", "properties": {
        "v": {"type": "integer"}, "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}},
        "required": ["v", "next"]}}},
    {"enum": [{"$ref": "#"}]},  # a value, not a schema
    {"$ref": "https://example.com/schema"},  # not ours to follow: llguidance says what it thinks
]  # fmt: skip


@pytest.mark.parametrize("schema", CYCLES)
def test_a_ref_cycle_no_value_can_end_is_refused_by_name(compiler, schema) -> None:  # type: ignore[no-untyped-def]
    assert endless_ref(schema) is not None
    with pytest.raises(InvalidRequest, match=r"json_schema: the schema has a \$ref cycle"):
        compiler.compile(ConstraintSpec("json_schema", schema, "json_schema"))


@pytest.mark.parametrize("schema", RECURSIVE)
def test_a_recursive_schema_with_a_way_out_is_no_cycle(schema) -> None:  # type: ignore[no-untyped-def]
    assert endless_ref(schema) is None


def test_a_grammar_that_allows_nothing_is_refused_when_prepared(compiler) -> None:  # type: ignore[no-untyped-def]
    spec = ConstraintSpec("grammar", 'root ::= a\na ::= a "x"', "grammar")  # never starts
    assert compiler.compile(spec)  # llguidance takes it, and then finds no first token
    with pytest.raises(InvalidRequest, match="grammar: the grammar cannot even start") as info:
        compiler.constraint(spec)
    assert info.value.param == "grammar" and "<" not in str(info.value)  # no parser state


def test_a_constraint_over_the_limits_while_generating_fails_cleanly(compiler, engine) -> None:  # type: ignore[no-untyped-def]
    many = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(800)}}
    c = compiler.constraint(ConstraintSpec("json_schema", many, "text.format"))
    with pytest.raises(ConstraintFailure) as info:
        c.consume(engine.tokenize("{", False, False)[0])
        c.mask()
    message = str(info.value)
    assert message.startswith("text.format: the constraint failed: ")
    assert "within the server's limits" in message and info.value.param == "text.format"
    assert "<" not in message and "Parser" not in message.split("(")[0]


def test_copies_of_a_matcher_go_their_own_ways(compiler, engine) -> None:  # type: ignore[no-untyped-def]
    base = compiler.constraint(ConstraintSpec("grammar", 'root ::= "yes" | "no"', "grammar"))
    (yes,) = engine.tokenize("yes", False, False)
    (no,) = engine.tokenize("no", False, False)
    a, b = base.copy(), base.copy()
    a.consume(yes)
    assert a.complete and not b.complete and b.mask()[no] and base.mask()[yes]
    assert compiler.resume(base, "yes").complete and not base.complete
