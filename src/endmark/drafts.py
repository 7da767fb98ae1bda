"""Prompt-lookup drafts: guess the next tokens by finding the context's last few tokens
earlier in the context (the prompt or the output so far), and proposing what followed them.

Quoting, extracting and editing repeat long spans of the prompt; there a guess is usually
right, and the model checks a whole guess in one batched decode. A guess costs compute when it
is wrong, so the length adapts to how well guesses do, and a sequence whose guesses keep
failing stops guessing for a while.

What a checked token costs depends on the model, its format and the CPU: from a tenth of a
one-token decode (a large model, memory-bound) to nearly a whole one (a tiny model in Q4_1 on
two cores). `DecodeCost` learns it from the decodes themselves, and a guess holds only the
tokens likely enough to be right to pay for their rows; a guess not worth checking is still
followed for free (`shadow`), so the sequence learns when its text starts to repeat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

NGRAMS = (4, 3, 2)  # the longest match first: it predicts best
MAX_COOLDOWN = 64  # tokens a failing sequence waits before it guesses again, at most
MEMORY = 0.8  # how much of its record a sequence's chance of a right guess keeps at each guess
COST_SIZES = 16  # decodes of up to this many more tokens than a step's inform its price
QUICK = 0.001  # seconds: a decode this quick (a test double's) leaves nothing to win or lose


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
        self._right, self._wrong = 1.0, 1.0  # guessed tokens right and wrong, recent ones most
        self._shadow: list[int] = []  # a guess not checked, compared with what comes instead
        self._shadow_at = 0
        self.extend(context)

    @property
    def chance(self) -> float:
        """The chance that a guessed token is right, given the one before it was."""
        return self._right / (self._right + self._wrong)

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
            if self._shadow:
                self._follow_shadow(token)
        self._wait = max(0, self._wait - len(tokens))

    def _follow_shadow(self, token: int) -> None:
        shadow, at = self._shadow, self._shadow_at
        if token == shadow[at] and at + 1 < len(shadow):
            self._shadow_at = at + 1
            return
        self._shadow = []
        self.feedback(len(shadow), at + (token == shadow[at]))

    def draft(self, price: float = 0.0) -> list[int]:
        """What may follow the sequence as it stands: [] when nothing matches, or while a
        failing sequence waits. `price`: the chance a guessed token needs to pay for its row
        (`DecodeCost.price`); the guess is cut where its tokens' chance falls below it."""
        if self._wait or self.settings.max <= 0 or self._shadow:
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
        if not self.settings.min:  # (a minimum asked for is the user's to pay)
            worth = self._worth(price)
            if worth == 0:
                self._shadow, self._shadow_at = guess, 0
            guess = guess[:worth]
        return guess if len(guess) >= max(1, self.settings.min) else []

    def _worth(self, price: float) -> int:
        """How many tokens of a guess pay for their rows: the i-th is right with chance
        `chance ** i`, and is checked while that is above the price."""
        chance = self.chance
        if price <= 0.0:
            return 1 << 30
        if chance <= price:
            return 0
        return max(0, int(math.log(price) / math.log(chance)))

    def feedback(self, drafted: int, accepted: int) -> None:
        """A full hit lengthens the next guess; a miss shortens it, and a guess with nothing
        right makes the sequence wait, longer each time in a row."""
        if drafted == 0:
            return
        self._right = self._right * MEMORY + accepted
        self._wrong = self._wrong * MEMORY + (accepted < drafted)
        if accepted == drafted:
            self._k = min(self.settings.max, self._k * 2)
            self._cooldown = 4
        else:
            self._k = max(max(1, self.settings.min), accepted + 1)
        if accepted == 0:
            self._wait = self._cooldown
            self._cooldown = min(MAX_COOLDOWN, self._cooldown * 2)


class DecodeCost:
    """The time of the decodes whose every token is a step of generation (one per sequence,
    plus the guesses checked in it), by how many tokens they held: what one more row in a
    step costs is read off it. Costs are learnt where they are seen: a size never decoded
    has no price yet, and guesses are checked as if rows were free until one is."""

    def __init__(self, smoothing: float = 0.2) -> None:
        self._smoothing = smoothing
        self._seconds: dict[int, float] = {}  # tokens in a decode -> its time, smoothed

    def add(self, tokens: int, seconds: float) -> None:
        old = self._seconds.get(tokens)
        self._seconds[tokens] = seconds if old is None else old + self._smoothing * (seconds - old)

    def price(self, steps: int) -> float:
        """The chance a guessed token must have to be worth its row in a decode of `steps`
        one-token steps: the row's cost over the time each token of the step takes now."""
        here = self._seconds.get(steps)
        if not here or here < QUICK:
            return 0.0
        rows = [
            (seconds - here) / (n - steps)
            for n, seconds in self._seconds.items()
            if steps < n <= steps + COST_SIZES
        ]
        if not rows:
            return 0.0
        return min(1.0, max(0.0, sum(rows) / len(rows)) * steps / here)
