"""Prompt-lookup drafts: guess the next tokens by finding the context's last few tokens
earlier in the context (the prompt or the output so far), and proposing what followed them.

Quoting, extracting and editing repeat long spans of the prompt; there a guess is usually
right, and the model checks a whole guess in one batched decode. A guess costs a little compute
when it is wrong, so the length adapts to how well guesses do, and a sequence whose guesses
keep failing stops guessing for a while.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

NGRAMS = (4, 3, 2)  # the longest match first: it predicts best
MAX_COOLDOWN = 64  # tokens a failing sequence waits before it guesses again, at most


@dataclass(frozen=True)
class DraftSettings:
    """llama-server's `--draft-max` / `--draft-min`: how many tokens one guess may hold."""

    max: int = 8
    min: int = 0
    asked: bool = False  # the request set `speculative.n_max`: drafts at any temperature


class PromptLookup:
    """One sequence's drafter. `extend` it with every token the sequence accepts."""

    def __init__(self, context: Sequence[int], settings: DraftSettings) -> None:
        self.settings = settings
        self._seq: list[int] = []
        self._index: dict[tuple[int, ...], int] = {}  # n-gram -> where its latest successor is
        self._k = max(settings.min, min(4, settings.max))
        self._wait = 0
        self._cooldown = 4
        self._source: int | None = None  # where the text being copied goes on, while it does
        self.extend(context)

    def extend(self, tokens: Sequence[int]) -> None:
        seq, index = self._seq, self._index
        for token in tokens:
            i = len(seq)
            for n in NGRAMS:
                if i >= n:
                    index[tuple(seq[i - n : i])] = i
            source = self._source
            self._source = source + 1 if source is not None and seq[source] == token else None
            seq.append(token)
        self._wait = max(0, self._wait - len(tokens))

    def draft(self) -> list[int]:
        """What may follow the sequence as it stands: [] when nothing matches, or while a
        failing sequence waits."""
        if self._wait or self.settings.max <= 0:
            return []
        seq, start = self._seq, self._source
        for n in NGRAMS:
            if start is not None or len(seq) <= n:
                break
            start = self._index.get(tuple(seq[-n:]))
        if start is None:
            return []
        # Copying goes on from where the last guess came from: a text that repeats its own
        # phrases (a list, a table) would send the latest match to the wrong place.
        self._source = start
        guess = seq[start : start + self._k]
        return guess if len(guess) >= max(1, self.settings.min) else []

    def feedback(self, drafted: int, accepted: int) -> None:
        """A full hit lengthens the next guess; a miss shortens it, and a guess with nothing
        right makes the sequence wait, longer each time in a row."""
        if drafted == 0:
            return
        if accepted == drafted:
            self._k = min(self.settings.max, self._k * 2)
            self._cooldown = 4
        else:
            self._k = max(max(1, self.settings.min), accepted + 1)
        if accepted == 0:
            self._wait = self._cooldown
            self._cooldown = min(MAX_COOLDOWN, self._cooldown * 2)
