"""The loaded model and its services: what the HTTP layer and the CLI call.

It turns plain request values into engine-neutral `GenerationRequest`s and bridges the
scheduler's worker thread to asyncio, so the HTTP layer never touches tokens or logits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from endmark.calls import (
    GENERIC,
    CallStrategy,
    Reasoning,
    ThinkFormat,
    learn_call_strategy,
    learn_think_format,
)
from endmark.channels import ChannelSplitter
from endmark.chat import (
    NativeFormats,
    Template,
    TemplateChoice,
    TemplateRefused,
    TemplateRenderError,
    builtin_for_vocab,
    continue_final,
    end_of_turn_markers,
    load_template,
)
from endmark.constraints import Constraint, ConstraintCompiler, ConstraintSpec
from endmark.detokenize import piece_text
from endmark.drafts import DraftSettings
from endmark.embeddings import EUCLIDEAN, normalize
from endmark.endings import EndPolicy, EogSet, printable
from endmark.engine.llamacpp import ContextOptions, LlamaCppEngine
from endmark.generation import (
    Done,
    Event,
    Failed,
    GenerationRequest,
    tokenize_prompt,
)
from endmark.invalid import InvalidRequest
from endmark.models import model_alias, resolve_model
from endmark.sampling import SamplingParams
from endmark.scheduler import Scheduler
from endmark.settings import Settings
from endmark.tools import ToolRequest

log = logging.getLogger("endmark")
JSON_KINDS = ("json_schema", "json_object")


@dataclass
class Runtime:
    engine: LlamaCppEngine
    eog: EogSet
    scheduler: Scheduler
    model_path: Path
    alias: str
    settings: Settings
    template: Template | None = None
    template_error: str | None = None
    constraints: ConstraintCompiler | None = None
    call_format: CallStrategy | None = None  # how the template writes calls; None: generic
    think_format: ThinkFormat | None = None  # how the model thinks, if it does

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
        try:
            vectors, pooling = await asyncio.wrap_future(
                self.scheduler.call(lambda: (embedder().embed(lists), embedder().pooling))
            )
        except ValueError as exc:
            raise InvalidRequest(str(exc), "input") from None
        if pooling != "none":
            vectors = [normalize(v, norm) for v in vectors]
        return vectors, sum(map(len, lists))

    async def embedding_pooling(self) -> str:
        """How embeddings pool (the embedding context is made, on the scheduler's thread, if
        it was not yet)."""
        pooling = self.settings.pooling
        made = self.scheduler.call(lambda: self.engine.embedder(pooling).pooling)
        return await asyncio.wrap_future(made)

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
        add_special: bool = True,
        constraint: ConstraintSpec | None = None,
        time_limit_ms: int = 0,
        report_progress: bool = False,
        timings_per_token: bool = False,
        drafts: DraftSettings | None | Literal["server"] = "server",
    ) -> GenerationRequest:
        vocab = self.engine.vocab
        tokens = tokenize_prompt(prompt, self.engine.tokenize, vocab.n_vocab, add_special)
        eog, words = self._split_stops(stop)
        policy = EndPolicy(eog, tuple(words), self.n_predict(n_predict), ignore_eos, time_limit_ms)
        matcher = self._matcher(constraint) if constraint is not None else None
        return GenerationRequest(
            tokens,
            sampling,
            policy,
            label,
            cache_prompt,
            matcher,
            report_progress=report_progress,
            timings_per_token=timings_per_token,
            drafts=self._drafts_for_sampling(
                self.drafts_for() if drafts == "server" else drafts, sampling
            ),
            fast_forward=self.settings.fast_forward,
            close_json=self._json_tokens if constraint and constraint.kind in JSON_KINDS else None,
        )

    def _json_tokens(self, text: str) -> list[int]:
        """A closing text as tokens, without a SentencePiece dummy-prefix space."""
        assert self.constraints is not None
        return list(self.constraints.tokenizer.tokenize_str(text))

    def drafts_for(
        self, n_max: int | None = None, n_min: int | None = None
    ) -> DraftSettings | None:
        """Prompt-lookup drafts as the server is set (`--spec`, `--draft-max`, `--draft-min`),
        or as one request asks (`speculative.n_max`: 0 turns them off)."""
        s = self.settings
        asked = n_max is not None
        n_max = s.draft_max if n_max is None else n_max
        if not s.spec.startswith("ngram") or n_max <= 0:
            return None
        return DraftSettings(n_max, s.draft_min if n_min is None else n_min, asked=asked)

    @staticmethod
    def _drafts_for_sampling(
        drafts: DraftSettings | None, sampling: SamplingParams
    ) -> DraftSettings | None:
        """Prompt-lookup drafts by default only for greedy decoding. Sampling is exact with
        them too, but a batched decode rounds differently from a one-token one, so a seed
        would no longer give the text it gives without drafts (llama-server's own tests
        expect a seeded request to repeat); a request that sets `speculative.n_max` gets
        them at any temperature."""
        greedy = sampling.temperature <= 0 or sampling.top_k == 1
        return drafts if drafts is None or drafts.asked or greedy else None

    def n_predict(self, asked: int) -> int:
        """The request's limit, else the server's `-n` (llama-server's meaning), within the
        hard cap `--n-predict-cap`."""
        n = asked if asked >= 0 else self.settings.n_predict
        cap = self.settings.n_predict_cap
        return cap if cap >= 0 and (n < 0 or n > cap) else n

    def prompt_text(self, tokens: Sequence[int]) -> str:
        """A prompt as text, special tokens written out (llama-server's `__verbose.prompt`)."""
        return self.detokenize(tokens)

    def _matcher(self, spec: ConstraintSpec) -> Constraint:
        assert self.constraints is not None
        return self.constraints.matcher(self.constraints.compile(spec))

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

    def render_chat(
        self,
        messages: Sequence[dict[str, Any]],
        add_generation_prompt: bool = True,
        continue_final_message: bool | None = None,
        **extra: Any,
    ) -> str:
        """The prompt the model's chat template (or `--chat-template`) makes of `messages`.

        As in llama-server, a last assistant message is continued, not closed (a prefill),
        unless `continue_final_message` is false."""
        if self.template is None:
            raise InvalidRequest(
                self.template_error
                or "this model has no chat template: start endmark with --chat-template NAME|FILE",
                "messages",
            )
        last_is_assistant = bool(messages) and messages[-1].get("role") == "assistant"
        if continue_final_message is None and last_is_assistant:
            if len(messages) >= 2 and messages[-2].get("role") == "assistant":
                raise InvalidRequest(
                    "cannot have 2 or more assistant messages at the end of the list", "messages"
                )
            continue_final_message, add_generation_prompt = True, False
        if continue_final_message and add_generation_prompt:
            raise InvalidRequest(
                "cannot set both add_generation_prompt and continue_final_message to true",
                "continue_final_message",
            )
        if continue_final_message and not last_is_assistant:
            raise InvalidRequest(
                "continue_final_message needs a last assistant message", "messages"
            )
        try:
            if continue_final_message:
                return continue_final(self.template, messages, **extra)
            return self.template.render(messages, add_generation_prompt, **extra)
        except (TemplateRenderError, TemplateRefused) as exc:
            message = f"the chat template refused these messages: {exc}"
            raise InvalidRequest(message, "messages") from None

    def chat_prompt(
        self,
        messages: Sequence[dict[str, Any]],
        add_generation_prompt: bool = True,
        continue_final_message: bool | None = None,
        tools: ToolRequest | None = None,
    ) -> str:
        """The prompt of a chat turn, as `/apply-template` shows it. Tools offered are given to
        a template that knows them; one that does not gets endmark's generic format, described
        in a system message, and the history's calls written in it."""
        shape = (add_generation_prompt, continue_final_message)
        if tools is None or tools.choice == "none":
            return self.render_chat(messages, *shape)
        history, variables = (self.call_format or GENERIC).prompt_inputs(messages, tools)
        return self.render_chat(history, *shape, **variables)

    def chat_request(
        self,
        messages: Sequence[dict[str, Any]],
        sampling: SamplingParams,
        add_generation_prompt: bool = True,
        continue_final_message: bool | None = None,
        tools: ToolRequest | None = None,
        reasoning: Reasoning | None = None,
        **kwargs: Any,
    ) -> GenerationRequest:
        reasoning = reasoning or Reasoning(
            self.settings.reasoning_format, self.settings.reasoning_budget
        )
        prompt = self.chat_prompt(messages, add_generation_prompt, continue_final_message, tools)
        # A template that writes the BOS text itself must not get a second BOS.
        bos = self.template.bos_token if self.template else ""
        add_special = not (bos and prompt.startswith(bos))
        request = self.make_request(prompt, sampling, add_special=add_special, **kwargs)
        if tools is not None and tools.choice != "none":
            self._constrain_calls(request, tools)
        return self._with_thinking(request, reasoning)

    def _with_thinking(self, request: GenerationRequest, reasoning: Reasoning) -> GenerationRequest:
        """Thinking goes to its own channel (unless `reasoning_format` is none); at the budget,
        its close marker is forced. A constraint (a schema, a forced tool) applies once the
        thinking is over."""
        think = self.think_format
        if think is None or reasoning.format == "none":
            return request
        calls = request.channels.calls_format if request.channels else None
        tools = request.channels.tools if request.channels else ()
        request.channels = ChannelSplitter(calls, think, tools)
        request.think_close = tuple(self.engine.tokenize(think.end, False, True))
        request.reasoning_budget = reasoning.budget
        return request

    def _constrain_calls(self, request: GenerationRequest, tools: ToolRequest) -> None:
        """A turn that may (`auto`) or must (`required`, a named tool) call tools, in the
        template's own call format or endmark's generic one: a forced call is constrained from
        the first token, an optional one from the moment the model starts it."""
        fmt = self.call_format or GENERIC
        control = {self.token_text(t): t for t in self.engine.vocab.control}
        request.channels = ChannelSplitter(fmt, tools=tools.tools)
        if tools.forced:
            grammar = fmt.grammar(tools, control)
            request.constraint = self._matcher(ConstraintSpec("lark", grammar, "tools"))
        else:
            lazy = fmt.grammar(tools, control, lazy=True)
            request.on_call = lambda text: self._call_matcher(lazy, text)

    def _call_matcher(self, grammar: str, text_so_far: str) -> Constraint:
        assert self.constraints is not None
        spec = ConstraintSpec("lark", grammar, "tools")
        return self.constraints.matcher(self.constraints.compile(spec), text_so_far)

    def tool_call_format(self) -> dict[str, Any]:
        """How this model's tool calls are written: learned from its template, or generic."""
        fmt = self.call_format or GENERIC
        return {**fmt.describe(), "learned_from_template": self.call_format is not None}

    def stream(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        """One request's events; see `stream_many`."""

        many = self.stream_many([request])  # submitted here, not on first iteration

        async def only() -> AsyncGenerator[Event, None]:
            async with aclosing(many) as events:
                async for _, event in events:
                    yield event

        return only()

    def stream_many(
        self, requests: Sequence[GenerationRequest]
    ) -> AsyncGenerator[tuple[int, Event], None]:
        """Submit now (so a refusal is raised here, before any response starts) and return
        `(index, event)` pairs as the worker produces them; closing early cancels the rest."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        tickets = []
        try:
            for i, request in enumerate(requests):

                def sink(event: Event, i: int = i) -> None:
                    loop.call_soon_threadsafe(queue.put_nowait, (i, event))

                tickets.append(self.scheduler.submit(request, sink))
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

    def eog_tokens(self) -> list[dict[str, object]]:
        return [t.as_dict() for t in self.eog.tokens.values()]

    def close(self) -> None:
        self.scheduler.stop()
        self.engine.close()


def load_runtime(settings: Settings, progress: Callable[[float], None] | None = None) -> Runtime:
    path = resolve_model(settings.model)
    options = ContextOptions(
        n_ubatch=settings.ubatch_size,
        n_threads_batch=settings.threads_batch,
        kv_unified=settings.kv_unified,
        type_k=settings.cache_type_k,
        type_v=settings.cache_type_v,
        flash_attn=settings.flash_attn,
        swa_full=settings.swa_full,
    )
    engine = LlamaCppEngine(
        str(path),
        n_ctx=settings.ctx_size,
        n_threads=settings.threads,
        n_seq_max=settings.parallel,
        n_batch=settings.batch_size,
        progress=progress,
        options=options,
    )
    per_slot = (
        "one cache shared by the slots"
        if settings.kv_unified
        else (f"{engine.n_ctx // settings.parallel} tokens per slot")
    )
    log.info(
        "context: %d tokens, %d slots, %s (the model was trained on %d)",
        engine.n_ctx, settings.parallel, per_slot, engine.n_ctx_train,
    )  # fmt: skip
    vocab = engine.vocab
    template: Template | None = None
    template_error: str | None = None
    markers: list[int] = []
    native = NativeFormats(
        frozenset(engine.builtin_template_names()), engine.apply_builtin_template
    )
    choice = TemplateChoice(settings.chat_template, settings.chat_template_file, settings.jinja)
    try:
        template = load_template(
            choice,
            engine.chat_template(),
            vocab.text(vocab.bos) if vocab.bos is not None else "",
            vocab.text(vocab.eos) if vocab.eos is not None else "",
            fallback=builtin_for_vocab({vocab.text(t) for t in vocab.control}),
            native=native,
        )
    except TemplateRefused as exc:
        template_error = str(exc)
        log.error("%s", exc)
    call_format: CallStrategy | None = None
    think_format: ThinkFormat | None = None
    if template is not None:
        log.info("chat template: %s", printable(template.name))
        markers = end_of_turn_markers(template, engine.tokenize, vocab.control)

    elif template_error is None:
        log.warning("the model has no chat template: chat endpoints need --chat-template")
    eog = EogSet.from_vocab(vocab, markers)
    if template is not None:
        # the end of a call is what follows its JSON up to the end of the turn
        call_format = learn_call_strategy(template, [t.text for t in eog.tokens.values()])
        if call_format is not None:
            log.info(
                "tool calls: the template's %s format (%s), %s ... %s", call_format.name,
                call_format.kind, printable(call_format.start), printable(call_format.end),
            )  # fmt: skip
        think_format = learn_think_format(template, {vocab.text(t) for t in vocab.control})
        if think_format is not None:
            opened = " (opened by the prompt)" if think_format.open else ""
            start, end = printable(think_format.start), printable(think_format.end)
            log.info("thinking: %s ... %s%s", start, end, opened)
    log.info(
        "end-of-generation tokens: %s",
        ", ".join(
            f"{printable(t.text)} (id {t.id}, {'+'.join(t.sources)})" for t in eog.tokens.values()
        ),
    )
    scheduler = Scheduler(
        engine,
        eog,
        settings.parallel,
        settings.batch_size,
        settings.queue_size,
        shared_cache=settings.kv_unified,
        cont_batching=settings.cont_batching,
    )
    scheduler.start()
    if settings.embedding:  # made now, on the scheduler's thread, as every use of it is
        pooling = scheduler.call(lambda: engine.embedder(settings.pooling).pooling).result()
        log.info("embeddings: %s pooling", pooling)
    alias = (settings.aliases() or [model_alias(path)])[0]
    constraints = ConstraintCompiler(lambda: engine.lltokenizer(eog.ids()), vocab.n_vocab)
    return Runtime(
        engine,
        eog,
        scheduler,
        path,
        alias,
        settings,
        template,
        template_error,
        constraints,
        call_format,
        think_format,
    )
