"""Stream equals whole on the bundled model (issue 29, item 6): in every dialect, a streamed
answer and a whole one with the same seed, at temperature 0.8, carry the same text, calls and
finish. Three seeds a dialect (a plain answer, one ended by a stop string, one offered tools),
all 42 requests sent at once to one server of four slots.

Sampling drafts are off at temperature > 0 (`prepare.drafts_for_sampling`), and the server
evaluates every prompt whole (`--no-cache-prompt`), so a seed decides the tokens but for the
batch a step is decoded in: a batched decode may round differently from another batch's,
and where two tokens nearly tie, the same seed may then draw the other (`test_concurrency`
shows such a tie under greedy decoding; here, all 21 pairs agreed when this was written). A
pair that differs is therefore asked again, stream and whole one after the other with
nothing else running: a renderer's difference shows there too, a batch's does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import RunningServer, start_server, stop_server
from tests.dialect_readers import DIALECTS, Ask, DialectReader, Reading

CHATML = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
QUESTIONS = ("Write a short poem about the sea.", "Tell me a fact about cats.",
             "What is the weather in Paris?")  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("stream-whole")
    srv = start_server(folder, "-np", "4", "-c", "4096", "--no-cache-prompt")
    yield srv
    stop_server(srv)


def asks(dialect: DialectReader) -> list[Ask]:
    """Three seeds: a plain answer cut by the limit, one that a stop string ends, and one
    offered tools (required where the dialect can ask it)."""
    out = []
    for k, question in enumerate(QUESTIONS):
        text = question if dialect.chat else CHATML.format(question)
        tools = k == 2 and dialect.calls
        choice = "auto" if dialect.name == "ollama-chat" else "required"
        out.append(Ask(text, tools=tools, tool_choice=choice, seed=29 + k, temperature=0.8,
                       max_tokens=40 if tools else 16, stop=(",",) if k == 1 else ()))  # fmt: skip
    return out


def read(url: str, dialect: DialectReader, ask: Ask, stream: bool) -> Reading:
    r = httpx.post(url + dialect.path, json=dialect.body(ask, stream), timeout=300)
    assert r.status_code == 200, r.text
    return dialect.stream(r.text) if stream else dialect.whole(r.json())


def test_a_seeded_stream_reads_as_its_whole_answer_in_every_dialect(
    server: RunningServer,
) -> None:
    jobs = [(d, a, stream) for d in DIALECTS for a in asks(d) for stream in (False, True)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda job: read(server.url, *job), jobs))
    differed = []
    for k in range(0, len(jobs), 2):
        dialect, ask, _ = jobs[k]
        whole, streamed = got[k], got[k + 1]
        if streamed != whole:  # a batch's rounding, or a renderer's fault: asked alone
            differed.append((dialect.name, ask.seed))
            whole = read(server.url, dialect, ask, False)
            streamed = read(server.url, dialect, ask, True)
        assert streamed == whole, (dialect.name, ask)
    assert len(differed) <= 2, differed  # a near tie now and then; more is no accident
