from __future__ import annotations

import json
import os
import queue
import threading
from dataclasses import replace

import numpy as np
import pytest

from endmark.constraints import ConstraintFailure
from endmark.endings import EndPolicy, EogSet
from endmark.events import Done, Event, Failed, TokenEvent
from endmark.invalid import InvalidRequest
from endmark.request import GenerationRequest
from endmark.sampling import SamplingParams
from endmark.scheduler import QueueFull, Scheduler
from endmark.slots import common_prefix
from tests.conftest import CHATML_PROMPT


@pytest.fixture()
def scheduler(engine):  # type: ignore[no-untyped-def]
    for s in range(engine.n_seq_max):
        engine.drop(s)
    sched = Scheduler(engine, EogSet.from_vocab(engine.vocab), n_slots=4, batch_size=64)
    sched.start()
    yield sched
    sched.stop()


def collect(sched: Scheduler, req: GenerationRequest) -> tuple[str, Done]:
    events: queue.Queue[Event] = queue.Queue()
    sched.submit(req, events.put)
    text = []
    while True:
        e = events.get(timeout=60)
        if isinstance(e, TokenEvent):
            text.append(e.text)
        elif isinstance(e, Done):
            return "".join(text) + e.finish.tail, e
        else:
            raise AssertionError(e)


def request(engine, prompt: str, n: int = 24, label: str = "t") -> GenerationRequest:  # type: ignore[no-untyped-def]
    eog = EogSet.from_vocab(engine.vocab)
    return GenerationRequest(
        engine.tokenize(prompt, False, True),
        SamplingParams(temperature=0),
        EndPolicy(eog, n_predict=n, ignore_eos=True),
        label,
    )


def test_concurrent_requests_match_their_solo_runs(engine, scheduler) -> None:  # type: ignore[no-untyped-def]
    prompts = [CHATML_PROMPT, "The quick brown fox", "def fib(n):", "Once upon a time"]

    def uncached(prompt: str) -> GenerationRequest:
        # each prompt evaluated whole both times: one read after its cached prefix is other
        # numerics, and this small model's greedy answer can differ between the two
        return replace(request(engine, prompt), cache_prompt=False)

    solo = [collect(scheduler, uncached(p))[0] for p in prompts]
    results: list[str | None] = [None] * len(prompts)

    def worker(i: int) -> None:
        results[i] = collect(scheduler, uncached(prompts[i]))[0]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == solo


def test_a_prompt_longer_than_one_batch_is_fed_in_chunks(engine, scheduler) -> None:  # type: ignore[no-untyped-def]
    long_prompt = "Count: " + " ".join(str(i) for i in range(80))
    text, done = collect(scheduler, request(engine, long_prompt, n=5))
    assert done.n_prompt > scheduler.batch_size and len(done.tokens) == 5


def test_a_repeated_prefix_is_served_from_the_cache(engine, scheduler) -> None:  # type: ignore[no-untyped-def]
    _, first = collect(scheduler, request(engine, CHATML_PROMPT, n=3))
    _, second = collect(scheduler, request(engine, CHATML_PROMPT, n=3))
    assert second.timings.cached_n >= first.n_prompt - 1
    assert second.tokens == first.tokens


def test_a_prefix_held_by_another_slot_is_copied_not_decoded_again(engine, scheduler) -> None:  # type: ignore[no-untyped-def]
    """Many clients, one system prompt: a request that gets an empty slot while another slot
    (here a busy one) holds its prompt's start takes that prefix from it."""
    system = "<|im_start|>system\nYou answer in one short sentence." + " Be kind." * 20
    first = request(engine, system + "<|im_end|>\n<|im_start|>user\nHi", n=400)
    started = threading.Event()
    scheduler.submit(first, lambda e: started.set())
    assert started.wait(30)
    second = request(engine, system + "<|im_end|>\n<|im_start|>user\nHello there", n=3)
    _, done = collect(scheduler, second)
    shared = common_prefix(first.prompt, second.prompt)
    assert shared > 40 and done.timings.cached_n == shared
    busy = [s for s in scheduler.slot_states() if s["is_processing"]]
    assert len(busy) == 1  # the first goes on in its own slot


def test_overlong_prompts_and_a_full_queue_are_refused(engine) -> None:  # type: ignore[no-untyped-def]
    sched = Scheduler(engine, EogSet.from_vocab(engine.vocab), n_slots=1, queue_size=1)
    with pytest.raises(InvalidRequest):
        sched.submit(request(engine, "word " * 3000), lambda e: None)
    sched.submit(request(engine, "a"), lambda e: None)  # not started: it stays queued
    with pytest.raises(QueueFull):
        sched.submit(request(engine, "b"), lambda e: None)


def test_cancel_frees_the_slot(engine, scheduler) -> None:  # type: ignore[no-untyped-def]
    got = threading.Event()
    ticket = scheduler.submit(request(engine, "Once", n=500), lambda e: got.set())
    assert got.wait(30)
    scheduler.cancel(ticket)
    text, _ = collect(scheduler, request(engine, "Hello", n=2))
    assert all(not s["is_processing"] for s in scheduler.slot_states())


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([], [1]) == 0


def test_a_call_runs_on_the_worker_thread_between_steps(scheduler) -> None:  # type: ignore[no-untyped-def]
    """Embeddings go this way: all llama.cpp compute on one thread."""
    import threading

    assert scheduler.call(lambda: threading.current_thread().name).result(5) == "endmark-scheduler"
    failing = scheduler.call(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(5)
    assert scheduler.call(lambda: 42).result(5) == 42  # and the worker goes on


def test_a_slot_is_picked_to_keep_each_conversation() -> None:
    from endmark.slots import Slot, pick_slot

    long_chat = Slot(0, cached=[1, 2, 3, *range(10, 150)], last_used=5.0)
    empty = Slot(1)
    other = Slot(2, cached=[1, 2, 3, *[7] * 5], last_used=1.0)
    # shares only the system prompt with the long chat: an empty slot, not an eviction
    assert pick_slot([long_chat, empty, other], [1, 2, 3, 99, 98], True) is empty
    # the next turn of the long chat goes back to it
    assert pick_slot([long_chat, empty, other], [1, 2, 3, *range(10, 150), 5], True) is long_chat
    # the same prompt again reuses the slot that holds it, even after a long answer
    again = Slot(3, cached=[1, 2, 3, 7, *range(200, 300)], last_used=9.0)
    assert pick_slot([long_chat, again], [1, 2, 3, 7], True) is again
    # no empty slot and nothing continued: the least recently used is evicted
    assert pick_slot([long_chat, other], [50, 51], True) is other
    assert pick_slot([long_chat, empty], [1, 2, 3, *range(10, 150)], False) is empty


COPY_PROMPT = (
    "<|im_start|>user\nRepeat this text exactly: The lighthouse keeper climbed the stairs "
    "every evening, lit the great lamp, and watched the ships pass safely through the narrow "
    "channel until morning.<|im_end|>\n<|im_start|>assistant\n"
)


def test_drafts_from_the_prompt_change_no_token_and_are_counted(engine, scheduler) -> None:  # type: ignore[no-untyped-def]
    from endmark.drafts import DraftSettings

    plain = replace(request(engine, COPY_PROMPT, n=40), cache_prompt=False)
    text, done = collect(scheduler, plain)
    fast_text, fast = collect(scheduler, replace(plain, drafts=DraftSettings(max=16)))
    assert fast_text == text and fast.tokens == done.tokens
    assert done.timings.draft_n == 0
    assert (
        fast.timings.draft_n_accepted > 10 and fast.timings.draft_n >= fast.timings.draft_n_accepted
    )


def test_guesses_beside_other_sequences_are_cut_to_one_length(engine, scheduler) -> None:  # type: ignore[no-untyped-def]
    """With a cache per sequence, llama.cpp splits a step whose sequences bring unequal
    counts of tokens into several passes over the weights: each guess is cut to the
    shortest, and the answers are those of solo runs."""
    from endmark.drafts import DraftSettings

    copying = replace(request(engine, COPY_PROMPT, n=40), cache_prompt=False,
                      drafts=DraftSettings(max=16))  # fmt: skip
    plain = replace(request(engine, "Once upon a time", n=40), cache_prompt=False)
    solo = [collect(scheduler, r)[0] for r in (copying, plain)]
    lengths: list[list[int]] = []
    real_decode = engine.decode

    def recorded(inputs):  # type: ignore[no-untyped-def]
        decoding = [len(i.tokens) for i in inputs if i.want_logits and i.n_logits == len(i.tokens)]
        if len(decoding) > 1:
            lengths.append(decoding)
        return real_decode(inputs)

    scheduler.engine.decode = recorded
    try:
        out: dict[int, str] = {}
        threads = [
            threading.Thread(target=lambda i=i, r=r: out.__setitem__(i, collect(scheduler, r)[0]))
            for i, r in enumerate((copying, plain))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        del scheduler.engine.decode
    assert [out[0], out[1]] == solo
    assert lengths and all(len(set(step)) == 1 for step in lengths)


def test_forced_tokens_are_fed_without_sampling_and_the_json_is_the_same(engine, scheduler) -> None:  # type: ignore[no-untyped-def]
    from endmark.constraints import ConstraintCompiler, ConstraintSpec

    eog = EogSet.from_vocab(engine.vocab)
    compiler = ConstraintCompiler(lambda: engine.lltokenizer(eog.ids()), engine.vocab.n_vocab)
    schema = {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 12}, "country": {"type": "string", "maxLength": 12},
        "capital": {"type": "boolean"}}, "required": ["city", "country", "capital"]}  # fmt: skip
    grammar = compiler.compile(ConstraintSpec("json_schema", schema, "json_schema"))
    base = replace(request(engine, CHATML_PROMPT, n=60), cache_prompt=False,
                   policy=EndPolicy(eog, n_predict=60))  # fmt: skip
    outputs, decodes = [], []
    real_decode = engine.decode
    calls = [0]

    def counted(inputs):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return real_decode(inputs)

    scheduler.engine.decode = counted
    try:
        for ff in (False, True):
            calls[0] = 0
            text, done = collect(scheduler, replace(base, constraint=compiler.matcher(grammar),
                                                    fast_forward=ff))  # fmt: skip
            outputs.append(text)
            decodes.append(calls[0])
            assert done.finish.grammar_complete
    finally:
        del scheduler.engine.decode
    assert json.loads(outputs[1]) == json.loads(outputs[0])
    assert decodes[1] < decodes[0] - 5  # keys, quotes and braces cost no step of their own


QUESTIONS = [
    "What is the capital of France?", "Name three colors.", "Say hello.", "What is 2+2?",
    "Repeat after me: the cat sat on the mat, the cat sat on the mat.",
    "Write a haiku about rain.", "List the days of the week.", "What is water made of?",
    "Describe a lighthouse.", "Count from one to ten.", "Who wrote Hamlet?",
    "Spell the word banana.", "What is the opposite of hot?", "Translate 'thank you' to French.",
    "Give me a word that rhymes with cat.", "What color is the sky?", "Name a fruit.",
    "What is the largest ocean?", "Copy this: red, green, blue, red, green, blue.",
    "What do bees make?",
]  # fmt: skip
PERSON = {"type": "object", "required": ["name", "city", "age"], "properties": {
    "name": {"type": "string", "maxLength": 16}, "city": {"type": "string", "maxLength": 16},
    "age": {"type": "integer", "minimum": 0, "maximum": 120}}}  # fmt: skip


def collect_tokens(sched: Scheduler, req: GenerationRequest) -> list[TokenEvent]:
    events: queue.Queue[Event] = queue.Queue()
    sched.submit(req, events.put)
    out = []
    while not isinstance(e := events.get(timeout=60), Done):
        assert isinstance(e, TokenEvent), e
        out.append(e)
    return out


def test_speculation_and_fast_forward_keep_greedy_answers(engine, scheduler) -> None:  # type: ignore[no-untyped-def]
    """Issue 15: at temperature 0, drafts and forced runs keep plain decoding's answers: on
    all prompts but one, without a schema and under one (7 prompts in the suite, the
    issue's 20 with `ENDMARK_FULL_MATRIX=1`). Where an answer differs, it is
    never a wrong acceptance: at the first different token, plain decoding had a near tie
    (its top two within 0.25 in log-probability) and the checked decode took the runner-up:
    a batched decode's numerics, not a guess taken on trust. (With flash attention, short
    batches round as one-token decodes do, and all 40 matched.)"""
    from endmark.constraints import ConstraintCompiler, ConstraintSpec
    from endmark.drafts import DraftSettings

    eog = EogSet.from_vocab(engine.vocab)
    compiler = ConstraintCompiler(lambda: engine.lltokenizer(eog.ids()), engine.vocab.n_vocab)
    grammar = compiler.compile(ConstraintSpec("json_schema", PERSON, "json_schema"))
    questions = QUESTIONS if os.environ.get("ENDMARK_FULL_MATRIX") == "1" else QUESTIONS[::4]
    for schema in (False, True):
        same = 0
        for q in questions:
            prompt = f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
            base = replace(request(engine, prompt, n=40), cache_prompt=False,
                           policy=EndPolicy(eog, n_predict=40),
                           sampling=SamplingParams(temperature=0, n_probs=2))  # fmt: skip
            runs = []
            for fast in (False, True):
                r = replace(base, drafts=DraftSettings() if fast else None, fast_forward=fast,
                            constraint=compiler.matcher(grammar) if schema else None)  # fmt: skip
                runs.append(collect_tokens(scheduler, r))
            plain, fast_run = ([e.token for e in run] for run in runs)
            if plain == fast_run:
                same += 1
                continue
            at = common_prefix(plain, fast_run)
            (first, lp1), (second, lp2) = runs[0][at].top[:2]
            print(f"differs (schema={schema}) {q!r} at token {at}: gap {lp1 - lp2:.3f}")
            assert first == plain[at] and second == fast_run[at] and lp1 - lp2 < 0.25
        assert same >= len(questions) - 1, (schema, same)


class BreakingConstraint:
    """A matcher that allows every token, then fails (as llguidance does over its limits) on
    its `after`-th mask, or in its fast-forward."""

    def __init__(self, n_vocab: int, after: int, in_forced: bool = False) -> None:
        self.n_vocab, self.after, self.in_forced = n_vocab, after, in_forced
        self.accepting = self.complete = False

    def _tick(self) -> None:
        self.after -= 1
        if self.after < 0:
            raise ConstraintFailure("response_format", "it is too complex (fuel)")

    def mask(self) -> np.ndarray:
        if not self.in_forced:
            self._tick()
        return np.ones(self.n_vocab, dtype=bool)

    def forced(self) -> list[int]:
        if self.in_forced:
            self._tick()
        return []

    def consume(self, token: int) -> None:
        pass

    def valid_prefix(self, tokens: list[int]) -> int:
        return len(tokens)


def test_a_failing_constraint_fails_its_request_alone(engine, scheduler) -> None:  # type: ignore[no-untyped-def]
    """One fails in its mask, one in its fast-forward, after their answers began: each ends
    there, saying why (`constraint_error`); one that fails before its first token fails (a
    4xx naming the field). The plain one beside them goes on."""
    ended: queue.Queue[Event] = queue.Queue()
    for after, in_forced in ((2, False), (2, True), (0, False)):
        broken = replace(request(engine, "Once upon a time", n=8, label="broken"),
                         constraint=BreakingConstraint(engine.vocab.n_vocab, after, in_forced))  # type: ignore[arg-type]  # fmt: skip
        scheduler.submit(broken, lambda e: ended.put(e) if isinstance(e, (Done, Failed)) else None)
    text, done = collect(scheduler, request(engine, "The quick brown fox", n=6))
    assert len(done.tokens) == 6
    reason = "response_format: the constraint failed: it is too complex (fuel)"
    results = [ended.get(timeout=30) for _ in range(3)]
    cut = [r for r in results if isinstance(r, Done)]
    assert len(cut) == 2 and all(r.finish.constraint_error == reason and r.tokens for r in cut)
    assert all(r.finish.stop_type == "limit" for r in cut)
    (failure,) = [r for r in results if isinstance(r, Failed)]
    assert failure.param == "response_format" and failure.message == reason
    assert all(not s["is_processing"] for s in scheduler.slot_states())
