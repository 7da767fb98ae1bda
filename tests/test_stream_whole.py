"""Stream equals whole (issue 29, item 6), as a property of the scripted engine: in every
dialect, a streamed answer and a whole one of the same script and seed carry the same text,
reasoning, calls and finish, however the answer is cut into tokens.

Each dialect gets 200 random answers, each cut into tokens at random places: markers written
as their control token or as plain text cut anywhere (`<tool` + `_call>`, `</th` + `ink>`), a
UTF-8 character across two tokens, stop strings (and their near misses) across tokens, calls
across tokens, under `tool_choice` auto and required; each ends at its end token (either of
the two), a stop string, or the token limit. Where the limit does not cut the answer, it must
also read as the answer was written, whatever the cut: the same text, reasoning and calls.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from tests.dialect_readers import DIALECTS, Ask, DialectReader
from tests.scripted_app import ScriptedApp, scripted_app
from tests.scripted_engine import ScriptedEngine
from tests.scripted_vocab import ENDOFTEXT, THINK, THINK_END, TOOL_CALL, TOOL_CALL_END

N_CASES = 120  # random answers per dialect (840 in all; 100, 120, 150 and 200 all pass)
AT_ONCE = 16  # answers in flight at once (each a whole request and a stream)

# Text the answers are made of: a near miss of each stop string, characters of 2 to 4 bytes,
# blanks, and text that looks like markup but is not a marker.
PIECES = (" Hello", " world", " café", " naïve", " 🌍", " Zürich", "\n", "\n\n", "  ", " By",
          " Bye", " <E", " ~", ".", ",", " 42", " <b>", " {", "}")  # fmt: skip
STOPS = ("Bye!", "<END>", "~~", "é🌍")  # none can be made of PIECES
CITIES = ("Paris", "Zürich", "東京", "Bye", 'a \\"town\\"')  # as JSON writes them
MARKERS = {THINK: "<think>", THINK_END: "</think>", TOOL_CALL: "<tool_call>",
           TOOL_CALL_END: "</tool_call>"}  # fmt: skip

Atom = int | str  # a control token, or text


@dataclass
class Case:
    """One random answer for one dialect: its atoms (text and control tokens), the request,
    and what the answer must read as where the limit does not cut it: the atoms that are its
    thinking and its text (`reasoning_at`, `text_at`), its calls, and how it ends."""

    key: str
    ask: Ask
    chat: bool  # it has channels: thinking and calls are read apart from the text
    atoms: list[Atom] = field(default_factory=list)
    reasoning_at: int | None = None
    text_at: int | None = None
    calls: list[tuple[str, Any]] = field(default_factory=list)
    ended: str = "eos"  # eos, word, limit or calls
    tokens: list[int | bytes] = field(default_factory=list)

    def said(self) -> tuple[str, str, list[tuple[str, Any]]]:
        """The text, reasoning and calls the answer must read as (unless the limit cut it)."""
        written = self.atoms[: self.atoms.index(ENDOFTEXT)] if ENDOFTEXT in self.atoms \
            else self.atoms  # fmt: skip
        stop = self.ask.stop[0] if self.ask.stop else None
        if not self.chat:  # no channels: a marker's text is text, a control token nothing
            text = "".join(a for a in written if isinstance(a, str))
            return (text.split(stop)[0] if stop else text), "", []
        reasoning = self.atoms[self.reasoning_at] if self.reasoning_at is not None else ""
        text = self.atoms[self.text_at] if self.text_at is not None else ""
        assert isinstance(reasoning, str) and isinstance(text, str)
        calls = self.calls
        if stop and stop in reasoning:  # the stop ends it in its thinking
            return "", reasoning.split(stop)[0], []
        if stop and stop in text:
            return text.split(stop)[0], reasoning, []
        blank = calls and not text.strip()  # blanks before a call are no message
        return ("" if blank else text), reasoning, calls


def marker(rng: random.Random, token: int) -> Atom:
    """A marker as its control token, or as plain text (which the random cut may split)."""
    return MARKERS[token] if rng.random() < 0.4 else token


def words(rng: random.Random, n_max: int = 4) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(1, n_max)))


def call_text(rng: random.Random) -> tuple[str, tuple[str, Any]]:
    city = rng.choice(CITIES)
    body = f'{{"name": "get_weather", "arguments": {{"city": "{city}"}}}}'
    nl = rng.choice(["\n", ""])
    return f"{nl}{body}{nl}", ("get_weather", {"city": json.loads(f'"{city}"')})


def make_case(rng: random.Random, dialect: DialectReader, i: int, seed: int) -> Case:
    """A random answer this dialect can be asked for; see the module's docstring."""
    key = f"{dialect.name}-{i}"
    required = dialect.calls and dialect.name != "ollama-chat" and rng.random() < 0.25
    stop = (rng.choice(STOPS),) if rng.random() < 0.5 else ()
    ask = Ask(f"case {key}", tools=dialect.calls, stop=stop, seed=seed,
              tool_choice="required" if required else "auto",
              temperature=rng.choice((0.0, 0.8)))  # fmt: skip
    case = Case(key, ask, dialect.chat)
    atoms = case.atoms
    if required:  # the grammar holds the answer to calls, from its first token
        calls(rng, case, plain_start=False)
        return finish_case(rng, case)
    if dialect.chat and rng.random() < 0.5:  # thinking first
        case.reasoning_at = len(atoms) + 1
        atoms += [marker(rng, THINK), words(rng), marker(rng, THINK_END)]
    elif not dialect.chat and rng.random() < 0.3:  # a raw completion's markers are its text
        atoms.append(marker(rng, rng.choice(list(MARKERS))))
    if dialect.chat:
        case.text_at = len(atoms)
    atoms.append(words(rng) if rng.random() < 0.85 else "")
    if dialect.calls and rng.random() < 0.5:
        calls(rng, case, plain_start=True)
    return finish_case(rng, case)


def calls(rng: random.Random, case: Case, plain_start: bool) -> None:
    """One or two calls. Under `auto` the first start marker may be plain text; the grammar
    that follows it (and `required`'s, from the first token) writes markers as control
    tokens."""
    for k in range(rng.randint(1, 2)):
        body, call = call_text(rng)
        start = marker(rng, TOOL_CALL) if plain_start and not k else TOOL_CALL
        case.atoms += (["\n"] if k else []) + [start, body, TOOL_CALL_END]
        case.calls.append(call)
    case.ended = "calls"


def finish_case(rng: random.Random, case: Case) -> Case:
    """The stop string written somewhere in the text or thinking (asked for or not: then it
    is text), or an explicit end token with text after it that never shows; then the random
    cut, and maybe a limit within it."""
    stop = case.ask.stop[0] if case.ask.stop else rng.choice(STOPS)
    texts = [k for k in (case.reasoning_at, case.text_at) if k is not None]
    if not case.chat:
        texts = [k for k, a in enumerate(case.atoms) if isinstance(a, str)]
    roll = rng.random()
    if roll < 0.4 and texts:
        at = rng.choice(texts)
        text = case.atoms[at]
        assert isinstance(text, str)
        cut = rng.randint(0, len(text))
        case.atoms[at] = text[:cut] + stop + text[cut:]
        if case.ask.stop:
            case.ended = "word"
    elif roll < 0.55:
        case.atoms += [ENDOFTEXT, words(rng)]  # the other end token: nothing after it shows
    case.tokens = cut_into_tokens(rng, case.atoms)
    if rng.random() < 0.3:
        case.ask = replace(case.ask, max_tokens=rng.randint(1, max(1, len(case.tokens))))
        case.ended = "limit"
    else:  # a limit it does not reach (`/v1/completions` would stop at 16 tokens)
        case.ask = replace(case.ask, max_tokens=len(case.tokens) + 8)
    return case


def cut_into_tokens(rng: random.Random, atoms: list[Atom]) -> list[int | bytes]:
    """Each run of text cut into pieces of bytes at random places (a UTF-8 character may be
    cut too); control tokens as they are."""
    out: list[int | bytes] = []
    run = b""
    chance = rng.choice((0.1, 0.3, 0.5))
    for atom in [*atoms, -1]:
        if isinstance(atom, str):
            run += atom.encode()
            continue
        piece = b""
        for byte in run:
            piece += bytes([byte])
            if rng.random() < chance:
                out.append(piece)
                piece = b""
        out += [piece] if piece else []
        run = b""
        if atom >= 0:
            out.append(atom)
    return out


def all_cases() -> dict[str, list[Case]]:
    rng = random.Random(29)
    return {d.name: [make_case(rng, d, i, seed=i) for i in range(N_CASES)] for d in DIALECTS}


CASES = all_cases()


@pytest.fixture(scope="module")
def app() -> Iterator[ScriptedApp]:
    """One app whose vocabulary holds every piece any case is cut into; each request is
    answered by the case its prompt names."""
    by_key = {c.key: c for cases in CASES.values() for c in cases}
    pieces = {t for c in by_key.values() for t in c.tokens if isinstance(t, bytes)}

    def respond(prompt: list[int]) -> list[int | bytes]:
        key = re.findall(r"case ([\w-]+)", engine.text(prompt))[-1]
        return by_key[key].tokens

    engine = ScriptedEngine(
        respond=respond, words=sorted(pieces), n_seq_max=AT_ONCE * 2, n_ctx=AT_ONCE * 2 * 1024
    )
    with scripted_app(engine=engine) as app:
        yield app


async def both(app: ScriptedApp, dialect: DialectReader, cases: list[Case]) -> list[Any]:
    """Each case asked whole and streamed, at once, `AT_ONCE` cases at a time."""
    gate = asyncio.Semaphore(AT_ONCE)
    async with app.client() as client:

        async def ask(case: Case, stream: bool) -> Any:
            r = await client.post(dialect.path, json=dialect.body(case.ask, stream))
            assert r.status_code == 200, (case.key, r.text)
            return r.text if stream else r.json()

        async def pair(case: Case) -> tuple[Any, Any]:
            async with gate:
                return await asyncio.gather(ask(case, False), ask(case, True))

        return list(await asyncio.gather(*(pair(c) for c in cases)))


@pytest.mark.parametrize("dialect", DIALECTS, ids=[d.name for d in DIALECTS])
def test_a_stream_reads_as_its_whole_answer(app: ScriptedApp, dialect: DialectReader) -> None:
    cases = CASES[dialect.name]
    answers = asyncio.run(both(app, dialect, cases))
    for case, (whole, wire) in zip(cases, answers, strict=True):
        got = dialect.whole(whole)
        streamed = dialect.stream(wire)
        assert streamed == got, (case.key, case.tokens)
        assert len(set(got.ids)) == len(got.ids)
        if case.ended != "limit":
            said = (got.text, got.reasoning, list(got.calls))
            assert said == case.said(), (case.key, case.tokens)
            assert got.finish[dialect.reason] == dialect.words[case.ended], case.key
