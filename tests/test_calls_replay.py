"""Every call-writing template in tests/data/templates, replayed (issue 24): a call as a plain
Jinja render of the template writes it, written by the scripted engine in random token pieces,
comes back as the same names and arguments, whole and streamed; the splitter takes it cut in
random pieces; the `required` grammar takes it.

The call text is the template's own render of an assistant turn of calls (where it parts from
the generation prompt, up to where it ends as a turn without calls ends), so a new template in
the folder is covered as it comes. Each kind's finer cases (cut calls, markup in values, ids,
keys) have their own tests: `test_calls_families.py`, `test_calls_xml_families.py`,
`test_calls_literal.py`, `test_calls_json.py`.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from endmark.calls import CallStrategy, HarmonyCalls
from endmark.calls.diff import without_empty_blocks
from endmark.calls.turn_diff import common_prefix, common_suffix
from endmark.channels import ChannelSplitter
from endmark.chat import ChatTemplate
from endmark.chat_fit import fitted_id
from endmark.loading import learn
from endmark.prepare import Learned
from endmark.settings import Settings
from endmark.tools import ToolRequest
from tests.dialect_readers import chat_stream, chat_whole
from tests.scripted_app import ScriptedApp
from tests.scripted_engine import ScriptedEngine
from tests.test_calls_json import Vocab
from tests.test_calls_literal import FORECAST, SCHEMA, TIME, TOOLS  # noqa: F401

TEMPLATES = Path(__file__).parent / "data" / "templates"
NAMES = sorted(p.stem for p in TEMPLATES.glob("*.jinja"))
ONE = (("forecast", {"city": "Paris", "days": 3, "unit": "celsius"}),)
TWO = (*ONE, ("get_time", {"zone": "UTC"}))
FREE_VALUES = ("Paris", "UTC")  # free text inside a call: a model writes it in any tokens
# formats not learned yet (none: Kimi-K3's XTML calls were the last, `calls/xtml.py`)
NOT_LEARNED: dict[str, str] = {}


@dataclass(frozen=True)
class Replay:
    """What loading learned of a template (on the scripted vocabulary), the calls the test
    writes, and the answer a model of the family writes for them: the thinking that the
    prompt opened, closed, then the calls as the template writes them."""

    learned: Learned
    calls: tuple[tuple[str, dict[str, Any]], ...]
    written: str  # the calls, as the template writes them (with the format's end marker)
    answer: str

    @property
    def fmt(self) -> CallStrategy:
        assert self.learned.call_format is not None
        return self.learned.call_format


@cache
def learned_of(name: str) -> Learned:
    return learn(ScriptedEngine(chat_template=source(name)), Settings())


def source(name: str) -> str:
    return (TEMPLATES / f"{name}.jinja").read_text()


def written_by_template(template: ChatTemplate, calls: tuple[tuple[str, Any], ...]) -> str | None:
    """An assistant turn of `calls` as a plain render of the template writes it, given as its
    clients give them (arguments and ids in the shape it takes): from where it parts from the
    generation prompt (less the assistant's header that the prompt ends with) to where it ends
    as a turn of text ends. None: it refuses them."""
    caps = template.caps
    tools = [t.as_openai() for t in TOOLS]
    user = [{"role": "user", "content": "Weather?"}]
    turn = {"role": "assistant", "content": caps.call_content, "tool_calls": [
        {"id": fitted_id(f"call_{i}abcdefghijklmnopqrstuvw", caps.id_length), "type": "function",
         "function": {"name": n, "arguments": a if caps.object_arguments else json.dumps(a)}}
        for i, (n, a) in enumerate(calls)]}  # fmt: skip
    try:
        prompt = template.render_given(user, True, tools=tools)
        full = template.render_given([*user, turn], False, tools=tools)
        plain = template.render_given([*user, {"role": "assistant", "content": "Sunny."}], False,
                                      tools=tools)  # fmt: skip
    except Exception:  # noqa: BLE001 - the template refuses these calls (Llama 3.x: two)
        return None
    section = full[common_prefix(prompt, full) :]
    header = next((n for n in range(len(section), 0, -1) if prompt.endswith(section[:n])), 0)
    section = section[header:]
    end = full[len(full) - common_suffix(full, plain) :]
    if end.strip() and section.endswith(end) and len(end) < len(section):
        section = section[: len(section) - len(end)]
    return without_empty_blocks(section).rstrip()


@cache
def replay(name: str) -> Replay:
    learned = learned_of(name)
    template, fmt, think = learned.template, learned.call_format, learned.think_format
    assert isinstance(template, ChatTemplate) and fmt is not None, name
    calls, written = TWO, None
    if not isinstance(fmt, HarmonyCalls):  # a harmony message has one recipient
        written = written_by_template(template, TWO)
    if written is None or not all(n in written for n, _ in calls):  # one call a turn
        calls, written = ONE, written_by_template(template, ONE)
    assert written and calls[0][0] in written, (name, written)
    if fmt.end and fmt.end in written:  # what the template writes after the calls is no call's
        written = written[: written.rindex(fmt.end) + len(fmt.end)]
    if fmt.end and not written.endswith(fmt.end):  # R1 Distill Llama leaves it out of a lone call
        # (or the turns' common end took its last tag: Kimi K3's `<|sep|>`)
        cut = max(k for k in range(len(fmt.end)) if written.endswith(fmt.end[:k]))
        written += fmt.end[cut:]
    opened = f"Hmm.{think.end}" if think is not None and think.open else ""
    return Replay(learned, calls, written, opened + written)


def writes_calls(name: str) -> bool:
    template = learned_of(name).template
    return isinstance(template, ChatTemplate) and template.caps.writes_calls


def params() -> list[Any]:
    marks = {n: pytest.mark.xfail(reason=why, strict=True) for n, why in NOT_LEARNED.items()}
    return [pytest.param(n, marks=marks[n]) if n in marks else n for n in NAMES]


def random_cuts(text: str, rng: random.Random, k: int) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), k=min(k, len(text) - 1)))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


Plan = list[tuple[list[str], bool]]  # an answer's runs of text, each cut into pieces or not


def planned(replay: Replay, rng: random.Random) -> Plan:
    """The answer in runs: what a model may write in any tokens (what comes before the call
    grammar, up to the end of the start marker, and the free values inside it) cut at random
    places; the markup the grammar forces left whole, to be tokenized as the vocabulary does,
    since llguidance takes a forced text in those tokens only (a real model writes those)."""
    text, fmt = replay.answer, replay.fmt
    bare = fmt.opens_bare(text)  # a call without its marker: the grammar from the start
    starts = [text.find(s) + len(s) for s in fmt.starts if s and s in text and not bare]
    free = [text[: min(starts)]] if starts else []
    runs: Plan = []
    at = 0
    for value in [*free, *FREE_VALUES]:
        found = text.find(value, at)
        if not value or found < 0:
            continue
        if found > at:
            runs.append(([text[at:found]], False))
        runs.append((random_cuts(value, rng, len(value) // 2) if len(value) > 1 else [value], True))
        at = found + len(value)
    if at < len(text):
        runs.append(([text[at:]], False))
    return runs


def words(plans: list[Plan]) -> set[str]:
    """The free pieces the scripted vocabulary holds as tokens: those found in no markup run,
    so that markup is tokenized as without them (a token that ran from one call's end marker
    into the next one's start would be a trigger inside a token, another test's case)."""
    markup = [pieces[0] for plan in plans for pieces, free in plan if not free]
    free = {piece for plan in plans for pieces, is_free in plan if is_free for piece in pieces}
    return {p for p in free if len(p) > 1 and not any(p in m for m in markup)}


def tokens(engine: ScriptedEngine, plan: Plan, declared: set[str]) -> list[int | str]:
    out: list[int | str] = []
    for pieces, free in plan:
        for piece in pieces if free else []:
            out += [piece] if piece in declared else engine.lexicon.tokenize(piece, True)
        out += [] if free else engine.lexicon.tokenize(pieces[0], True)
    return out


def split(r: Replay, chunks: list[str]) -> tuple[str, list[tuple[str, Any]]]:
    splitter = ChannelSplitter(r.fmt, r.learned.think_format, TOOLS)
    pieces = [p for chunk in chunks for p in splitter.push(chunk)] + splitter.finish()
    content = "".join(p.text for p in pieces if p.channel == "content").strip()
    return content, [(p.call.name, json.loads(p.call.arguments)) for p in pieces if p.call]


def test_the_folder_has_62_call_writing_templates() -> None:
    writers = [n for n in NAMES if writes_calls(n)]
    assert len(writers) == 62 and len(NAMES) == 70
    learned = [n for n in writers if learned_of(n).call_format is not None]
    assert sorted(set(writers) - set(learned)) == sorted(NOT_LEARNED)


@pytest.mark.parametrize("name", params())
def test_the_templates_call_comes_back_whole_and_streamed(name: str) -> None:
    """The splitter, given the answer whole and in random pieces; the `required` grammar,
    given the calls; the scripted engine, writing the answer in random token pieces through
    the real scheduler and app, once asked whole and once streamed (at once)."""
    if not writes_calls(name):
        pytest.skip("the template writes no calls: endmark's generic format (test_calls_json)")
    r = replay(name)
    expected = [(n, a) for n, a in r.calls]
    rng = random.Random(name)
    for chunks in ([r.answer], *(random_cuts(r.answer, rng, 8) for _ in range(6))):
        content, calls = split(r, chunks)
        assert (content, calls) == ("", expected), (name, chunks)
    plans = [planned(r, rng) for _ in range(2)]
    declared = words(plans)
    engine = ScriptedEngine(
        chat_template=source(name), words=declared, n_seq_max=2, n_ctx=2 * 16384
    )
    app = ScriptedApp(engine=engine)
    try:
        engine.add(*(tokens(engine, plan, declared) for plan in plans))

        async def ask(stream: bool) -> Any:
            body = {"model": "any", "stream": stream, "max_tokens": 2000,
                    "messages": [{"role": "user", "content": "Weather?"}],
                    "tools": [t.as_openai() for t in TOOLS]}  # fmt: skip
            async with app.client() as client:
                response = await client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            return chat_stream(response.text) if stream else chat_whole(response.json())

        async def both() -> list[Any]:
            return list(await asyncio.gather(ask(False), ask(True)))

        whole, streamed = asyncio.run(both())
        assert whole == streamed, (name, whole, streamed)
        assert (whole.text.strip(), list(whole.calls)) == ("", expected), (name, whole)
        assert whole.finish["finish_reason"] == "tool_calls", whole.finish
        vocab = Vocab(engine)
        forced = ToolRequest(TOOLS, "required")  # the calls, with or without blanks before
        texts = {r.written.lstrip("\n"), r.written.strip()}
        assert any(vocab.accepts(vocab.matcher(r.fmt, forced), t) for t in texts), texts
    finally:
        app.close()
