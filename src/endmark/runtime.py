"""The loaded model as the HTTP layer and the CLI see it: prepare a request, stream its events,
embed, read tokens, read the model's facts, close.

Requests are prepared by `prepare` (the one place defaults and policies are resolved) and run
by the scheduler on its own thread; `stream_many` bridges that thread to asyncio. The runtime
is built by `loading`. Nothing here touches logits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from endmark.adapters import Adapters
from endmark.constraints import ConstraintCompiler
from endmark.detokenize import piece_text
from endmark.embeddings import EUCLIDEAN, normalize
from endmark.engine import Engine
from endmark.generation import Done, Event, Failed, GenerationRequest
from endmark.infill import InfillLimits, InfillParts, infill_tokens
from endmark.invalid import InvalidRequest
from endmark.loop_inbox import Mailbox, inbox_of
from endmark.prepare import Learned, Preparer
from endmark.rerank import RERANK_TEMPLATE_KEY, rerank_tokens, reranking_problem
from endmark.scheduler import Scheduler, Sink, Stats
from endmark.settings import Settings
from endmark.spec import ChatInput, RequestSpec

# How long a request may take to prepare when it compiles a constraint. llguidance's limits end
# every compile by themselves well before (a 50,000-value enum takes ~0.3 s); this is the
# backstop that answers the client when a machine is too busy for even that.
PREPARE_TIMEOUT_S = 5.0
# Inputs up to this size are prepared on the event loop: templating and tokenizing them
# takes less than the hop to a worker thread and back (~0.5 ms of the time to first token).
INLINE_INPUT = 4096


def held(sink: Sink) -> Sink:
    """`sink` given a generation's events only when it ends (`Done`, `Failed`), all at once,
    in order. Called on the scheduler's thread only, as every sink is."""
    events: list[Event] = []

    def hold(event: Event) -> None:
        events.append(event)
        if isinstance(event, (Done, Failed)):
            for each in events:
                sink(each)
            events.clear()

    return hold


@dataclass(frozen=True)
class Activity:
    """The scheduler's totals since start and its gauges now, as `/metrics` reads them."""

    stats: Stats
    running: int
    queued: int
    slots: int


@dataclass
class Runtime:
    engine: Engine
    scheduler: Scheduler
    settings: Settings
    learned: Learned  # the template, the EOG set, the call and think formats
    model_path: Path
    alias: str
    constraints: ConstraintCompiler | None = None
    prepare_timeout: float = PREPARE_TIMEOUT_S
    adapters: Adapters = field(default_factory=Adapters)  # LoRA: the files, global scales
    _prepare: Preparer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._prepare = Preparer(
            self.engine, self.settings, self.learned, self.constraints, self.adapters
        )

    # -- requests ---------------------------------------------------------------------------

    def prepare(self, spec: RequestSpec, counting: bool = False) -> list[GenerationRequest]:
        """The requests a spec makes: one per prompt and choice. A prompt that does not fit a
        slot's context is refused here, before any response starts, naming the spec's prompt
        field (`ContextExceeded`); requests made only for `counting` their tokens are not."""
        requests = self._prepare(spec)
        if not counting:
            for request in requests:
                self.scheduler.check_fits(len(request.prompt), spec.prompt_param)
        return requests

    async def prepare_async(
        self, spec: RequestSpec, counting: bool = False
    ) -> list[GenerationRequest]:
        """`prepare` on a worker thread, as the server calls it: compiling a constraint (a
        large schema, a grammar) takes a while, and meanwhile the event loop goes on serving
        `/health` and every other request. A constraint not compiled within
        `prepare_timeout` is refused (a 400 naming its field); the compile, bounded by
        llguidance's limits, ends by itself, unwaited for."""
        param = constrained_field(spec)
        if param is None and input_size(spec) <= INLINE_INPUT:
            return self.prepare(spec, counting)  # quicker than the hop to a thread and back
        work = asyncio.to_thread(self.prepare, spec, counting)
        try:
            if param is None:
                return await work
            return await asyncio.wait_for(work, self.prepare_timeout)
        except TimeoutError:
            message = (
                f"{param}: the constraint is too large or too complex to compile within the "
                f"server's limits ({self.prepare_timeout:g} s)"
            )
            raise InvalidRequest(message, param) from None
        except RecursionError:
            raise InvalidRequest("the request is nested too deeply", param) from None

    def apply_template(self, chat: ChatInput) -> str:
        """The prompt a chat turn gets (llama-server's `/apply-template`)."""
        shape = (chat.add_generation_prompt, chat.continue_final_message)
        return self._prepare.chat_prompt(chat.messages, *shape, chat.tools)

    def stream(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        """One request's events; see `stream_many`."""

        many = self.stream_many([request])  # submitted here, not on first iteration

        async def only() -> AsyncGenerator[Event, None]:
            async with aclosing(many) as events:
                async for _, event in events:
                    yield event

        return only()

    def stream_many(
        self, requests: Sequence[GenerationRequest], whole: bool = False
    ) -> AsyncGenerator[tuple[int, Event], None]:
        """Submit now (so a refusal is raised here, before any response starts) and return
        `(index, event)` pairs as the worker produces them; closing early cancels the rest.

        `whole`: the caller reads only whole answers, so a generation's events are held on
        the worker's side and reach the loop together when it ends: one wake-up of the loop
        for the answer, not one a token, each of which runs beside the decode's threads."""
        inbox = inbox_of(asyncio.get_running_loop())
        queue: Mailbox[tuple[int, Event]] = Mailbox()
        tickets = []
        try:
            for i, request in enumerate(requests):

                def sink(event: Event, i: int = i) -> None:
                    inbox.put(queue, (i, event))

                tickets.append(self.scheduler.submit(request, held(sink) if whole else sink))
        except Exception:
            for ticket in tickets:
                self.scheduler.cancel(ticket)
            raise

        async def events() -> AsyncGenerator[tuple[int, Event], None]:
            running = set(range(len(tickets)))
            try:
                while running:
                    i, event = await queue.get()
                    if isinstance(event, (Done, Failed)):
                        running.discard(i)
                    yield i, event
            finally:
                for i in running:
                    self.scheduler.cancel(tickets[i])

        return events()

    # -- LoRA adapters (llama-server's /lora-adapters) -----------------------------------------

    def lora_adapters(self) -> list[dict[str, object]]:
        """The loaded adapters with their global scales."""
        return self.adapters.listing()

    def set_lora_scales(self, entries: Sequence[tuple[int, float]]) -> None:
        """New global scales (adapters left out: 0), for requests prepared from now on;
        InvalidRequest for an unknown id or a scale out of range."""
        self.adapters.set_global(entries)

    async def end_reasoning(self, control_id: str) -> bool | None:
        """Close the thinking of the running completion `control_id` (None: none runs)."""
        return await asyncio.wrap_future(self.scheduler.end_reasoning(control_id))

    def fail_all(self, message: str) -> None:
        """End every running and queued request with this error (a shutdown's last word)."""
        self.scheduler.fail_all(message)

    # -- embeddings -------------------------------------------------------------------------

    async def embed(
        self, inputs: Sequence[str | Sequence[int]], norm: int = EUCLIDEAN
    ) -> tuple[list[np.ndarray], int]:
        """Vectors for texts or token lists (one per input, or a row per token when pooling is
        `none`), and the tokens they took. Decoded on the scheduler's thread, between steps."""
        if not inputs:
            raise InvalidRequest("the input is empty", "input")
        lists = []
        for item in inputs:
            tokens = self.engine.tokenize(item, True, True) if isinstance(item, str) else item
            self.check_token_ids(tokens, "input")
            if not tokens:
                raise InvalidRequest("an input is empty", "input")
            lists.append(list(tokens))
        embedder = lambda: self.engine.embedder(self.settings.pooling)  # noqa: E731
        # identical inputs are embedded once: in one batch they get one and the same vector
        unique = list(dict.fromkeys(map(tuple, lists)))
        try:
            found, pooling = await asyncio.wrap_future(
                self.scheduler.call(lambda: (embedder().embed(unique), embedder().pooling))
            )
        except ValueError as exc:
            raise InvalidRequest(str(exc), "input") from None
        by_input = dict(zip(unique, found, strict=True))
        vectors = [by_input[tuple(tokens)] for tokens in lists]
        self.scheduler.stats.prompt_tokens += sum(map(len, unique))  # as llama-server counts
        self.scheduler.stats.decodes += 1
        if pooling != "none":
            vectors = [normalize(v, norm) for v in vectors]
        return vectors, sum(map(len, lists))

    async def embedding_pooling(self) -> str:
        """How embeddings pool (the embedding context is made, on the scheduler's thread, if
        it was not yet)."""
        pooling = self.settings.pooling
        made = self.scheduler.call(lambda: self.engine.embedder(pooling).pooling)
        return await asyncio.wrap_future(made)

    # -- infill and reranking ---------------------------------------------------------------

    def infill_prompt(self, parts: InfillParts) -> list[int]:
        """An infill's prompt tokens (llama-server's pattern, within its batch and context
        limits); a 400 for a model without FIM tokens."""
        s = self.settings
        limits = InfillLimits(s.batch_size, s.n_predict, self.n_ctx_slot, s.spm_infill)
        return infill_tokens(parts, self.engine.vocab, self.engine.tokenize, limits)

    async def reranking_problem(self) -> tuple[int, str] | None:
        """Why this server cannot rerank (a status and a message), or None."""
        pooling = self.settings.pooling
        made = self.scheduler.call(lambda: self.engine.embedder(pooling))
        embedder = await asyncio.wrap_future(made)
        return reranking_problem(embedder.rank_head, embedder.pooling)

    async def rerank(self, query: str, documents: Sequence[str]) -> list[tuple[float, int]]:
        """Each document's score and the tokens its prompt took, in the documents' order."""
        template = self.engine.metadata(RERANK_TEMPLATE_KEY)
        vocab, tokenize = self.engine.vocab, self.engine.tokenize
        prompts = [rerank_tokens(query, d, vocab, tokenize, template) for d in documents]
        embedder = lambda: self.engine.embedder(self.settings.pooling)  # noqa: E731
        try:
            rows = await asyncio.wrap_future(self.scheduler.call(lambda: embedder().embed(prompts)))
        except ValueError as exc:
            raise InvalidRequest(str(exc), "documents") from None
        return [(float(row[0]), len(p)) for row, p in zip(rows, prompts, strict=True)]

    # -- tokens -----------------------------------------------------------------------------

    def tokenize(
        self, content: str, add_special: bool, parse_special: bool, with_pieces: bool
    ) -> list[int] | list[dict[str, object]]:
        tokens = self.engine.tokenize(content, add_special, parse_special)
        if not with_pieces:
            return tokens
        pieces = self.engine.vocab.special_pieces
        return [{"id": t, "piece": piece_text(pieces[t])} for t in tokens]

    def detokenize(self, tokens: Sequence[int]) -> str:
        self.check_token_ids(tokens, "tokens")
        pieces = self.engine.vocab.special_pieces
        return b"".join(pieces[t] for t in tokens).decode("utf-8", errors="replace")

    def prompt_text(self, tokens: Sequence[int]) -> str:
        """A prompt as text, special tokens written out (llama-server's `__verbose.prompt`)."""
        return self.detokenize(tokens)

    def check_token_ids(self, tokens: Sequence[int], param: str) -> None:
        self._prepare.check_token_ids(tokens, param)

    def token_text(self, token: int) -> str:
        return self.engine.vocab.text(token)

    def token_bytes(self, token: int) -> list[int]:
        return list(self.engine.vocab.special_pieces[token])

    # -- the model's facts, for `/props`, `/v1/models`, `/api/show`, `/slots`, `/metrics` ---

    @property
    def n_ctx(self) -> int:
        return self.engine.n_ctx

    @property
    def n_ctx_slot(self) -> int:
        return self.scheduler.n_ctx_slot

    @property
    def n_slots(self) -> int:
        return len(self.scheduler.slots)

    @property
    def n_vocab(self) -> int:
        return self.engine.vocab.n_vocab

    def model_facts(self) -> dict[str, Any]:
        return self.engine.model_facts()

    def eog_tokens(self) -> list[dict[str, object]]:
        return [t.as_dict() for t in self.learned.eog.tokens.values()]

    def tool_call_format(self) -> dict[str, Any]:
        return self._prepare.tool_call_format()

    def slot_states(self) -> list[dict[str, object]]:
        return self.scheduler.slot_states()

    async def slot_action(self, slot_id: int, action: str, filename: object) -> dict[str, object]:
        """llama-server's `POST /slots/{id}?action=save|restore|erase` (SlotFileError when
        it cannot be done)."""
        if not 0 <= slot_id < self.n_slots:
            raise InvalidRequest("Invalid slot ID", "id_slot")
        return await asyncio.wrap_future(self.scheduler.slot_action(slot_id, action, filename))

    def prompt_cache(self) -> dict[str, Any] | None:
        """The prompt cache's hits, misses, bytes and restore time; None without one."""
        states = self.scheduler.table.states
        return states.cache.summary() if states is not None and states.cache else None

    def activity(self) -> Activity:
        s = self.scheduler
        return Activity(s.stats, s.n_running, s.n_queued, len(s.slots))

    def close(self) -> None:
        self.scheduler.stop()
        self.engine.close()


def input_size(spec: RequestSpec) -> int:
    """About how many characters a spec's preparation templates and tokenizes."""
    if isinstance(spec.input, ChatInput):
        return sum(len(str(value)) for m in spec.input.messages for value in m.values())
    return sum(
        len(p) if isinstance(p, str) else sum(len(x) if isinstance(x, str) else 1 for x in p)
        for p in spec.input
    )


def constrained_field(spec: RequestSpec) -> str | None:
    """The field whose constraint `prepare` compiles (the schema or grammar, else tools a
    call must or may follow), or None when it compiles none."""
    if spec.constraint is not None:
        return spec.constraint.field
    tools = spec.input.tools if isinstance(spec.input, ChatInput) else None
    return "tools" if tools is not None and tools.choice != "none" else None
