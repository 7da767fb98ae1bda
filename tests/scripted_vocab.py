"""The scripted engine's vocabulary: ChatML's control tokens, `<think>`, `</think>`,
`<tool_call>` and `</tool_call>` (control tokens, as in Qwen3's vocabulary), a few whole
words, and the 256 bytes, so any text tokenizes and a UTF-8 character may span tokens."""

from __future__ import annotations

from collections.abc import Sequence

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
N_VOCAB = FIRST_BYTE + 256


def tokenize(text: str, parse_special: bool) -> list[int]:
    """Control tokens (where parsed), then whole words (the longest), then bytes."""
    tokens: list[int] = []
    data = text.encode("utf-8")
    i = 0
    while i < len(data):
        match = _longest(data, i, CONTROL if parse_special else ())
        if match is not None:
            tokens.append(match)
            i += len(CONTROL[match].encode())
            continue
        word = _longest(data, i, WORDS)
        if word is not None:
            tokens.append(len(CONTROL) + word)
            i += len(WORDS[word].encode())
            continue
        tokens.append(FIRST_BYTE + data[i])
        i += 1
    return tokens


class LLVocab:
    """What llguidance's `TokenizerWrapper` reads: the tokens' bytes (control tokens marked
    with a leading 0xff, as llguidance's llama.cpp reader marks them) and a tokenize call."""

    def __init__(self, vocab: Vocab, end_tokens: Sequence[int]) -> None:
        self.eos_token_id = end_tokens[0] if end_tokens else IM_END
        self.bos_token_id = IM_START
        self.tokens = [
            b"\xff" + vocab.special_pieces[t] if t in vocab.control else vocab.pieces[t]
            for t in range(vocab.n_vocab)
        ]
        self.special_token_ids = sorted(vocab.control)

    def __call__(self, text: bytes) -> list[int]:
        return tokenize(text.decode("utf-8", errors="replace"), parse_special=False)


def _longest(data: bytes, at: int, texts: Sequence[str]) -> int | None:
    """The index of the longest of `texts` that `data` holds at `at`."""
    best, size = None, 0
    for i, text in enumerate(texts):
        raw = text.encode()
        if len(raw) > size and data.startswith(raw, at):
            best, size = i, len(raw)
    return best


def make_vocab() -> Vocab:
    pieces = [b""] * len(CONTROL) + [w.encode() for w in WORDS] + [bytes([b]) for b in range(256)]
    special = [c.encode() for c in CONTROL] + pieces[len(CONTROL) :]
    return Vocab(
        n_vocab=N_VOCAB,
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
