"""LoRA adapters: the flags' text, global and per-request scales, and the scheduler that
decodes each configuration apart and never continues a cache made under another."""

from __future__ import annotations

import math
import queue
from collections.abc import Iterator

import pytest

from endmark.adapters import (
    AdapterFile,
    Adapters,
    format_adapter_files,
    group_by_adapters,
    parse_adapter_files,
)
from endmark.endings import EndPolicy, EogSet
from endmark.events import Done, Event, TokenEvent
from endmark.invalid import InvalidRequest
from endmark.request import GenerationRequest
from endmark.sampling import SamplingParams
from endmark.scheduler import Scheduler
from tests.scripted_engine import ScriptedEngine

PROMPT = "<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n"
ON = ((0, 1.0),)  # adapter 0 at scale 1
HALF = ((1, 0.5),)


def test_the_settings_text_keeps_paths_scales_and_order() -> None:
    files = [AdapterFile("a.gguf"), AdapterFile("C:/x/b.gguf", -0.5), AdapterFile("c.gguf", 2.0)]
    assert parse_adapter_files(format_adapter_files(files)) == files
    assert parse_adapter_files("a.gguf, b.gguf:0.25,d:x") == [
        AdapterFile("a.gguf"), AdapterFile("b.gguf", 0.25), AdapterFile("d:x"),
    ]  # fmt: skip
    assert parse_adapter_files(None) == [] == parse_adapter_files("")


def test_a_request_without_a_list_runs_with_the_global_scales() -> None:
    adapters = Adapters(["a.gguf", "b.gguf"], [1.0, 0.0])
    assert adapters.resolve(None) == ON
    assert adapters.resolve([]) == ON  # an empty list is no list, as in llama-server
    assert adapters.resolve([(1, 0.5)]) == HALF  # adapters left out are at 0
    assert adapters.resolve([(0, 0.0)]) == ()  # scale 0: the base model
    adapters.set_global([(1, 0.5)])
    assert adapters.resolve(None) == HALF
    assert [(a["id"], a["path"], a["scale"]) for a in adapters.listing()] == [
        (0, "a.gguf", 0.0), (1, "b.gguf", 0.5),
    ]  # fmt: skip
    assert Adapters().resolve(None) == ()


@pytest.mark.parametrize(
    "entries", [[(2, 1.0)], [(-1, 1.0)], [(0, math.nan)], [(0, math.inf)], [(0, 1e6)]]
)
def test_an_unknown_id_or_a_scale_out_of_range_is_refused(
    entries: list[tuple[int, float]],
) -> None:
    adapters = Adapters(["a.gguf", "b.gguf"], [1.0, 1.0])
    with pytest.raises(InvalidRequest) as exc:
        adapters.resolve(entries)
    assert exc.value.param == "lora"
    with pytest.raises(InvalidRequest):
        adapters.set_global(entries)
    assert adapters.resolve(None) == ((0, 1.0), (1, 1.0))  # a refused POST changes nothing


def test_groups_start_with_the_configuration_already_set() -> None:
    items = [("a", ON), ("b", ()), ("c", ON), ("d", HALF)]
    groups = group_by_adapters(items, lambda item: item[1], current=())
    assert [(key, [name for name, _ in group]) for key, group in groups] == [
        ((), ["b"]), (ON, ["a", "c"]), (HALF, ["d"]),
    ]  # fmt: skip


# -- the scheduler on the scripted engine ---------------------------------------------------


@pytest.fixture()
def engine() -> ScriptedEngine:
    # the answer says which configuration the request's first logits were decoded under
    def respond(prompt: list[int]) -> str:
        return f"under {engine.adapters}"

    engine = ScriptedEngine(respond=respond)
    return engine


@pytest.fixture()
def scheduler(engine: ScriptedEngine) -> Iterator[Scheduler]:
    sched = Scheduler(engine, EogSet.from_vocab(engine.vocab), n_slots=3)  # type: ignore[arg-type]
    yield sched
    sched.stop()


def request(engine: ScriptedEngine, adapters: tuple[tuple[int, float], ...]) -> GenerationRequest:
    policy = EndPolicy(EogSet.from_vocab(engine.vocab))
    tokens = engine.tokenize(PROMPT, False, True)
    return GenerationRequest(tokens, SamplingParams(temperature=0), policy, adapters=adapters)


def answer(events: queue.Queue[Event]) -> tuple[str, Done]:
    text = []
    while True:
        event = events.get(timeout=10)
        if isinstance(event, TokenEvent):
            text.append(event.text)
        else:
            assert isinstance(event, Done), event
            return "".join(text) + event.finish.tail, event


def submit(sched: Scheduler, req: GenerationRequest) -> queue.Queue[Event]:
    events: queue.Queue[Event] = queue.Queue()
    sched.submit(req, events.put)
    return events


def test_concurrent_configurations_are_decoded_apart_each_under_its_own(
    engine: ScriptedEngine, scheduler: Scheduler
) -> None:
    configs = [ON, (), ON, HALF]
    tickets = [submit(scheduler, request(engine, c)) for c in configs[:3]]
    scheduler.start()  # all three are admitted into the first step together
    answers = [answer(t)[0] for t in tickets]
    assert answers == [f"under {c}" for c in configs[:3]]
    assert len({c for c in engine.decoded_under}) == 2
    # every decode held the sequences of one configuration, and ran under it
    slot_config = {0: ON, 1: (), 2: ON}
    for batch, under in zip(engine.decodes, engine.decoded_under, strict=True):
        assert {slot_config[item.seq_id] for item in batch} == {under}
    # the two requests under ON shared their decodes: grouped, not one decode each
    assert any({item.seq_id for item in batch} == {0, 2} for batch in engine.decodes)
    under = engine.decoded_under
    n_switches = sum(a != b for a, b in zip(under, under[1:], strict=False))
    steps = sum(u == () for u in under)
    assert n_switches <= steps  # one switch a step: each step starts where the last ended
    assert answer(submit(scheduler, request(engine, HALF)))[0] == f"under {HALF}"


def test_a_cache_is_continued_only_under_the_configuration_it_was_made_under(
    engine: ScriptedEngine, scheduler: Scheduler
) -> None:
    scheduler.start()
    assert answer(submit(scheduler, request(engine, ON)))[1].timings.cached_n == 0
    # the same prompt under another configuration reads it all again, on another slot
    assert answer(submit(scheduler, request(engine, ())))[1].timings.cached_n == 0
    assert answer(submit(scheduler, request(engine, HALF)))[1].timings.cached_n == 0
    # under the first again: its slot's cache is continued
    n_prompt = len(engine.tokenize(PROMPT, False, True))
    assert answer(submit(scheduler, request(engine, ON)))[1].timings.cached_n == n_prompt - 1
    assert [s.adapters for s in scheduler.slots] == [ON, (), HALF]


def test_a_slot_whose_cache_was_made_under_another_configuration_starts_empty(
    engine: ScriptedEngine,
) -> None:
    sched = Scheduler(engine, EogSet.from_vocab(engine.vocab), n_slots=1)  # type: ignore[arg-type]
    sched.start()
    try:
        assert answer(submit(sched, request(engine, ON)))[1].timings.cached_n == 0
        before = len(engine.decodes)
        text, done = answer(submit(sched, request(engine, ())))
        assert done.timings.cached_n == 0 and text == "under ()"
        first = engine.decodes[before][0]  # the prompt is read whole, from position 0
        assert first.pos == 0 and list(first.tokens) == engine.tokenize(PROMPT, False, True)
    finally:
        sched.stop()
