"""Post-processing for clients of servers that do not end cleanly.

A legacy server may leave the end-of-turn marker in the text, run on into a turn the model
wrote for the user, or wrap JSON in prose. These helpers repair such output after the fact;
endmark itself never needs them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

# End-of-turn and end-of-text markers, by model family.
FAMILY_MARKERS: dict[str, tuple[str, ...]] = {
    "chatml": ("<|im_end|>", "<|endoftext|>"),
    "llama3": ("<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"),
    "gemma": ("<end_of_turn>", "<eos>"),
    "mistral": ("</s>",),
    "phi3": ("<|end|>", "<|endoftext|>"),
}
KNOWN_MARKERS = tuple(dict.fromkeys(m for ms in FAMILY_MARKERS.values() for m in ms))
# Where a model starts writing the next turn itself.
TURN_STARTS = (
    "<|im_start|>",
    "<|start_header_id|>",
    "<start_of_turn>",
    "[INST]",
    "<|user|>",
    "<|assistant|>",
    "<|system|>",
)
_ROLE_LINE = re.compile(r"^\s*(user|assistant|system|human|model)\s*:?\s*$", re.I | re.M)


def strip_end_markers(text: str, markers: Iterable[str] = KNOWN_MARKERS) -> str:
    """Remove end markers (and the whitespace around them) from the end of `text`,
    e.g. learned from a model's template, or all the known families' by default."""
    markers = tuple(m for m in markers if m)
    changed = True
    while changed:
        changed = False
        stripped = text.rstrip()
        for m in markers:
            if stripped.endswith(m):
                text = stripped[: -len(m)]
                changed = True
    return text.rstrip()


def cut_next_turn(text: str, markers: Iterable[str] = KNOWN_MARKERS) -> str:
    """Keep only the first turn: cut at the first end marker, turn-start token, or a line
    that is just a role name (`user`, `assistant:` ...), as a model writes when it runs on."""
    cut = len(text)
    for token in (*markers, *TURN_STARTS):
        i = text.find(token) if token else -1
        if i != -1:
            cut = min(cut, i)
    role = _ROLE_LINE.search(text)
    if role is not None and role.start() > 0:
        cut = min(cut, role.start())
    return text[:cut].rstrip()


def first_json(text: str) -> Any:
    """The first complete JSON object or array in noisy text (code fences, prose, a marker
    after it); raises ValueError if there is none."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        return value
    raise ValueError("no complete JSON value in the text")


def clean_answer(text: str, markers: Iterable[str] = KNOWN_MARKERS) -> str:
    """Both repairs: the first turn only, without trailing markers."""
    markers = tuple(markers)
    return strip_end_markers(cut_next_turn(text, markers), markers)
