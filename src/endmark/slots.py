"""Slots: the engine's sequences, each with the cache it holds, and which request runs on it.

Where a request goes decides how much of its prompt is read again: the slot whose cache it
continues, else an empty or the least recently used one; and a prefix that another slot holds
is copied instead of decoded (many clients, one system prompt). A cache is only continued
under the LoRA configuration it was computed under: under another, its KV is another model's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from endmark.engine import AdapterScales, Engine
from endmark.kv_shift import apply_plan, reuse_plan, shift_plan

if TYPE_CHECKING:
    from endmark.events import Event
    from endmark.generation import Generation
    from endmark.slot_states import SlotStates

Sink = Callable[["Event"], None]


@dataclass(eq=False)
class Ticket:
    """A submitted request: what the caller holds to cancel it."""

    generation: Generation
    sink: Sink
    cancelled: bool = False
    slot: int | None = None
    steps: int = 0  # decode steps that gave it logits (llama-server's generation rate)


@dataclass
class Slot:
    id: int
    cached: list[int] = field(default_factory=list)
    ticket: Ticket | None = None
    n_past: int = 0
    feed: list[int] = field(default_factory=list)
    drafts: list[int] = field(default_factory=list)  # a guess fed after `feed`, to verify
    last_used: float = 0.0  # when its last request ended: the least recent is evicted first
    adapters: AdapterScales = ()  # the LoRA configuration its cache was computed under
    shifted: int = 0  # generated tokens a context shift dropped from its cache

    @property
    def busy(self) -> bool:
        return self.ticket is not None

    @property
    def prefilling(self) -> bool:
        """Its prompt is not all read yet."""
        return self.ticket is not None and self.n_past < self.ticket.generation.n_prompt


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def reusable(slot: Slot, adapters: AdapterScales) -> list[int]:
    """What of a slot's cache a request under `adapters` may continue: all of it under the
    same LoRA configuration, nothing under another."""
    return slot.cached if slot.adapters == adapters else []


def pick_slot(
    free: list[Slot], prompt: list[int], use_cache: bool, adapters: AdapterScales = ()
) -> Slot:
    """The slot whose cache this prompt continues (all of the prompt, or at least half of what
    the slot holds: the next turn of that conversation), else the empty or least recently used one.
    So a new request never evicts a long conversation for a few shared tokens (a system
    prompt) while another slot is free, and alternating conversations each keep their own."""
    if use_cache:
        shares = [(common_prefix(reusable(s, adapters), prompt), s) for s in free]
        continued = [(n, s) for n, s in shares
                     if n > 0 and (n >= len(prompt) - 1 or 2 * n >= len(s.cached))]  # fmt: skip
        if continued:
            return max(continued, key=lambda pair: pair[0])[1]
    return min(free, key=lambda s: (bool(s.cached), s.last_used))


class SlotTable:
    """The slots over one engine, and their caches kept in step with it."""

    def __init__(
        self,
        engine: Engine,
        n_slots: int,
        shared_cells: int | None = None,
        states: SlotStates | None = None,
    ) -> None:
        """`shared_cells`: the slots share one cache of that many cells (`--kv-unified`), so
        what idle slots keep must make room for a new prompt. `states`: the prompt cache
        (a state is stored before a slot drops it, and restored for a prompt it starts)."""
        self.engine = engine
        self.slots = [Slot(i) for i in range(n_slots)]
        self.shared_cells = shared_cells
        self.states = states

    def free(self) -> list[Slot]:
        return [s for s in self.slots if not s.busy]

    def busy(self) -> list[Slot]:
        return [s for s in self.slots if s.busy]

    def place(self, ticket: Ticket) -> int:
        """Put a request on the best free slot (there must be one), reusing what its cache
        or another slot's holds of the prompt; returns how many prompt tokens are cached."""
        request = ticket.generation.request
        prompt, use_cache, adapters = request.prompt, request.cache_prompt, request.adapters
        slot = pick_slot(self.free(), prompt, use_cache, adapters)
        keep = common_prefix(reusable(slot, adapters), prompt) if use_cache else 0
        keep = min(keep, len(prompt) - 1)  # the last prompt token is fed for its logits
        if not self.engine.can_continue(slot.id, keep):
            keep = 0
        donor, shared = self._donor(slot, prompt, adapters) if use_cache else (None, 0)
        restored = 0
        if self.states is not None and use_cache and not adapters:  # states of the base model
            restored = self.states.restore(slot, prompt, max(keep, shared))
        if restored:
            keep = restored
        elif donor is not None and shared > keep:
            self._dropping(slot, 0)
            self.engine.copy(donor.id, slot.id, shared)
            slot.cached, keep = prompt[:shared], shared
        else:
            keep = min(keep, len(slot.cached))  # a restore that failed left the slot empty
            reuse = use_cache and request.cache_reuse > 0 and slot.adapters == adapters
            if reuse and self.engine.can_shift():
                keep = self._reuse_chunks(slot, prompt, keep, request.cache_reuse)
            self._dropping(slot, keep)
            self.engine.drop(slot.id, keep)
            slot.cached = slot.cached[:keep]
        slot.n_past = keep
        slot.shifted = 0
        slot.feed = prompt[keep:]
        slot.adapters = adapters
        slot.ticket = ticket
        ticket.slot = slot.id
        self._make_room(slot, len(prompt))
        return keep

    def _reuse_chunks(self, slot: Slot, prompt: list[int], keep: int, min_chunk: int) -> int:
        """Move the chunks of the slot's cache that the prompt repeats further on into place
        (`--cache-reuse`); how much of the prompt is cached then."""
        moves = reuse_plan(slot.cached, prompt, keep, min_chunk)
        for m in moves:
            self.engine.move(slot.id, m.src, m.n, m.dst)
        if moves:
            slot.cached = apply_plan(slot.cached, moves)
            keep = min(len(slot.cached), len(prompt) - 1)
        return keep

    def _make_room(self, slot: Slot, n_prompt: int) -> None:
        """In a shared cache, drop idle slots' caches, least recently used first, until the
        new prompt and one token more fit beside what the others hold: a prompt kept for a
        conversation that may never come back must not make a new one fail mid-prompt."""
        if self.shared_cells is None:
            return

        def held() -> int:
            return sum(len(s.cached) for s in self.slots if s is not slot) + n_prompt + 1

        idle = sorted((s for s in self.free() if s is not slot and s.cached),
                      key=lambda s: s.last_used)  # fmt: skip
        for other in idle:
            if held() <= self.shared_cells:
                return
            self._dropping(other, 0)
            self.engine.drop(other.id, 0)
            other.cached, other.n_past = [], 0

    def _dropping(self, slot: Slot, keep: int) -> None:
        """The prompt cache's chance to store what the slot is about to lose (of the base
        model only: its key does not name LoRA adapters)."""
        if self.states is not None and not slot.adapters:
            self.states.dropping(slot, keep)

    def _donor(
        self, slot: Slot, prompt: list[int], adapters: AdapterScales
    ) -> tuple[Slot | None, int]:
        """Another slot, busy or not, whose cache starts with more of this prompt than `slot`
        holds, and how much of it: copied (a tenth of a millisecond here) instead of decoded
        again, as when many clients share one system prompt."""
        best, shared = None, 0
        for other in self.slots:
            if other is not slot:
                n = min(common_prefix(reusable(other, adapters), prompt), len(prompt) - 1)
                if n > shared and self.engine.can_continue(other.id, n):
                    best, shared = other, n
        return best, shared

    def fed(self, slot: Slot, tokens: list[int]) -> None:
        """`tokens` were decoded into the slot's cache."""
        slot.cached.extend(tokens)
        slot.n_past += len(tokens)
        slot.feed = slot.feed[len(tokens) :]

    def trim(self, slot: Slot, valid: int) -> None:
        """Keep only the first `valid` cached tokens (a checked guess's refused tail leaves)."""
        if valid < slot.n_past:
            self.engine.drop(slot.id, valid)
            del slot.cached[valid:]
            slot.n_past = valid

    def shift(self, slot: Slot, keep: int, n_prompt: int, n_ctx: int, add_bos: bool) -> int:
        """The context is full: drop half of what follows the kept tokens and move the rest
        down (`--context-shift`); returns how many tokens were dropped."""
        m = shift_plan(slot.n_past, keep, n_prompt, n_ctx, add_bos)
        self.engine.move(slot.id, m.src, m.n, m.dst)
        slot.cached = slot.cached[: m.dst] + slot.cached[m.src :]
        slot.n_past = len(slot.cached)
        slot.shifted += m.src - m.dst
        slot.drafts = []
        return m.src - m.dst

    def release(self, slot: Slot, keep_cache: bool) -> None:
        if not keep_cache:
            self.engine.drop(slot.id, 0)
            slot.cached = []
        slot.ticket = None
        slot.feed = []
        slot.drafts = []
        slot.n_past = len(slot.cached)
        slot.last_used = time.monotonic()
