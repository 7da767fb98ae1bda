from __future__ import annotations

from endmark.detokenize import Detokenizer, piece_text


def test_a_character_split_across_tokens_waits_for_its_last_byte() -> None:
    data = "🎉".encode()
    pieces = [data[:1], data[1:3], data[3:], b"!"]
    d = Detokenizer(pieces)
    assert [d.add_token(i) for i in range(4)] == ["", "", "🎉", "!"]
    assert d.finalize() == ""


def test_an_unfinished_character_at_the_end_becomes_a_replacement() -> None:
    d = Detokenizer(["你".encode()[:2]])
    assert d.add_token(0) == ""
    assert d.finalize() == "\ufffd"


def test_real_vocab_splits_emoji_and_detokenizer_joins_them(engine) -> None:  # type: ignore[no-untyped-def]
    text = "Party 🎉 你好"
    tokens = engine.tokenize(text, False, False)
    d = Detokenizer(engine.vocab.pieces)
    out = [d.add_token(t) for t in tokens]
    assert "".join(out) + d.finalize() == text
    assert all("\ufffd" not in part for part in out)


def test_piece_text_is_text_or_bytes() -> None:
    assert piece_text(b"abc") == "abc"
    assert piece_text(b"\xf0\x9f") == [0xF0, 0x9F]


def test_peek_bytes_holds_an_unfinished_character_before_the_piece() -> None:
    """`▁` cut between tokens: what the next token adds is known in bytes, not yet as text."""
    detok = Detokenizer(["▁".encode()[:2], "▁".encode()[2:], b"s"])
    detok.add_token(0)
    assert detok.peek(1) == "▁" and detok.peek_bytes(1) == "▁".encode()
    assert detok.peek_bytes(2) == "▁".encode()[:2] + b"s"
    assert detok.add_token(1) == "▁"  # peeking changed nothing
