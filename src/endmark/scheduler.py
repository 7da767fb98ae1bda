"""Slots and continuous batching: one decode per step advances every running sequence.

A worker thread owns the engine. Requests wait in a bounded FIFO queue, take a free slot (a
llama.cpp sequence id with its own cache), and leave between steps. Each step feeds one token
of every decoding sequence plus prompt chunks of new ones, so a long prompt delays the others
by at most one chunk. Requests under different LoRA configurations are decoded apart, one
decode per configuration in the step (llama.cpp sets adapters per context).
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

from endmark.adapters import group_by_adapters
from endmark.drafts import DecodeCost
from endmark.endings import EndPolicy, EogSet
from endmark.engine import AdapterScales, ChainSettings, DecodeError, Engine, SeqInput
from endmark.events import Event, Failed, Timings
from endmark.generation import Generation
from endmark.invalid import ContextExceeded, InvalidRequest
from endmark.request import GenerationRequest
from endmark.sampling import Chain, chain_fits
from endmark.slot_states import SlotStates
from endmark.slots import Sink, Slot, SlotTable, Ticket, common_prefix
from endmark.thread_names import SCHEDULER, name_this_thread

__all__ = ["QueueFull", "Scheduler", "Sink", "Stats", "Ticket"]

T = TypeVar("T")
log = logging.getLogger("endmark.scheduler")


class QueueFull(RuntimeError):
    """Every slot is busy and the waiting line is full: try again later."""


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
    # llama-server's metrics: cached prompt tokens (not decoded), decode steps after each
    # request's first token (a step that takes several drafted tokens counts once), the
    # decode calls and the busy slots in each, the longest sequence, and checked guesses
    prompt_tokens_cached: int = 0
    generation_steps: int = 0
    decodes: int = 0
    busy_slots: int = 0
    n_tokens_max: int = 0
    draft_tokens: int = 0
    draft_accepted: int = 0
    draft_checks: int = 0
    accepted_per_position: list[int] = field(default_factory=list)
    # the worker thread's CPU inside the backend's compute: the rest of its CPU is endmark's
    decode_cpu_seconds: float = 0.0

    def checked(self, n_drafted: int, n_accepted: int) -> None:
        """A guess of `n_drafted` tokens was checked; its first `n_accepted` were kept."""
        self.draft_tokens += n_drafted
        self.draft_accepted += n_accepted
        self.draft_checks += 1
        per = self.accepted_per_position
        per.extend([0] * (n_drafted - len(per)))
        for i in range(n_accepted):
            per[i] += 1


class Scheduler:
    """Requests in, events out: a bounded queue, the slots, and the worker thread that admits,
    batches, decodes and samples (`step`)."""

    def __init__(
        self,
        engine: Engine,
        eog: EogSet,
        n_slots: int = 1,
        batch_size: int = 512,
        queue_size: int = 64,
        shared_cache: bool = False,
        cont_batching: bool = True,
        states: SlotStates | None = None,
        context_shift: bool = False,
    ) -> None:
        """`shared_cache`: the slots share one cache (llama-server's --kv-unified), so each
        request may use all of it; `cont_batching=False` admits requests only into an idle
        server (llama-server's --no-cont-batching)."""
        self.engine = engine
        self.eog = eog
        self.batch_size = batch_size
        self.queue_size = queue_size
        self.cont_batching = cont_batching
        self.table = SlotTable(engine, n_slots, engine.n_ctx if shared_cache else None, states)
        self.slots = self.table.slots
        self.n_ctx_slot = engine.n_ctx if shared_cache else engine.n_ctx // n_slots
        self.shared_cache = shared_cache
        self.context_shift = context_shift and engine.can_shift()
        self.stats = Stats()
        self._queue: deque[Ticket] = deque()
        self._chores: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._abort: str | None = None
        self._adapters: AdapterScales = ()  # the engine's LoRA configuration now
        self._cost = DecodeCost()  # what a checked guess's rows cost, learnt as it goes
        self._price = 0.0  # the chance a guessed token needs to pay for its row, now
        self._thread = threading.Thread(target=self._run, name="endmark-scheduler", daemon=True)

    # -- called from other threads ----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ends the worker after its current step. It is waited for (a minute at most): the
        engine may be used again at once (a new scheduler, a test), and two threads decoding
        in one llama.cpp context crash it."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=60)
        if self._thread.is_alive():
            log.warning("the scheduler's worker did not stop within a minute")
        elif self.table.states is not None:  # the prompt cache keeps what the slots hold
            self.table.states.save_all(self.slots)

    def submit(self, request: GenerationRequest, sink: Sink) -> Ticket:
        policy = request.policy or EndPolicy(self.eog)
        self.check_fits(len(request.prompt))
        # with context shift a full context goes on: no end for it
        n_ctx = 1 << 62 if self.context_shift else self.n_ctx_slot
        gen = Generation(request, self.engine.vocab, policy, n_ctx, self._chain(request, policy))
        ticket = Ticket(gen, sink)
        with self._cond:
            if len(self._queue) >= self.queue_size:
                raise QueueFull(f"the queue is full ({self.queue_size} waiting)")
            self._queue.append(ticket)
            self._cond.notify_all()
        return ticket

    def _chain(self, request: GenerationRequest, policy: EndPolicy) -> Chain | None:
        """The engine's own sampler chain for a sampled request, where it has one: in C, a
        third of numpy's cost a token (`engine/sampler_chain.py`); it bans what
        `ignore_eos` bans."""
        make = getattr(self.engine, "sampler_chain", None)
        p = request.sampling
        if make is None or not chain_fits(p):
            return None
        banned = policy.eog.ids() if policy.ignore_eos else []
        chain: Chain = make(ChainSettings(p.top_k, p.top_p, p.min_p, p.temperature, p.seed, banned))
        return chain

    def check_fits(self, n_prompt: int, param: str = "prompt") -> None:
        """A prompt must leave a slot's context room for at least one generated token: one of
        `n_ctx_slot` tokens or more is refused (as llama-server refuses it), never cut."""
        if n_prompt >= self.n_ctx_slot:
            raise ContextExceeded(n_prompt, self.n_ctx_slot, param)

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

    def end_reasoning(self, control_id: str) -> Future[bool | None]:
        """Close the thinking of the running request armed with `control_id`, between two
        steps: None when no running request has that id, else whether it was thinking."""

        def end() -> bool | None:
            running = [s.ticket.generation for s in self.table.busy() if s.ticket is not None]
            found = [gen for gen in running if gen.request.control_id == control_id]
            return any([gen.end_reasoning() for gen in found]) if found else None

        return self.call(end)

    @property
    def n_queued(self) -> int:
        return len(self._queue)

    # -- the worker -------------------------------------------------------------------------

    def _run(self) -> None:
        name_this_thread(SCHEDULER)
        while True:
            with self._cond:
                while not (self._stopping or self._queue or self._chores or self.table.busy()):
                    self._cond.wait()
                if self._stopping:
                    break
                if self._abort is not None:
                    self._fail_everything(self._abort)
                    self._abort = None
                    continue
                self._admit()
                chores, self._chores = list(self._chores), deque()
            self._run_chores(chores)
            try:
                self.step()
            except Exception as exc:  # keep serving: fail the running requests, not the server
                log.exception("decode step failed")
                for slot in self.table.busy():
                    self._deliver(slot.ticket, Failed(f"generation failed: {exc}"))  # type: ignore[arg-type]
                    self._release(slot, keep_cache=False)
        self._fail_everything("the server is shutting down")
        for _, future in self._chores:
            future.cancel()

    @staticmethod
    def _run_chores(chores: list[tuple[Callable[[], Any], Future[Any]]]) -> None:
        for fn, future in chores:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except Exception as exc:  # the caller's to handle
                    future.set_exception(exc)

    def _fail_everything(self, message: str) -> None:
        for slot in self.table.busy():
            self._deliver(slot.ticket, Failed(message))  # type: ignore[arg-type]
            self._release(slot, keep_cache=True)
        while self._queue:
            self._deliver(self._queue.popleft(), Failed(message))

    def _admit(self) -> None:
        """Move queued requests into free slots, preferring the slot with the longest match."""
        while self._queue and not self._queue[0].cancelled:
            free = self.table.free()
            if not free or not self.cont_batching and len(free) < len(self.slots):
                return
            ticket = self._queue.popleft()
            cached = self.table.place(ticket)
            progress = ticket.generation.admitted(cached, time.perf_counter())
            if ticket.generation.request.report_progress:
                self._deliver(ticket, progress)
        while self._queue and self._queue[0].cancelled:
            self._queue.popleft()

    def step(self) -> None:
        """One batched decode for every busy slot (one per LoRA configuration), then sampling
        for those that want it."""
        self._drop_cancelled()
        inputs = self._batch()
        for adapters, group in group_by_adapters(inputs, self._adapters_of, self._adapters):
            if adapters != self._adapters:
                self.engine.set_adapters(adapters)
                self._adapters = adapters
            started = time.perf_counter()
            try:
                logits = self.engine.decode(group)
            except DecodeError as exc:
                raise RuntimeError(str(exc)) from exc
            self._priced(group, time.perf_counter() - started)
            self.stats.decode_cpu_seconds = self.engine.compute_cpu_seconds
            self.stats.decodes += 1
            self.stats.busy_slots += len(group)
            now = time.perf_counter()
            for item in group:  # before the next group's decode overwrites the rows
                slot = self.slots[item.seq_id]
                self._fed(slot, item, logits.get(item.seq_id), now)
                self.stats.n_tokens_max = max(self.stats.n_tokens_max, slot.n_past)

    def _priced(self, group: list[SeqInput], seconds: float) -> None:
        """Learn from a decode of generation steps only (a prompt's rows cost another price),
        and set what the next step's guesses must be worth."""
        if all(item.want_logits and item.n_logits == len(item.tokens) for item in group):
            self._cost.add(sum(len(item.tokens) for item in group), seconds)
        self._price = self._cost.price(len(group))

    def _adapters_of(self, item: SeqInput) -> AdapterScales:
        return self.slots[item.seq_id].adapters

    def _drop_cancelled(self) -> None:
        for slot in self.table.busy():
            if slot.ticket is not None and slot.ticket.cancelled:
                self.stats.requests_cancelled += 1
                gen = slot.ticket.generation
                log.info(
                    "%s: prompt %d tokens (%d cached), cancelled after %d tokens: "
                    "the client left",
                    gen.request.label, gen.n_prompt, gen.timings.cached_n, len(gen.tokens),
                )  # fmt: skip
                self._release(slot, keep_cache=True)

    def _batch(self) -> list[SeqInput]:
        """A token for each decoding slot (with its guess to check, if it fits), then prompt
        chunks of the new ones, within `batch_size`."""
        budget = self.batch_size
        inputs: list[SeqInput] = []
        busy = self.table.busy()
        decoding = [s for s in busy if not s.prefilling]
        if self.context_shift:
            for slot in decoding:
                self._shift_if_full(slot)
        even = self._even_length(decoding)
        for slot in decoding + [s for s in busy if s.prefilling]:
            if budget <= 0:
                break
            chunk = slot.feed[:budget]
            done_feeding = len(chunk) == len(slot.feed)
            guess = slot.drafts if done_feeding and len(chunk) + len(slot.drafts) <= budget else []
            guess = guess[: max(0, even - len(chunk))]
            slot.drafts = guess
            inputs.append(SeqInput(slot.id, chunk + guess, slot.n_past,
                                   want_logits=done_feeding, n_logits=1 + len(guess)))  # fmt: skip
            budget -= len(chunk) + len(guess)
        return inputs

    def _even_length(self, decoding: list[Slot]) -> int:
        """The most tokens (fed ones and a guess) each decoding slot may put in the step. With
        a cache per sequence, llama.cpp cuts a batch into micro-batches that take as many
        tokens from every sequence (`split_equal`), each paying a whole read of the weights:
        a guess longer than the others' would cost the step a second pass. So, beside other
        sequences, each guess is cut to the shortest slot's length; a lone sequence (or a
        shared cache) keeps its whole guess."""
        if self.shared_cache or len(decoding) < 2:
            return 1 << 30
        return min(len(s.feed) + len(s.drafts) for s in decoding)

    def _shift_if_full(self, slot: Slot) -> None:
        """llama-server's context shift, once the next token would not fit."""
        if slot.n_past + len(slot.feed) < self.n_ctx_slot:
            return
        gen = slot.ticket.generation  # type: ignore[union-attr]
        add_bos = self.engine.vocab.add_bos
        n = self.table.shift(slot, gen.request.n_keep, gen.n_prompt, self.n_ctx_slot, add_bos)
        gen.shifted += n
        log.warning("%s: context shift, %d tokens dropped", gen.request.label, n)

    def _fed(self, slot: Slot, item: SeqInput, rows: Any, now: float) -> None:
        """A slot's input was decoded: report prompt progress, and sample where it has logits."""
        self.table.fed(slot, list(item.tokens))
        ticket = slot.ticket
        assert ticket is not None
        gen = ticket.generation
        if gen.request.report_progress and gen.t_first is None:
            self._deliver(ticket, gen.progress(slot.n_past, now))
        if rows is not None:
            self._advance(slot, item, rows, now)

    def _advance(self, slot: Slot, fed: SeqInput, rows: Any, now: float) -> None:
        """Sample (or verify a guess) from the logits `rows`, then keep in the cache only what
        the sequence really holds, and queue what it holds beyond that for the next step."""
        ticket = slot.ticket
        assert ticket is not None
        gen = ticket.generation
        drafts, slot.drafts = slot.drafts, []
        ticket.steps += 1
        accepted = gen.timings.draft_n_accepted
        try:
            events = gen.verify(rows, drafts, now) if drafts else gen.step(rows[-1], now)
        except Exception as exc:  # e.g. a constraint failure: this request fails, others go on
            self._fail(slot, exc)
            return
        if drafts:
            self.stats.checked(len(drafts), gen.timings.draft_n_accepted - accepted)
        for event in events:
            self._deliver(ticket, event)
        if drafts:  # the guess's refused tail leaves the cache
            start = fed.pos + slot.shifted - gen.n_prompt
            self.table.trim(slot, fed.pos + common_prefix(list(fed.tokens), gen.tokens[start:]))
        if gen.finish is not None:
            self._finish(slot)
            return
        slot.feed = gen.tokens[slot.n_past + slot.shifted - gen.n_prompt :]
        if not slot.feed:  # a step's several tokens matched the rest of the guess: the cache
            self.table.trim(slot, slot.n_past - 1)  # holds them all, but no logits after them
            slot.feed = gen.tokens[slot.n_past + slot.shifted - gen.n_prompt :]
        room = self.n_ctx_slot - slot.n_past - len(slot.feed) - 1
        if self.shared_cache:  # a guess must not take the cells the others' next tokens need
            held = sum(s.n_past + len(s.feed) + 1 for s in self.table.busy())
            room = min(room, self.engine.n_ctx - held)
        try:
            slot.drafts = gen.next_draft(room, self._price)  # the grammar's forced run may fail
        except Exception as exc:
            self._fail(slot, exc)

    def _fail(self, slot: Slot, exc: Exception) -> None:
        """One generation failed (its constraint, most likely): it ends with a clean error
        (naming the request's field when its constraint failed); the others go on."""
        ticket = slot.ticket
        assert ticket is not None
        log.warning("%s failed: %s", ticket.generation.request.label, exc)
        self.stats.requests_failed += 1
        param = exc.param if isinstance(exc, InvalidRequest) else None  # a ConstraintFailure
        self._deliver(ticket, Failed(str(exc), param))
        self._release(slot, keep_cache=True)

    def _finish(self, slot: Slot) -> None:
        ticket = slot.ticket
        assert ticket is not None and ticket.generation.finish is not None
        gen = ticket.generation
        self._deliver(ticket, gen.result())
        t = gen.timings
        self._count(t, ticket.steps)
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

    def _count(self, t: Timings, steps: int) -> None:
        st = self.stats
        st.requests_finished += 1
        st.prompt_tokens += t.prompt_n
        st.prompt_tokens_cached += t.cached_n
        st.generation_steps += max(0, steps - 1)  # the first token came with the prompt
        st.prompt_seconds += t.prompt_ms / 1000.0
        st.generated_tokens += t.predicted_n
        st.generation_seconds += t.predicted_ms / 1000.0

    @property
    def n_running(self) -> int:
        return len(self.table.busy())

    def _release(self, slot: Slot, keep_cache: bool) -> None:
        self.table.release(slot, keep_cache)

    def _deliver(self, ticket: Ticket, event: Event) -> None:
        if ticket.cancelled:
            return
        try:
            ticket.sink(event)
        except Exception:  # a broken consumer must not stop the worker
            log.exception("event sink failed")

    def slot_action(self, slot_id: int, action: str, filename: object) -> Future[dict[str, object]]:
        """llama-server's slot save, restore and erase, run between two steps."""
        states = self.table.states or SlotStates(self.engine, None, None)
        states.check(action, filename)
        slot = self.slots[slot_id]
        return self.call(lambda: states.act(slot, action, filename, self.n_ctx_slot))

    def slot_states(self) -> list[dict[str, object]]:
        cache = self.table.states.cache if self.table.states is not None else None
        summary = cache.summary() if cache is not None else None
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
                    **({"prompt_cache": summary} if summary is not None else {}),
                }
            )
        return out
