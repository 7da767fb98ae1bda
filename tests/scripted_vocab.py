"""The scripted engine's vocabulary: ChatML's control tokens, `<think>`, `</think>`,
`<tool_call>` and `</tool_call>` (control tokens, as in Qwen3's vocabulary), a few whole
words, and the 256 bytes, so any text tokenizes and a UTF-8 character may span tokens.

A test may declare more words (`Lexicon(extra)`): any pieces of bytes, numbered after the
bytes, so that a script can cut its answer into tokens wherever it likes (a marker, a stop
string or a UTF-8 character across two tokens)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from endmark.engine import Vocab

CONTROL = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
)
ENDOFTEXT, IM_START, IM_END, THINK, THINK_END, TOOL_CALL, TOOL_CALL_END = range(len(CONTROL))
# Whole words, so that some tokens hold several characters (greedy longest match).
WORDS = ("Hello", " world", "Paris", " the", '{"', '": ', '", "', '"}', "name", "arguments")
FIRST_BYTE = len(CONTROL) + len(WORDS)
N_VOCAB = FIRST_BYTE + 256  # the vocabulary without declared words


class Lexicon:
    """The pieces of text a vocabulary holds (control tokens aside): `WORDS`, the bytes, and
    the `extra` words a test declares (those not already a token), numbered after the bytes.
    Tokenizing takes the longest word at each place (a dict lookup per length: a test may
    declare thousands)."""

    def __init__(self, extra: Iterable[str | bytes] = ()) -> None:
        pieces = [w.encode() for w in WORDS] + [bytes([b]) for b in range(256)]
        self.ids = {piece: len(CONTROL) + i for i, piece in enumerate(pieces)}
        for word in extra:
            raw = word.encode() if isinstance(word, str) else word
            if raw and raw not in self.ids:
                self.ids[raw] = len(CONTROL) + len(pieces)
                pieces.append(raw)
        self.pieces = pieces  # each token's bytes, from the first word on
        self.n_vocab = len(CONTROL) + len(pieces)
        self._sizes: dict[bytes, list[int]] = {}  # a word's first two bytes: their words' sizes
        for p in self.ids:
            if len(p) > 1:
                self._sizes.setdefault(p[:2], []).append(len(p))
        for sizes in self._sizes.values():
            sizes.sort(reverse=True)

    def tokenize(self, text: str, parse_special: bool) -> list[int]:
        """Control tokens (where parsed), then whole words (the longest), then bytes."""
        tokens: list[int] = []
        data = text.encode("utf-8")
        i = 0
        while i < len(data):
            match = _control(data, i) if parse_special and data[i] == 60 else None  # "<"
            if match is not None:
                tokens.append(match)
                i += len(CONTROL[match].encode())
                continue
            sizes = self._sizes.get(data[i : i + 2], ())
            size = next((n for n in sizes if data[i : i + n] in self.ids), 1)
            tokens.append(self.ids[data[i : i + size]])
            i += size
        return tokens

    def token(self, piece: str | bytes) -> int:
        """The one token whose text is `piece` (a declared word, a base word or a byte)."""
        raw = piece.encode() if isinstance(piece, str) else piece
        if raw not in self.ids:
            raise ValueError(f"{raw!r} is no token of this vocabulary: declare it as a word")
        return self.ids[raw]


BASE = Lexicon()


def tokenize(text: str, parse_special: bool) -> list[int]:
    """The base vocabulary's tokens of `text`: control tokens (where parsed), then whole
    words (the longest), then bytes."""
    return BASE.tokenize(text, parse_special)


class LLVocab:
    """What llguidance's `TokenizerWrapper` reads: the tokens' bytes (control tokens marked
    with a leading 0xff, as llguidance's llama.cpp reader marks them) and a tokenize call."""

    def __init__(self, vocab: Vocab, end_tokens: Sequence[int], lexicon: Lexicon = BASE) -> None:
        self.eos_token_id = end_tokens[0] if end_tokens else IM_END
        self.bos_token_id = IM_START
        self.tokens = [
            b"\xff" + vocab.special_pieces[t] if t in vocab.control else vocab.pieces[t]
            for t in range(vocab.n_vocab)
        ]
        self.special_token_ids = sorted(vocab.control)
        self._lexicon = lexicon

    def __call__(self, text: bytes) -> list[int]:
        return self._lexicon.tokenize(text.decode("utf-8", errors="replace"), False)


def _control(data: bytes, at: int) -> int | None:
    """The control token whose text `data` holds at `at` (the longest)."""
    best, size = None, 0
    for i, text in enumerate(CONTROL):
        raw = text.encode()
        if len(raw) > size and data.startswith(raw, at):
            best, size = i, len(raw)
    return best


def make_vocab(lexicon: Lexicon = BASE) -> Vocab:
    pieces = [b""] * len(CONTROL) + lexicon.pieces
    special = [c.encode() for c in CONTROL] + lexicon.pieces
    return Vocab(
        n_vocab=lexicon.n_vocab,
        bos=IM_START,
        eos=IM_END,
        eot=ENDOFTEXT,
        eom=None,
        add_bos=False,
        eog_flagged=frozenset({ENDOFTEXT, IM_END}),
        control=frozenset(range(len(CONTROL))),
        pieces=pieces,
        special_pieces=special,
    )
