"""The scripted engine drives the real scheduler: what it scripts is what comes out."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from endmark.calls import HERMES
from endmark.channels import ChannelSplitter
from endmark.constraints import ConstraintCompiler, ConstraintSpec
from endmark.drafts import DraftSettings
from endmark.endings import EndPolicy, EogSet
from endmark.engine import Embedder, Engine
from endmark.generation import Done, Event, Failed, GenerationRequest, TokenEvent
from endmark.sampling import SamplingParams
from endmark.scheduler import Scheduler
from tests.scripted_engine import Answer, ScriptedEngine
from tests.scripted_vocab import IM_END, N_VOCAB

PROMPT = "<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n"


def start(engine: ScriptedEngine, n_slots: int = 2, **kwargs: object) -> Scheduler:
    sched = Scheduler(engine, EogSet.from_vocab(engine.vocab), n_slots, **kwargs)  # type: ignore[arg-type]
    sched.start()
    return sched


@pytest.fixture()
def engine() -> ScriptedEngine:
    return ScriptedEngine()


@pytest.fixture()
def scheduler(engine: ScriptedEngine) -> Iterator[Scheduler]:
    sched = start(engine)
    yield sched
    sched.stop()


def request(
    engine: ScriptedEngine, prompt: str = PROMPT, n_predict: int = -1, **kwargs: object
) -> GenerationRequest:
    policy = EndPolicy(EogSet.from_vocab(engine.vocab), n_predict=n_predict)
    tokens = engine.tokenize(prompt, False, True)
    return GenerationRequest(tokens, SamplingParams(temperature=0), policy, **kwargs)  # type: ignore[arg-type]


def submit(sched: Scheduler, req: GenerationRequest) -> queue.Queue[Event]:
    events: queue.Queue[Event] = queue.Queue()
    sched.submit(req, events.put)
    return events


def drain(events: queue.Queue[Event]) -> tuple[str, Done | Failed]:
    text = []
    while True:
        event = events.get(timeout=10)
        if isinstance(event, TokenEvent):
            text.append(event.text)
        elif isinstance(event, Done):
            return "".join(text) + event.finish.tail, event
        elif isinstance(event, Failed):
            return "".join(text), event


def run(sched: Scheduler, req: GenerationRequest) -> tuple[str, Done]:
    text, end = drain(submit(sched, req))
    assert isinstance(end, Done), end
    return text, end


def protocol_members(protocol: type) -> set[str]:
    return set(protocol.__annotations__) | {n for n in vars(protocol) if not n.startswith("_")}


def test_it_has_every_member_of_the_engine_protocol(engine: ScriptedEngine) -> None:
    assert protocol_members(Engine) <= set(dir(engine))
    assert protocol_members(Embedder) <= set(dir(engine.embedder()))


def test_the_scheduler_replays_the_script_and_ends_at_its_end_token(
    engine: ScriptedEngine, scheduler: Scheduler
) -> None:
    engine.add("Hello world, ça va?")
    text, done = run(scheduler, request(engine))
    assert text == "Hello world, ça va?"
    assert done.finish.stop_type == "eos" and done.finish.token is not None
    assert done.finish.token.id == IM_END and IM_END not in done.tokens
    assert engine.prompts == [engine.tokenize(PROMPT, False, True)]


def test_the_token_limit_cuts_the_script(engine: ScriptedEngine, scheduler: Scheduler) -> None:
    engine.add([engine.tokenize(c, False, False)[0] for c in "abcdef"])
    text, done = run(scheduler, request(engine, n_predict=3))
    assert (text, done.finish.stop_type, len(done.tokens)) == ("abc", "limit", 3)


def test_requests_take_the_answers_in_turn(engine: ScriptedEngine, scheduler: Scheduler) -> None:
    engine.add("first", "second")
    assert run(scheduler, request(engine))[0] == "first"
    assert run(scheduler, request(engine))[0] == "second"  # the same prompt, from the cache
    assert engine.prompts[0] == engine.prompts[1]


def test_a_next_turn_that_continues_the_cache_gets_its_own_answer(
    engine: ScriptedEngine, scheduler: Scheduler
) -> None:
    engine.add("Paris", "Lyon")
    _, first = run(scheduler, request(engine))
    turn = f"{PROMPT}Paris<|im_end|>\n<|im_start|>user\nAnd?<|im_end|>\n<|im_start|>assistant\n"
    text, second = run(scheduler, request(engine, turn))
    assert text == "Lyon" and second.timings.cached_n > first.n_prompt


def test_concurrent_requests_each_get_their_answer() -> None:
    answers = {f"question {i}": f"answer {i} " * (i + 1) for i in range(5)}

    def respond(prompt: list[int]) -> str:
        text = engine.text(prompt)
        return answers[text.removeprefix("<|im_start|>user\n").removesuffix("<|im_end|>\n")]

    engine = ScriptedEngine(respond=respond, n_seq_max=3)
    sched = start(engine, n_slots=3)
    try:
        streams = {
            q: submit(sched, request(engine, f"<|im_start|>user\n{q}<|im_end|>\n")) for q in answers
        }
        results = {q: drain(events)[0] for q, events in streams.items()}
    finally:
        sched.stop()
    assert results == answers
    assert max(sum(1 for i in batch if i.want_logits) for batch in engine.decodes) > 1


def test_a_scripted_decode_failure_fails_the_request_mid_stream(
    engine: ScriptedEngine, scheduler: Scheduler
) -> None:
    engine.add(Answer("abcdef", fail_at=3), "after")
    text, end = drain(submit(scheduler, request(engine)))
    assert text == "abc" and isinstance(end, Failed) and "scripted failure" in end.message
    assert run(scheduler, request(engine))[0] == "after"  # the server goes on


def test_checked_guesses_replay_the_script(engine: ScriptedEngine, scheduler: Scheduler) -> None:
    """Prompt-lookup drafts guess from the prompt: the answer copies it, then leaves it."""
    quoted = "the quick brown fox jumps over the lazy dog"
    prompt = f"<|im_start|>user\nRepeat: {quoted}<|im_end|>\n<|im_start|>assistant\n"
    answer = f"{quoted[:20]}cat and {quoted}."
    engine.add(answer)
    text, done = run(scheduler, request(engine, prompt, drafts=DraftSettings(8)))
    assert text == answer
    assert 0 < done.timings.draft_n_accepted < done.timings.draft_n


def test_scripted_logits_are_sampled(engine: ScriptedEngine, scheduler: Scheduler) -> None:
    row = np.full(N_VOCAB, -100.0, dtype=np.float32)
    x = engine.tokenize("x", False, False)[0]
    row[x], row[x + 1] = 0.0, -1.0  # "x", then "y" less likely
    engine.add(Answer("z", logits=[row]))
    sampling = SamplingParams(temperature=0, n_probs=2)
    text, done = run(scheduler, replace(request(engine), sampling=sampling))
    assert text == "x" and done.finish.stop_type == "eos"


def test_a_json_constraint_ends_when_the_grammar_is_complete(
    engine: ScriptedEngine, scheduler: Scheduler
) -> None:
    eog = EogSet.from_vocab(engine.vocab)
    compiler = ConstraintCompiler(lambda: engine.lltokenizer(eog.ids()), N_VOCAB)
    assert sorted(compiler.tokenizer.eos_tokens) == sorted(eog.ids())
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    grammar = compiler.compile(ConstraintSpec("json_schema", schema, "json_schema"))
    engine.add('{"a": 12}')
    req = request(engine, constraint=compiler.matcher(grammar))
    text, done = run(scheduler, req)
    assert text == '{"a": 12}' and done.finish.grammar_complete


def test_a_scripted_tool_call_ends_the_turn(engine: ScriptedEngine, scheduler: Scheduler) -> None:
    engine.add('Let me look.\n<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>')
    req = request(engine, channels=ChannelSplitter(HERMES))
    text, done = run(scheduler, req)
    assert text.strip() == "Let me look."
    assert [(c.name, c.arguments) for c in done.calls] == [("f", '{"x": 1}')]
    assert done.ended_by_calls


def test_the_slot_context_ends_a_long_answer() -> None:
    engine = ScriptedEngine(["a" * 100], n_ctx=64, n_seq_max=1)
    sched = start(engine, n_slots=1)
    try:
        req = request(engine, "hi")
        req.policy = replace(req.policy, ignore_eos=True)  # type: ignore[arg-type]
        text, end = drain(submit(sched, req))
    finally:
        sched.stop()
    # the scheduler ends it at its slot's context first: a truncated limit, not a failure
    assert isinstance(end, Done) and end.finish.truncated and len(end.tokens) == 62


def test_a_full_shared_cache_fails_the_running_requests() -> None:
    engine = ScriptedEngine(["a" * 60, "b" * 60], n_ctx=64, n_seq_max=2, kv_unified=True)
    sched = Scheduler(engine, EogSet.from_vocab(engine.vocab), 2, shared_cache=True)
    try:  # both queued before the scheduler runs: alone, one would fit (a loaded machine)
        reqs = [request(engine, "hi", n_predict=60), request(engine, "yo", n_predict=60)]
        streams = [submit(sched, r) for r in reqs]
        sched.start()
        ends = [drain(events)[1] for events in streams]
    finally:
        sched.stop()
    assert all(isinstance(e, Failed) and "context size" in e.message for e in ends)


def test_a_shared_cache_drops_idle_slots_caches_for_a_new_prompt() -> None:
    """Two finished conversations keep their prompts cached; a third, longer prompt needs
    their cells, and takes them instead of failing mid-prompt."""
    engine = ScriptedEngine(["ok", "ok", "ok"], n_ctx=64, n_seq_max=2, kv_unified=True)
    sched = start(engine, n_slots=2, shared_cache=True)
    try:
        ends = []
        for prompt in ("a" * 25, "b" * 25, "c" * 50):
            ends.append(drain(submit(sched, request(engine, prompt, n_predict=4)))[1])
    finally:
        sched.stop()
    assert all(isinstance(e, Done) for e in ends), ends


def test_a_script_cuts_its_answer_into_declared_words() -> None:
    """Any pieces of bytes can be words, a UTF-8 character cut across two of them; a piece
    that is no token is refused."""
    cut = ["He", "llo w", b"\xc3", b"\xa9 <tool", "_call>"]
    engine = ScriptedEngine([cut], words=cut)
    assert engine.tokenize("llo w", False, False) == [engine.lexicon.token("llo w")]
    sched = start(engine)
    try:
        text, done = run(sched, request(engine))
    finally:
        sched.stop()
    assert text == "Hello wé <tool_call>" and len(done.tokens) == len(cut)
    with pytest.raises(ValueError, match="declare it"):
        engine.lexicon.token("never declared")
