"""What generation needs from a backend, independent of llama.cpp."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from llguidance import LLTokenizer


@dataclass(frozen=True)
class ChainSettings:
    """One request's sampler chain, in its order: `banned` tokens out, then top-k, top-p,
    min-p, temperature and a draw seeded with `seed` (negative: random)."""

    top_k: int
    top_p: float
    min_p: float
    temperature: float
    seed: int
    banned: Sequence[int] = ()


@dataclass(frozen=True)
class FimTokens:
    """The fill-in-the-middle tokens a vocabulary has (None: it has no such token): prefix,
    suffix, middle, pad, and the repo-name and file-separator of the repo-level pattern."""

    pre: int | None = None
    suf: int | None = None
    mid: int | None = None
    pad: int | None = None
    rep: int | None = None
    sep: int | None = None


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
    fim: FimTokens = field(default_factory=FimTokens)
    sep: int | None = None  # a BERT-style separator (rerank prompts)
    add_eos: bool = False  # the tokenizer adds eos (and sep) around a text: rerank prompts
    add_sep: bool = False

    def text(self, token: int) -> str:
        """A token as a person reads it, control tokens included (for logs and finish info)."""
        return self.special_pieces[token].decode("utf-8", errors="replace")


# A LoRA configuration: (adapter id, scale) for every adapter whose scale is not 0, by id; the
# empty tuple is the base model. Hashable: above the engine it is an opaque key.
AdapterScales = tuple[tuple[int, float], ...]


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

    pooling: str  # "none" (a row per token), "mean", "cls", "last" or "rank" (scores)
    n_embd: int
    rank_head: bool  # the model has a classification head, which pooling "rank" scores with

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """One array per input: a vector, (pooling `none`) a row per token, or (pooling
        `rank`) the head's outputs, the first being the score. Raises ValueError for an input
        that is empty or too long."""
        ...


class Engine(Protocol):
    """Everything the scheduler, the runtime and loading ask of a backend: one model, its
    vocabulary and chat template, and a cache of `n_ctx` cells for `n_seq_max` sequences."""

    vocab: Vocab
    n_ctx: int  # all sequences together
    n_ctx_train: int
    n_seq_max: int
    model_path: str
    # CPU time the decoding thread spent inside the backend's compute, in all: what the
    # thread spends beside it is the server's own work (the benchmark's host cost per token)
    compute_cpu_seconds: float

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

    def sampler_chain(self, settings: ChainSettings) -> Callable[[np.ndarray], int]:
        """Optional (a backend without one draws with numpy): the backend's own sampler for
        one request (`ChainSettings`); called with a row of adjusted logits, it gives a
        token."""
        ...

    def set_adapters(self, config: AdapterScales) -> None:
        """Decode every sequence under this LoRA configuration from the next decode on."""
        ...

    def adapter_facts(self) -> list[dict[str, str]]:
        """Each loaded LoRA adapter's `task_name` and `prompt_prefix`, in id order."""
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

    # -- sequence states: the prompt cache and slot files (optional: a backend without them
    # -- serves no slot files and no prompt cache) ------------------------------------------

    def state_identity(self) -> dict[str, str]:
        """What a state depends on besides its tokens (weights, cache types): a state made
        under another identity must never be loaded."""
        ...

    def state_bytes(self, seq_id: int) -> bytearray:
        """A sequence's whole cache state, copied out."""
        ...

    def load_state_bytes(self, seq_id: int, data: Any, offset: int = 0, size: int = -1) -> bool:
        """Replace a sequence's cache with a state from a writable buffer; False (and an empty
        sequence) if the backend refused it."""
        ...

    def save_state_file(self, seq_id: int, path: str, tokens: list[int]) -> int:
        """The sequence's tokens and state to a file in the backend's own format; the bytes
        written, 0 on failure."""
        ...

    def load_state_file(self, seq_id: int, path: str) -> tuple[list[int], int]:
        """A file of `save_state_file` into the sequence: its tokens and the bytes read
        (`([], 0)` and an empty sequence on failure)."""
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
