from __future__ import annotations

import pytest

from endmark.constraints import ConstraintCompiler, ConstraintFailure, ConstraintSpec
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
