"""What generation needs from a backend, independent of llama.cpp."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from llguidance import LLTokenizer


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
    """Vectors for whole inputs on the engine's weights (a context of its own)."""

    pooling: str  # "none" (a row per token), "mean", "cls" or "last"
    n_embd: int

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """One array per input: a vector, or (pooling `none`) a row per token. Raises
        ValueError for an input that is empty or too long."""
        ...


class Engine(Protocol):
    """Everything the scheduler, the runtime and loading ask of a backend: one model, its
    vocabulary and chat template, and a cache of `n_ctx` cells for `n_seq_max` sequences."""

    vocab: Vocab
    n_ctx: int  # all sequences together
    n_ctx_train: int
    n_seq_max: int
    model_path: str

    # -- text and tokens --------------------------------------------------------------------

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]: ...

    def lltokenizer(self, end_tokens: Sequence[int]) -> LLTokenizer:
        """llguidance's view of the vocabulary, with `end_tokens` as its end-of-sequence set."""
        ...

    # -- the model's own facts --------------------------------------------------------------

    def metadata(self, key: str) -> str | None:
        """A GGUF metadata value as text, None where the model has none."""
        ...

    def chat_template(self) -> str | None:
        """The model's own Jinja chat template, if it carries one."""
        ...

    def builtin_template_names(self) -> list[str]:
        """The backend's own chat formats (llama-server's --chat-template names)."""
        ...

    def apply_builtin_template(
        self, template: str, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool
    ) -> str:
        """`messages` in a built-in chat format (ValueError if the backend has none by that
        name): llama-server without --jinja."""
        ...

    def model_facts(self) -> dict[str, Any]:
        """What the weights are: architecture, parameters, bytes, quantization,
        context_length, embedding_length, layers, heads."""
        ...

    # -- decoding and the cache -------------------------------------------------------------

    def decode(self, inputs: Sequence[SeqInput]) -> dict[int, np.ndarray]:
        """Run one forward pass over several sequences; for each that wants logits, a row
        for each of its last `n_logits` tokens (shape `(n_logits, n_vocab)`). Raises
        DecodeError when the batch cannot be decoded (the cache is full). The rows may be
        views that the next call overwrites."""
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

    def can_shift(self) -> bool:
        """Whether cached positions can be moved (`move`): not in every model's cache."""
        ...

    def move(self, seq_id: int, src: int, n: int, dst: int) -> None:
        """Move a sequence's cached positions `[src, src + n)` down to start at `dst` (<=
        `src`), forgetting `[dst, src)`: cache reuse and context shift."""
        ...

    def embedder(self, pooling: str = "auto") -> Embedder:
        """The embedding context on these weights, made on first use."""
        ...

    def close(self) -> None: ...
