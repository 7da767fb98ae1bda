"""Building a runtime: the model's engine, what its template teaches (end tokens, call and
think formats), the scheduler and the constraint compiler.

`build_runtime` takes any `Engine`, so a scripted test engine serves as well as llama.cpp;
`load_runtime` is the llama.cpp one, from the server's settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from endmark.adapters import Adapters, parse_adapter_files
from endmark.calls import learn_call_strategy, learn_think_format
from endmark.chat import (
    NativeFormats,
    Template,
    TemplateChoice,
    TemplateRefused,
    builtin_for_vocab,
    check_plain_render,
    end_of_turn_markers,
    end_of_turn_text,
    load_template,
)
from endmark.constraints import ConstraintCompiler
from endmark.endings import EogSet, printable
from endmark.engine import Engine
from endmark.models import model_alias, resolve_model
from endmark.prepare import Learned
from endmark.runtime import Runtime
from endmark.scheduler import Scheduler
from endmark.settings import Settings
from endmark.slot_states import slot_states

log = logging.getLogger("endmark")


def load_runtime(settings: Settings, progress: Callable[[float], None] | None = None) -> Runtime:
    """The model of `settings.model` on llama.cpp, served as the settings say."""
    from endmark.engine.llamacpp import ContextOptions, LlamaCppEngine

    path = resolve_model(settings.model)
    options = ContextOptions(
        n_ubatch=settings.ubatch_size,
        n_threads_batch=settings.threads_batch,
        kv_unified=settings.kv_unified,
        type_k=settings.cache_type_k,
        type_v=settings.cache_type_v,
        flash_attn=settings.flash_attn,
        swa_full=settings.swa_full,
        repack=settings.repack,
    )
    engine = LlamaCppEngine(
        str(path),
        n_ctx=settings.ctx_size,
        n_threads=settings.threads,
        n_seq_max=settings.parallel,
        n_batch=settings.batch_size,
        progress=progress,
        options=options,
        lora=[f.path for f in parse_adapter_files(settings.lora)],
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
    return build_runtime(engine, settings, path)


def build_runtime(engine: Engine, settings: Settings, path: Path | None = None) -> Runtime:
    """A running runtime on `engine`: what its template teaches, and a started scheduler."""
    path = path or Path(engine.model_path)
    learned = learn(engine, settings)
    scheduler = Scheduler(
        engine,
        learned.eog,
        settings.parallel,
        settings.batch_size,
        settings.queue_size,
        shared_cache=settings.kv_unified,
        cont_batching=settings.cont_batching,
        states=slot_states(engine, settings),
        context_shift=settings.context_shift,
    )
    scheduler.start()
    if settings.embedding:  # made now, on the scheduler's thread, as every use of it is
        embedder = scheduler.call(lambda: engine.embedder(settings.pooling)).result()
        log.info("embeddings: %s pooling", embedder.pooling)
        if embedder.pooling == "rank" and not embedder.rank_head:  # --rerank on another model
            log.error("reranking: this model has no rank head: /rerank will answer 400")
    alias = (settings.aliases() or [model_alias(path)])[0]
    constraints = constraint_compiler(engine, learned)
    adapters = adapters_of(engine, settings)
    return Runtime(engine, scheduler, settings, learned, path, alias, constraints,
                   adapters=adapters)  # fmt: skip


def adapters_of(engine: Engine, settings: Settings) -> Adapters:
    """The LoRA adapters the engine loaded from `--lora`/`--lora-scaled`, at their scales
    (all 0 with `--lora-init-without-apply`)."""
    files = parse_adapter_files(settings.lora)
    if not files:
        return Adapters()
    scales = [0.0 if settings.lora_init_without_apply else f.scale for f in files]
    for f, scale in zip(files, scales, strict=True):
        log.info("LoRA adapter: %s at scale %g", f.path, scale)
    return Adapters([f.path for f in files], scales, engine.adapter_facts())


def constraint_compiler(engine: Engine, learned: Learned) -> ConstraintCompiler:
    """Constraints for this model: its llguidance tokenizer ends on the whole EOG set."""
    eog_ids = learned.eog.ids()
    return ConstraintCompiler(lambda: engine.lltokenizer(eog_ids), engine.vocab.n_vocab)


def learn(engine: Engine, settings: Settings) -> Learned:
    """The chat template (the model's, or `--chat-template`), the end-of-generation set it
    implies, and the call and think formats learned from it."""
    vocab = engine.vocab
    template: Template | None = None
    template_error: str | None = None
    markers: list[int] = []
    end_text = ""
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
    if template is not None:
        log.info("chat template: %s", printable(template.name))
        check_plain_render(template)  # one that cannot stops loading, with its message
        markers = end_of_turn_markers(template, engine.tokenize, vocab.control)
        end_text = end_of_turn_text(template, engine.tokenize, vocab.control)
    elif template_error is None:
        log.warning("the model has no chat template: chat endpoints need --chat-template")
    eog = EogSet.from_vocab(vocab, markers)
    learned = Learned(eog, template, template_error, end_text=end_text)
    if template is not None:
        # the end of a call is what follows its JSON up to the end of the turn
        call_format = learn_call_strategy(template, [t.text for t in eog.tokens.values()])
        if call_format is not None:
            log.info(
                "tool calls: the template's %s format (%s), %s ... %s", call_format.name,
                call_format.kind, printable(call_format.start), printable(call_format.end),
            )  # fmt: skip
        try:
            think_format = learn_think_format(template, {vocab.text(t) for t in vocab.control})
        except Exception as exc:  # noqa: BLE001 - probing never stops loading
            log.warning("the chat template failed a thinking probe (%s): no thinking", exc)
            think_format = None
        if think_format is not None:
            opened = " (opened by the prompt)" if think_format.open else ""
            start, end = printable(think_format.start), printable(think_format.end)
            log.info("thinking: %s ... %s%s", start, end, opened)
        call_marks = (*call_format.starts, call_format.end) if call_format else ()
        if end_text and any(end_text in mark for mark in call_marks):
            end_text = ""  # it opens a call too (GigaChat's `<|message_sep|>`): no stop string
        learned = Learned(eog, template, template_error, call_format, think_format, end_text)
    if learned.end_text:
        log.info("end of turn, written as text by this model: %s", printable(learned.end_text))
    log.info(
        "end-of-generation tokens: %s",
        ", ".join(
            f"{printable(t.text)} (id {t.id}, {'+'.join(t.sources)})" for t in eog.tokens.values()
        ),
    )
    return learned
