"""What generation needs from a backend, independent of llama.cpp."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Vocab:
    """Facts about a model's vocabulary, read once at load time.

    Pieces are kept as bytes: a single token may hold part of a UTF-8 character.
    """

    n_vocab: int
    bos: int | None
    eos: int | None
    eot: int | None
    eom: int | None
    add_bos: bool
    eog_flagged: frozenset[int]
    control: frozenset[int]
    pieces: Sequence[bytes]
    special_pieces: Sequence[bytes]
    eos_token_ids: tuple[int, ...] = field(default_factory=tuple)

    def text(self, token: int) -> str:
        """A token as a person reads it, control tokens included (for logs and finish info)."""
        return self.special_pieces[token].decode("utf-8", errors="replace")


@dataclass(frozen=True)
class SeqInput:
    """Tokens one sequence feeds to one decode call, starting at `pos` in its cache."""

    seq_id: int
    tokens: Sequence[int]
    pos: int
    want_logits: bool = True
    n_logits: int = 1  # how many of the last tokens want logits (drafts to verify: several)


class DecodeError(RuntimeError):
    """The backend could not decode a batch (usually: the cache is full)."""


class Embedder(Protocol):
    """A model's embedding context: vectors for whole inputs, pooled as `pooling` says."""

    pooling: str

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[np.ndarray]: ...


class Engine(Protocol):
    vocab: Vocab
    n_ctx: int
    n_seq_max: int
    model_path: str

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]: ...

    def decode(self, inputs: Sequence[SeqInput]) -> dict[int, np.ndarray]:
        """Run one forward pass over several sequences; for each that wants logits, a row
        for each of its last `n_logits` tokens (shape `(n_logits, n_vocab)`)."""
        ...

    def drop(self, seq_id: int, from_pos: int = 0) -> None:
        """Forget a sequence's cache from `from_pos` on."""
        ...

    def copy(self, src: int, dst: int, up_to: int) -> None:
        """Share the first `up_to` cached positions of `src` with `dst`."""
        ...

    def can_continue(self, seq_id: int, n: int) -> bool:
        """Whether a sequence's first `n` cached positions can be continued: a sliding-window
        cache has let go of what fell out of its window."""
        ...

    def metadata(self, key: str) -> str | None: ...

    def model_facts(self) -> dict[str, Any]:
        """What the weights are (architecture, parameters, sizes), as model listings show it."""
        ...

    def chat_template(self) -> str | None: ...

    def builtin_template_names(self) -> list[str]: ...

    def apply_builtin_template(
        self, template: str, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool
    ) -> str: ...

    def lltokenizer(self, end_tokens: Sequence[int]) -> Any:
        """llguidance's tokenizer of this vocabulary, ending on `end_tokens`."""
        ...

    def embedder(self, pooling: str = "auto") -> Embedder: ...

    def close(self) -> None: ...
