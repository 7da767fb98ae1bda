"""Slots and continuous batching: one decode per step advances every running sequence.

A worker thread owns the engine. Requests wait in a bounded FIFO queue, take a free slot (a
llama.cpp sequence id with its own cache), and leave between steps. Each step feeds one token
of every decoding sequence plus prompt chunks of new ones, so a long prompt delays the others
by at most one chunk.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from endmark.endings import EndPolicy, EogSet
from endmark.engine import DecodeError, Engine, SeqInput
from endmark.generation import (
    Done,
    Event,
    Failed,
    Generation,
    GenerationRequest,
    Timings,
)
from endmark.invalid import ContextExceeded

T = TypeVar("T")
log = logging.getLogger("endmark.scheduler")

Sink = Callable[[Event], None]


class QueueFull(RuntimeError):
    """Every slot is busy and the waiting line is full: try again later."""


@dataclass(eq=False)
class Ticket:
    """A submitted request: what the caller holds to cancel it."""

    generation: Generation
    sink: Sink
    cancelled: bool = False
    slot: int | None = None


@dataclass
class Slot:
    id: int
    cached: list[int] = field(default_factory=list)
    ticket: Ticket | None = None
    n_past: int = 0
    feed: list[int] = field(default_factory=list)
    drafts: list[int] = field(default_factory=list)  # a guess fed after `feed`, to verify
    last_used: float = 0.0  # when its last request ended: the least recent is evicted first

    @property
    def busy(self) -> bool:
        return self.ticket is not None


@dataclass
class Stats:
    """Running totals since start, read by `/metrics`."""

    requests_finished: int = 0
    requests_failed: int = 0
    requests_cancelled: int = 0
    prompt_tokens: int = 0
    prompt_seconds: float = 0.0
    generated_tokens: int = 0
    generation_seconds: float = 0.0


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def pick_slot(free: list[Slot], prompt: list[int], use_cache: bool) -> Slot:
    """The slot whose cache this prompt continues (all of the prompt, or at least half of what
    the slot holds: the next turn of that conversation), else the empty or least recently used one.
    So a new request never evicts a long conversation for a few shared tokens (a system
    prompt) while another slot is free, and alternating conversations each keep their own."""
    if use_cache:
        shares = [(common_prefix(s.cached, prompt), s) for s in free]
        continued = [(n, s) for n, s in shares
                     if n > 0 and (n >= len(prompt) - 1 or 2 * n >= len(s.cached))]  # fmt: skip
        if continued:
            return max(continued, key=lambda pair: pair[0])[1]
    return min(free, key=lambda s: (bool(s.cached), s.last_used))


class Scheduler:
    def __init__(
        self,
        engine: Engine,
        eog: EogSet,
        n_slots: int = 1,
        batch_size: int = 512,
        queue_size: int = 64,
        shared_cache: bool = False,
        cont_batching: bool = True,
    ) -> None:
        """`shared_cache`: the slots share one cache (llama-server's --kv-unified), so each
        request may use all of it; `cont_batching=False` admits requests only into an idle
        server (llama-server's --no-cont-batching)."""
        self.engine = engine
        self.eog = eog
        self.batch_size = batch_size
        self.queue_size = queue_size
        self.cont_batching = cont_batching
        self.slots = [Slot(i) for i in range(n_slots)]
        self.n_ctx_slot = engine.n_ctx if shared_cache else engine.n_ctx // n_slots
        self.shared_cache = shared_cache
        self.stats = Stats()
        self._queue: deque[Ticket] = deque()
        self._chores: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._abort: str | None = None
        self._thread = threading.Thread(target=self._run, name="endmark-scheduler", daemon=True)

    # -- called from other threads ----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=10)

    def submit(self, request: GenerationRequest, sink: Sink) -> Ticket:
        policy = request.policy or EndPolicy(self.eog)
        if len(request.prompt) >= self.n_ctx_slot:
            raise ContextExceeded(len(request.prompt), self.n_ctx_slot)
        ticket = Ticket(Generation(request, self.engine.vocab, policy, self.n_ctx_slot), sink)
        with self._cond:
            if len(self._queue) >= self.queue_size:
                raise QueueFull(f"the queue is full ({self.queue_size} waiting)")
            self._queue.append(ticket)
            self._cond.notify_all()
        return ticket

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run `fn` on the worker thread, between two steps: all of llama.cpp's compute stays
        on one thread. (Embeddings decoded from another thread left generation ~40% slower
        for good: llama.cpp's OpenMP threads of two callers fight over the cores.)"""
        future: Future[T] = Future()
        with self._cond:
            self._chores.append((fn, future))
            self._cond.notify_all()
        return future

    def fail_all(self, message: str) -> None:
        """End every running and waiting request with a clean error (e.g. at shutdown)."""
        with self._cond:
            self._abort = message
            self._cond.notify_all()

    def cancel(self, ticket: Ticket) -> None:
        with self._cond:
            ticket.cancelled = True
            self._cond.notify_all()

    @property
    def n_queued(self) -> int:
        return len(self._queue)

    # -- the worker -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._stopping or self._queue or self._chores or self._any_busy()):
                    self._cond.wait()
                if self._stopping:
                    break
                if self._abort is not None:
                    self._fail_everything(self._abort)
                    self._abort = None
                    continue
                self._admit()
                chores, self._chores = list(self._chores), deque()
            for fn, future in chores:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except Exception as exc:  # the caller's to handle
                        future.set_exception(exc)
            try:
                self.step()
            except Exception as exc:  # keep serving: fail the running requests, not the server
                log.exception("decode step failed")
                for slot in self.slots:
                    if slot.ticket is not None:
                        self._deliver(slot.ticket, Failed(f"generation failed: {exc}"))
                        self._release(slot, keep_cache=False)
        self._fail_everything("the server is shutting down")
        for _, future in self._chores:
            future.cancel()

    def _fail_everything(self, message: str) -> None:
        for slot in self.slots:
            if slot.ticket is not None:
                self._deliver(slot.ticket, Failed(message))
                self._release(slot, keep_cache=True)
        while self._queue:
            self._deliver(self._queue.popleft(), Failed(message))

    def _any_busy(self) -> bool:
        return any(s.busy for s in self.slots)

    def _admit(self) -> None:
        """Move queued requests into free slots, preferring the slot with the longest match."""
        while self._queue and not self._queue[0].cancelled:
            free = [s for s in self.slots if not s.busy]
            if not free or not self.cont_batching and len(free) < len(self.slots):
                return
            ticket = self._queue.popleft()
            prompt = ticket.generation.request.prompt
            use_cache = ticket.generation.request.cache_prompt
            slot = pick_slot(free, prompt, use_cache)
            keep = common_prefix(slot.cached, prompt) if use_cache else 0
            keep = min(keep, len(prompt) - 1)  # the last prompt token is fed for its logits
            if not self.engine.can_continue(slot.id, keep):
                keep = 0
            donor, shared = self._donor(slot, prompt) if use_cache else (None, 0)
            if donor is not None and shared > keep:
                self.engine.copy(donor.id, slot.id, shared)
                slot.cached, keep = prompt[:shared], shared
            else:
                self.engine.drop(slot.id, keep)
                slot.cached = slot.cached[:keep]
            slot.n_past = keep
            slot.feed = prompt[keep:]
            slot.ticket = ticket
            ticket.slot = slot.id
            progress = ticket.generation.admitted(keep, time.perf_counter())
            if ticket.generation.request.report_progress:
                self._deliver(ticket, progress)
        while self._queue and self._queue[0].cancelled:
            self._queue.popleft()

    def _donor(self, slot: Slot, prompt: list[int]) -> tuple[Slot | None, int]:
        """Another slot, busy or not, whose cache starts with more of this prompt than `slot`
        holds, and how much of it: copied (a tenth of a millisecond here) instead of decoded
        again, as when many clients share one system prompt."""
        best, shared = None, 0
        for other in self.slots:
            if other is not slot:
                n = min(common_prefix(other.cached, prompt), len(prompt) - 1)
                if n > shared and self.engine.can_continue(other.id, n):
                    best, shared = other, n
        return best, shared

    def step(self) -> None:
        """One batched decode for every busy slot, then sampling for those that want it."""
        for slot in self.slots:
            if slot.ticket is not None and slot.ticket.cancelled:
                self.stats.requests_cancelled += 1
                gen = slot.ticket.generation
                log.info(
                    "%s: prompt %d tokens (%d cached), cancelled after %d tokens: "
                    "the client left",
                    gen.request.label, gen.n_prompt, gen.timings.cached_n, len(gen.tokens),
                )  # fmt: skip
                self._release(slot, keep_cache=True)
        budget = self.batch_size
        inputs: list[SeqInput] = []
        decoding = [
            s for s in self.slots if s.busy and s.n_past >= len(s.ticket.generation.request.prompt)
        ]  # type: ignore[union-attr]
        prefilling = [s for s in self.slots if s.busy and s not in decoding]
        for slot in decoding + prefilling:
            if budget <= 0:
                break
            chunk = slot.feed[:budget]
            done_feeding = len(chunk) == len(slot.feed)
            guess = slot.drafts if done_feeding and len(chunk) + len(slot.drafts) <= budget else []
            slot.drafts = guess
            inputs.append(SeqInput(slot.id, chunk + guess, slot.n_past,
                                   want_logits=done_feeding, n_logits=1 + len(guess)))  # fmt: skip
            budget -= len(chunk) + len(guess)
        if not inputs:
            return
        try:
            logits = self.engine.decode(inputs)
        except DecodeError as exc:
            raise RuntimeError(str(exc)) from exc
        now = time.perf_counter()
        for item in inputs:
            slot = self.slots[item.seq_id]
            slot.cached.extend(item.tokens)
            slot.n_past += len(item.tokens)
            slot.feed = slot.feed[len(item.tokens) :]
            gen = slot.ticket.generation  # type: ignore[union-attr]
            if gen.request.report_progress and gen.t_first is None:
                self._deliver(slot.ticket, gen.progress(slot.n_past, now))  # type: ignore[arg-type]
            if item.seq_id in logits:
                self._advance(slot, item, logits[item.seq_id], now)

    def _advance(self, slot: Slot, fed: SeqInput, rows, now: float) -> None:  # type: ignore[no-untyped-def]
        """Sample (or verify a guess) from the logits `rows`, then keep in the cache only what
        the sequence really holds, and queue what it holds beyond that for the next step."""
        ticket = slot.ticket
        assert ticket is not None
        gen = ticket.generation
        drafts, slot.drafts = slot.drafts, []
        try:
            events = gen.verify(rows, drafts, now) if drafts else gen.step(rows[-1], now)
        except Exception as exc:  # e.g. a constraint failure: this request fails, others go on
            log.warning("%s failed: %s", gen.request.label, exc)
            self.stats.requests_failed += 1
            self._deliver(ticket, Failed(str(exc)))
            self._release(slot, keep_cache=True)
            return
        for event in events:
            self._deliver(ticket, event)
        if drafts:  # the guess's refused tail leaves the cache
            start = fed.pos - gen.n_prompt
            valid = fed.pos + common_prefix(list(fed.tokens), gen.tokens[start:])
            if valid < slot.n_past:
                self.engine.drop(slot.id, valid)
                del slot.cached[valid:]
                slot.n_past = valid
        if gen.finish is not None:
            self._finish(slot)
            return
        slot.feed = gen.tokens[slot.n_past - gen.n_prompt :]
        room = self.n_ctx_slot - slot.n_past - len(slot.feed) - 1
        if self.shared_cache:  # a guess must not take the cells the others' next tokens need
            held = sum(s.n_past + len(s.feed) + 1 for s in self.slots if s.busy)
            room = min(room, self.engine.n_ctx - held)
        slot.drafts = gen.next_draft(room)

    def _finish(self, slot: Slot) -> None:
        ticket = slot.ticket
        assert ticket is not None and ticket.generation.finish is not None
        gen = ticket.generation
        self._deliver(
            ticket,
            Done(
                gen.finish,
                tuple(gen.tokens),
                gen.n_prompt,
                gen.timings,
                gen.reasoning_tail,
                gen.tail_calls,
                gen.calls,
            ),
        )
        t = gen.timings
        self._count(t)
        rate = t.predicted_n / t.predicted_ms * 1000.0 if t.predicted_ms > 0 else 0.0
        log.info(
            "%s: prompt %d tokens (%d cached), generated %d tokens, %.1f tok/s, %s",
            gen.request.label,
            gen.n_prompt,
            t.cached_n,
            t.predicted_n,
            rate,
            gen.finish.describe(),
        )
        self._release(slot, keep_cache=True)

    def _count(self, t: Timings) -> None:
        st = self.stats
        st.requests_finished += 1
        st.prompt_tokens += t.prompt_n
        st.prompt_seconds += t.prompt_ms / 1000.0
        st.generated_tokens += t.predicted_n
        st.generation_seconds += t.predicted_ms / 1000.0

    @property
    def n_running(self) -> int:
        return sum(s.busy for s in self.slots)

    def _release(self, slot: Slot, keep_cache: bool) -> None:
        if not keep_cache:
            self.engine.drop(slot.id, 0)
            slot.cached = []
        slot.ticket = None
        slot.feed = []
        slot.drafts = []
        slot.n_past = len(slot.cached)
        slot.last_used = time.monotonic()

    def _deliver(self, ticket: Ticket, event: Event) -> None:
        if ticket.cancelled:
            return
        try:
            ticket.sink(event)
        except Exception:  # a broken consumer must not stop the worker
            log.exception("event sink failed")

    def slot_states(self) -> list[dict[str, object]]:
        out = []
        for s in self.slots:
            gen = s.ticket.generation if s.ticket else None
            out.append(
                {
                    "id": s.id,
                    "n_ctx": self.n_ctx_slot,
                    "is_processing": s.busy,
                    "n_cached": len(s.cached),
                    "task": gen.request.label if gen else None,
                    "n_decoded": len(gen.tokens) if gen else 0,
                }
            )
        return out
