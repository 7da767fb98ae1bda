"""The closing of cut JSON: every prefix of a JSON text closes into a text that parses."""

from __future__ import annotations

import json

import pytest

from endmark.json_close import json_closing, json_reach

DOCS = [
    '{"name": "Ada \\"the\\" first", "age": 36, "tags": ["a", "b\\u00e9"], "ok": true}',
    '[{"x": -1.5e+3, "y": null}, {"z": [[], {}]}, false]',
    '{"a": {"b": {"c": [1, 2, {"d": "e"}]}}, "f": ""}',
    '"just a string"',
    "123",
]


@pytest.mark.parametrize("doc", DOCS)
def test_every_prefix_closes_into_json(doc: str) -> None:
    for cut in range(1, len(doc) + 1):
        prefix = doc[:cut]
        closing = json_closing(prefix)
        assert closing is not None, prefix
        json.loads(prefix + closing)


def test_a_whole_text_needs_nothing_and_a_non_json_text_gets_none() -> None:
    assert json_closing('{"a": 1}') == ""
    assert json_closing('{"a" 1') is None
    assert json_closing("nonsense") is None
    assert json_closing('{"a": 1, ') == '"": null}'
    assert json_closing('{"a": tr') == "ue}"
    assert json_closing("[1.") == "0]"


ADD = {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"},
       "note": {"type": "string"}, "mode": {"type": "string", "enum": ["fast", "slow"]}},
       "required": ["a", "note", "b"]}  # fmt: skip


@pytest.mark.parametrize(
    ("text", "reach"),
    [
        ('{"a": 1.50000', ', "b": '),  # a number without end: finished where it stands
        ('{"a": 1, "b": 2, "note": "la la', None),  # nothing missing
        ('{"a": 1, "note": "la la la', '", "b": '),  # a looping string: closed
        ('{"a": 1, "b": 2, "mode": "fa', 'st", "note": '),  # an enum: finished as it begins
        ('{"a": 1,', ' "b": '),  # after a comma: the key comes next
        ("{", '"a": '),
        ('{"a": 1, "note": "x"', ', "b": '),  # after a whole value
        ('{"a": 1, "b": 2', ', "note": '),
        ('{"a": 1, "no', 'te": '),  # inside a key that begins a missing one: finished
    ],
)
def test_a_required_property_not_written_is_reached(text: str, reach: str | None) -> None:
    found = json_reach(text, ADD)
    assert (found and found.text) == reach
    if found is not None:
        written = text + found.text + "2"
        json.loads(written + str(json_closing(written, ADD)))


def test_reach_names_every_missing_key_and_none_where_no_key_can_follow() -> None:
    found = json_reach('{"a": 1', ADD)
    assert found is not None and found.keys == ("b", "note")  # in the properties' order
    assert json_reach('{"a": ', ADD) is None  # the value has not begun
    assert json_reach('{"a": 1, "zz', ADD) is None  # inside a key no missing one begins
    nested = {"type": "object", "properties": {"p": {"type": "object", "properties": {
        "q": {"type": "string"}}, "required": ["q"]}, "r": {"type": "integer"}},
        "required": ["p", "r"]}  # fmt: skip
    inner = json_reach('{"p": {"q": "long', nested)
    assert inner is not None and inner.text == '"}, "r": '  # the inner object closed first
