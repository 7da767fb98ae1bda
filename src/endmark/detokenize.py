"""Token ids to text, one token at a time, never splitting a UTF-8 character."""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class Detokenizer:
    """Streams text from token pieces; bytes of an unfinished character wait for the next token.

    Pieces come without special rendering, so control tokens add no text (ending rule 3).
    """

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self._pieces = pieces
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add_token(self, token: int) -> str:
        return self._decoder.decode(self._pieces[token])

    def peek(self, token: int) -> str:
        """The text `add_token(token)` would give, the decoder left as it is."""
        state = self._decoder.getstate()
        text = self._decoder.decode(self._pieces[token])
        self._decoder.setstate(state)
        return text

    def peek_bytes(self, token: int) -> bytes:
        """The bytes `add_token(token)` would add to the text: those of an unfinished
        character waiting, then the token's piece."""
        return self._decoder.getstate()[0] + self._pieces[token]

    def finalize(self) -> str:
        """What is left at the end: an unfinished character becomes U+FFFD, as it must. The
        decoder starts afresh (a channel marker ends a run of text this way too)."""
        text = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return text


def piece_text(piece: bytes) -> str | list[int]:
    """A piece as JSON can carry it: text if it is valid UTF-8 on its own, else its bytes."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return list(piece)
