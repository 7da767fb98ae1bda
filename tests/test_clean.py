from __future__ import annotations

import json
from pathlib import Path

import pytest

from endmark.clean import clean_answer, cut_next_turn, first_json, strip_end_markers

CASES = json.loads((Path(__file__).parent / "data" / "noisy_outputs.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_recorded_noisy_outputs_are_repaired(case: dict[str, object]) -> None:
    text = str(case["text"])
    assert clean_answer(text) == case["clean"]
    if "json" in case:
        assert first_json(text) == case["json"]


def test_markers_learned_from_a_template_are_stripped() -> None:
    assert strip_end_markers("Done.<|over_to_you|>", ["<|over_to_you|>"]) == "Done."
    assert strip_end_markers("Done.<|over_to_you|>") == "Done.<|over_to_you|>"
    assert cut_next_turn("A<|over_to_you|>B", ["<|over_to_you|>"]) == "A"


def test_no_json_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no complete JSON"):
        first_json('{"cut": "off')
