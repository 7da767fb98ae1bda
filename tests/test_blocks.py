"""The block tracker: blocks open, grow and close in order, and whitespace before a call never
makes a text block."""

from __future__ import annotations

from endmark.channels import ToolCall
from endmark.delta import Delta
from endmark.server.dialects.blocks import BlockTracker, blocks_of, changes_of

CALL = ToolCall("f", '{"x": 1}', "c1")


def kinds(deltas: list[Delta]) -> list[tuple[str, str]]:
    return [(b.kind, b.text) for b in blocks_of(deltas)]


def test_each_kind_of_output_opens_its_block() -> None:
    deltas = [Delta("", "Hmm"), Delta("", " ok"), Delta("Hi"), Delta(" there", "", (CALL,))]
    assert kinds(deltas) == [("reasoning", "Hmm ok"), ("text", "Hi there"), ("call", '{"x": 1}')]
    changes = changes_of(deltas)
    assert [(c.what, c.block.index) for c in changes] == [
        ("open", 0), ("grow", 0), ("grow", 0), ("close", 0), ("open", 1), ("grow", 1),
        ("grow", 1), ("close", 1), ("open", 2), ("grow", 2), ("close", 2),
    ]  # fmt: skip


def test_whitespace_waits_for_text_and_is_dropped_by_a_call() -> None:
    assert kinds([Delta("", "Hmm"), Delta("\n\n"), Delta("Paris")]) == [
        ("reasoning", "Hmm"), ("text", "\n\nParis")]  # fmt: skip
    assert kinds([Delta("\n"), Delta("", "", (CALL,)), Delta(" ")]) == [("call", '{"x": 1}')]


def test_an_answer_without_text_or_calls_still_has_its_text_block() -> None:
    assert kinds([]) == [("text", "")]
    assert kinds([Delta(" ")]) == [("text", " ")]
    assert kinds([Delta("", "Hmm"), Delta(" ")]) == [("reasoning", "Hmm"), ("text", " ")]


def test_a_stream_and_a_whole_answer_make_the_same_blocks() -> None:
    deltas = [Delta("", "a"), Delta(" "), Delta("b"), Delta("", "", (CALL,)), Delta("c")]
    tracker = BlockTracker()
    for delta in deltas:
        tracker.add(delta)
    tracker.finish()
    assert tracker.blocks == blocks_of([Delta(" b", "a", (CALL,)), Delta("c")])
