"""The closing of cut JSON: every prefix of a JSON text closes into a text that parses."""

from __future__ import annotations

import json

import pytest

from endmark.json_close import json_closing

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
