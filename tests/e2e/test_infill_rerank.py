"""`/infill` and reranking through the real server, on made models (random weights, real
vocabularies; `tests/gguf_factory.py`): one server per model.

- `fim`: a llama with FIM prefix/suffix/middle/pad and repo/file-separator tokens, started
  with `--rerank` although it has no rank head: repo-level infill, and reranking refused.
- `rank`: a Qwen3-style reranker (rank pooling, a `cls.output` head) whose vocabulary has FIM
  prefix/suffix/middle only, started with `--embedding --pooling rank --spm-infill`: plain,
  suffix-first infill, and reranking.

The infill prompt's token ids are checked as llama-server shows them: the answer's `prompt`
(the tokens' text, special tokens written) and `tokens_evaluated`, and then exactly, id for
id, by sending the expected ids as a `/completion` prompt: the slot's cache holds the infill's
prompt, so all but the last token are reported as `tokens_cached` only if every id is the same.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer, start_server, stop_server
from tests.gguf_factory import FIM_TOKENS, build_fim_gguf, build_rank_gguf

FIM_BATCH, FIM_CTX, FIM_N = 64, 512, 150
FIM_EXTRA = FIM_CTX - FIM_BATCH - 2 * FIM_N  # the extra context keeps its last 148 tokens
RANK_BATCH, RANK_CTX = 128, 512
DOCS = ["hello world", "the answer is", "a", "world hello the a is answer"]


@pytest.fixture(scope="module")
def fim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("fim")
    model = build_fim_gguf(folder / "fim.gguf", repo_level=True)
    srv = start_server(
        folder, "-m", str(model), "--rerank", "-c", str(FIM_CTX), "-np", "1",
        "-b", str(FIM_BATCH), "-n", str(FIM_N),
    )  # fmt: skip
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def rank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("rank")
    model = build_rank_gguf(folder / "rank.gguf", fim_plain=True)
    srv = start_server(
        folder, "-m", str(model), "--embedding", "--pooling", "rank", "--spm-infill",
        "-c", str(RANK_CTX), "-np", "1", "-b", str(RANK_BATCH),
    )  # fmt: skip
    yield srv
    stop_server(srv)


def post(srv: RunningServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(srv.url + path, json=body, timeout=120)


def tokens(srv: RunningServer, text: str, special: bool = False) -> list[int]:
    return list(_tokens(srv.url, text, special))


@functools.cache
def _tokens(url: str, text: str, special: bool) -> tuple[int, ...]:
    body = {"content": text, "add_special": False, "parse_special": special}
    return tuple(httpx.post(url + "/tokenize", json=body, timeout=60).json()["tokens"])


def expected_infill(
    srv: RunningServer,
    body: dict[str, Any],
    repo_level: bool,
    n_batch: int,
    n_extra: int,
    spm: bool = False,
) -> list[int]:
    """llama-server's pattern, written out from its README and `format_prompt_infill`."""
    fim = {k: tokens(srv, text, special=True)[0] for k, text in FIM_TOKENS.items()}
    extra: list[int] = []
    if repo_level:
        extra += [fim["rep"], *tokens(srv, "myproject\n")]
    for chunk in body.get("input_extra", []):
        if repo_level:
            extra += [fim["sep"], *tokens(srv, chunk.get("filename", "tmp") + "\n")]
        else:
            extra += tokens(srv, "\n\n--- snippet ---\n\n")
        extra += tokens(srv, chunk["text"])
    if repo_level:
        extra += [fim["sep"], *tokens(srv, "filename\n")]
    prompt = tokens(srv, body.get("prompt", ""), special=True)
    prefix = tokens(srv, body["input_prefix"])[-(3 * (n_batch // 4)) :]
    suffix = tokens(srv, body["input_suffix"])[: max(0, n_batch // 4 - 2 - len(prompt))]
    head, tail = [fim["pre"], *prefix, *prompt], [fim["suf"], *suffix]
    first, second = (tail, head) if spm else (head, tail)
    bos = 1  # <s>: both models add it
    return [*extra[len(extra) - min(n_extra, len(extra)) :], bos, *first, *second, fim["mid"]]


def check_infill_prompt(srv: RunningServer, body: dict[str, Any], want: list[int]) -> None:
    r = post(srv, "/infill", {**body, "n_predict": 1, "temperature": 0})
    assert r.status_code == 200, r.text
    answer = r.json()
    text = post(srv, "/detokenize", {"tokens": want}).json()["content"]
    assert answer["prompt"] == text and answer["tokens_evaluated"] == len(want)
    again = post(srv, "/completion", {"prompt": want, "n_predict": 1}).json()
    assert again["tokens_cached"] == len(want) - 1  # the same ids, up to the last one


def test_repo_level_infill_prompt_is_llama_servers_pattern(fim: RunningServer) -> None:
    small = {
        "input_extra": [{"filename": "a.py", "text": "hello world"}, {"text": "the answer"}],
        "input_prefix": "def hello():\n", "input_suffix": "\nworld", "prompt": " a",
    }  # fmt: skip
    want = expected_infill(fim, small, True, FIM_BATCH, FIM_EXTRA)
    assert want == expected_infill(fim, small, True, 10**6, 10**6)  # nothing is cut here
    check_infill_prompt(fim, small, want)
    cut = {  # longer than the batch's share of each part: each is cut as llama-server cuts
        "input_extra": [{"filename": "x.py", "text": "hello world " * 80}],
        "input_prefix": "the answer is " * 30, "input_suffix": "hello a " * 30, "prompt": "is",
    }  # fmt: skip
    assert expected_infill(fim, cut, True, FIM_BATCH, FIM_EXTRA)[0] != 7  # <|repo_name|> cut
    check_infill_prompt(fim, cut, expected_infill(fim, cut, True, FIM_BATCH, FIM_EXTRA))


def test_infill_takes_completion_options_and_streams(fim: RunningServer) -> None:
    body = {"input_prefix": "hello", "input_suffix": "world", "n_predict": 2, "temperature": 0}
    whole = post(fim, "/infill", {**body, "return_tokens": True, "ignore_eos": True}).json()
    assert whole["tokens_predicted"] == len(whole["tokens"]) == 2
    assert whole["stop_type"] == "limit" and whole["generation_settings"]["n_predict"] == 2
    r = post(fim, "/infill", {**body, "stream": True, "ignore_eos": True})
    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert chunks[-1]["stop"] is True
    assert "".join(c["content"] for c in chunks) == whole["content"]


def test_plain_suffix_first_infill_without_repo_tokens(rank: RunningServer) -> None:
    body = {
        "input_extra": [{"filename": "a.py", "text": "hello"}, {"filename": "b", "text": "a"}],
        "input_prefix": "the answer", "input_suffix": " is world", "prompt": "hello",
    }  # fmt: skip
    n_extra = RANK_CTX - RANK_BATCH + 2  # the server's -n is -1
    check_infill_prompt(rank, body, expected_infill(rank, body, False, RANK_BATCH, n_extra, True))


def test_a_model_without_a_rank_head_cannot_rerank(fim: RunningServer) -> None:
    r = post(fim, "/v1/rerank", {"query": "hello", "documents": DOCS})
    assert r.status_code == 400 and "no rank head" in r.json()["error"]["message"]
    assert "no rank head: /rerank will answer 400" in fim.log()


def test_every_document_is_scored_on_every_route_and_top_n_cuts(rank: RunningServer) -> None:
    body = {"query": "hello answer", "documents": DOCS}
    routes = ("/rerank", "/reranking", "/v1/rerank", "/v1/reranking")

    async def send() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=rank.url, timeout=120) as c:
            asks = [c.post(r, json=body) for r in routes]
            asks.append(c.post("/rerank", json={**body, "documents": DOCS[::-1]}))
            asks.append(c.post("/rerank", json={**body, "top_n": 2}))
            asks.append(c.post("/rerank", json={"query": "hello answer", "texts": DOCS,
                                                "return_text": True}))  # fmt: skip
            return list(await asyncio.gather(*asks))

    answers = [r.json() for r in asyncio.run(send())]
    full = answers[0]
    assert all(a == full for a in answers[1:4])  # the four routes answer alike
    results = full["results"]
    assert sorted(r["index"] for r in results) == list(range(len(DOCS)))
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(DOCS)
    by_index = {r["index"]: r["relevance_score"] for r in results}  # best first
    backwards = {len(DOCS) - 1 - r["index"]: r["relevance_score"] for r in answers[4]["results"]}
    assert backwards == pytest.approx(by_index, abs=1e-4)  # each score is its document's
    assert answers[-2]["results"] == results[:2]
    tei = answers[-1]
    assert [(t["index"], t["text"]) for t in tei] == [(i, DOCS[i]) for i in by_index]
    # bos query eos sep document eos, per document, as llama.cpp builds a rerank prompt
    query = len(tokens(rank, body["query"]))
    used = sum(4 + query + len(tokens(rank, d)) for d in DOCS)
    assert full["usage"] == {"prompt_tokens": used, "total_tokens": used}
