"""The loaded model and its services: what the HTTP layer and the CLI call.

It turns plain request values into engine-neutral `GenerationRequest`s and bridges the
scheduler's worker thread to asyncio, so the HTTP layer never touches tokens or logits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from endmark.detokenize import piece_text
from endmark.endings import EndPolicy, EogSet
from endmark.engine.llamacpp import LlamaCppEngine
from endmark.generation import (
    Done,
    Event,
    Failed,
    GenerationRequest,
    InvalidRequest,
    tokenize_prompt,
)
from endmark.models import model_alias, resolve_model
from endmark.sampling import SamplingParams
from endmark.scheduler import Scheduler
from endmark.settings import Settings

log = logging.getLogger("endmark")


@dataclass
class Runtime:
    engine: LlamaCppEngine
    eog: EogSet
    scheduler: Scheduler
    model_path: Path
    alias: str
    settings: Settings

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

    def check_token_ids(self, tokens: Sequence[int], param: str) -> None:
        n = self.engine.vocab.n_vocab
        for t in tokens:
            if not 0 <= t < n:
                raise InvalidRequest(f"token id {t} is outside the vocabulary (0..{n - 1})", param)

    def logit_bias(self, entries: Sequence[tuple[int | str, float | bool]]) -> dict[int, float]:
        """llama.cpp's forms: a token id or a text (all its tokens), and a bias or `false` (ban)."""
        bias: dict[int, float] = {}
        for key, value in entries:
            if value is True:
                continue
            amount = float("-inf") if value is False else float(value)
            ids = self.engine.tokenize(key, False, False) if isinstance(key, str) else [key]
            self.check_token_ids(ids, "logit_bias")
            for t in ids:
                bias[t] = amount
        return bias

    def token_text(self, token: int) -> str:
        return self.engine.vocab.text(token)

    def token_bytes(self, token: int) -> list[int]:
        return list(self.engine.vocab.special_pieces[token])

    # -- generation -------------------------------------------------------------------------

    def make_request(
        self,
        prompt: str | Sequence[str | int],
        sampling: SamplingParams,
        n_predict: int = -1,
        stop: Sequence[str] = (),
        ignore_eos: bool = False,
        cache_prompt: bool = True,
        label: str = "generate",
    ) -> GenerationRequest:
        vocab = self.engine.vocab
        tokens = tokenize_prompt(prompt, self.engine.tokenize, vocab.n_vocab)
        eog, words = self._split_stops(stop)
        policy = EndPolicy(eog, tuple(words), n_predict, ignore_eos)
        return GenerationRequest(tokens, sampling, policy, label, cache_prompt)

    def _split_stops(self, stop: Sequence[str]) -> tuple[EogSet, list[str]]:
        """A stop entry that is exactly one control token ends like an EOG token (rule 1)."""
        control, words = [], []
        for s in stop:
            ids = self.engine.tokenize(s, False, True) if s else []
            if len(ids) == 1 and ids[0] in self.engine.vocab.control:
                control.append(ids[0])
            elif s:
                words.append(s)
        return self.eog.with_stop_tokens(self.engine.vocab, control), words

    def stream(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        """Submit now (so a refusal is raised here, before any response starts) and return
        the events as the worker produces them; closing the generator early cancels."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event] = asyncio.Queue()

        def sink(event: Event) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        ticket = self.scheduler.submit(request, sink)

        async def events() -> AsyncGenerator[Event, None]:
            finished = False
            try:
                while True:
                    event = await queue.get()
                    yield event
                    if isinstance(event, (Done, Failed)):
                        finished = True
                        return
            finally:
                if not finished:
                    self.scheduler.cancel(ticket)

        return events()

    def eog_tokens(self) -> list[dict[str, object]]:
        return [t.as_dict() for t in self.eog.tokens.values()]

    def close(self) -> None:
        self.scheduler.stop()
        self.engine.close()


def load_runtime(settings: Settings, progress: Callable[[float], None] | None = None) -> Runtime:
    path = resolve_model(settings.model)
    engine = LlamaCppEngine(
        str(path),
        n_ctx=settings.ctx_size,
        n_threads=settings.threads,
        n_seq_max=settings.parallel,
        n_batch=settings.batch_size,
        progress=progress,
    )
    eog = EogSet.from_vocab(engine.vocab)
    log.info(
        "end-of-generation tokens: %s",
        ", ".join(f"{t.text} (id {t.id}, {'+'.join(t.sources)})" for t in eog.tokens.values()),
    )
    scheduler = Scheduler(engine, eog, settings.parallel, settings.batch_size, settings.queue_size)
    scheduler.start()
    alias = settings.alias or model_alias(path)
    return Runtime(engine, eog, scheduler, path, alias, settings)
