from __future__ import annotations

import queue
import threading

import pytest

from endmark.endings import EndPolicy, EogSet
from endmark.generation import Done, Event, GenerationRequest, InvalidRequest, TokenEvent
from endmark.sampling import SamplingParams
from endmark.scheduler import QueueFull, Scheduler, common_prefix
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
    solo = [collect(scheduler, request(engine, p))[0] for p in prompts]
    results: list[str | None] = [None] * len(prompts)

    def worker(i: int) -> None:
        results[i] = collect(scheduler, request(engine, prompts[i]))[0]

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
