"""Moving cached tokens instead of decoding them again, as llama-server does: cache reuse
(`--cache-reuse N`: chunks of an old prompt that reappear further on in a new one) and
context shift (`--context-shift`: a full context drops half of what follows `n_keep`).

Pure plans here; the slot table applies them with `Engine.move`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Move:
    """Cached positions `[src, src + n)` move down to start at `dst`; `[dst, src)` is dropped."""

    src: int
    n: int
    dst: int


def reuse_plan(cached: list[int], prompt: list[int], n_past: int, min_chunk: int) -> list[Move]:
    """llama-server's cache reuse, from `n_past` (the common prefix) on: walk the old cache;
    a run of at least `min_chunk` tokens that matches the prompt where it has got to moves
    there; a shorter one is skipped a token at a time."""
    moves: list[Move] = []
    head_c = head_p = n_past
    while head_c < len(cached) and head_p < len(prompt):
        n = 0
        while (head_c + n < len(cached) and head_p + n < len(prompt)
               and cached[head_c + n] == prompt[head_p + n]):  # fmt: skip
            n += 1
        if n >= min_chunk > 0:
            moves.append(Move(head_c, n, head_p))
            head_c += n
            head_p += n
        else:
            head_c += 1
    return moves


def apply_plan(cached: list[int], moves: list[Move]) -> list[int]:
    """The tokens the cache holds, in order, after `moves` (what was not moved is gone)."""
    out = cached[: moves[0].dst] if moves else list(cached)
    for m in moves:
        assert m.dst == len(out)
        out += cached[m.src : m.src + m.n]
    return out


def shift_plan(n_cached: int, n_keep: int, n_prompt: int, n_ctx: int, add_bos: bool) -> Move:
    """llama-server's context shift: keep the first `n_keep` tokens (-1: the whole prompt;
    the BOS is kept besides), drop half of the rest, move the other half down."""
    keep = n_prompt if n_keep < 0 else n_keep
    keep = min(n_ctx - 4, keep + add_bos)
    left = n_cached - keep
    discard = max(0, min(left // 2, left - 1))
    return Move(keep + discard, n_cached - keep - discard, keep)
