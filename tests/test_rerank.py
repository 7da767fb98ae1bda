"""Rerank prompts as llama.cpp's `format_prompt_rerank` builds them, why a server cannot
rerank, and the routes' refusals through the scripted app (whose model has no rank head)."""

from __future__ import annotations

from endmark.engine import Vocab
from endmark.rerank import rerank_tokens, reranking_problem
from tests.scripted_app import scripted_app

BOS, EOS, SEP = 1, 2, 3


def vocab(eos: int | None = EOS, add_eos: bool = True, add_sep: bool = True) -> Vocab:
    return Vocab(
        1000, BOS, eos, None, None, True, frozenset(), frozenset(), [], [],
        sep=SEP, add_eos=add_eos, add_sep=add_sep,
    )  # fmt: skip


def tok(text: str, add_special: bool, parse_special: bool) -> list[int]:
    assert not add_special
    return [(500 if parse_special else 100) + ord(c) for c in text]


def plain(text: str) -> list[int]:
    return tok(text, False, False)


def test_bos_query_eos_sep_document_eos_as_the_vocabulary_adds_them() -> None:
    assert rerank_tokens("q", "dd", vocab(), tok) == [BOS, *plain("q"), EOS, SEP, *plain("dd"), EOS]
    assert rerank_tokens("q", "d", vocab(add_eos=False, add_sep=False), tok) == [BOS, 213, 200]
    no_eos = vocab(eos=None, add_sep=False)  # llama.cpp's fallback: sep stands for eos
    assert rerank_tokens("q", "d", no_eos, tok) == [BOS, *plain("q"), SEP, *plain("d"), SEP]


def test_the_models_rerank_template_with_special_tokens_parsed() -> None:
    template = "<q>{query}</q><d>{document}</d>"
    want = tok("<q>why</q><d>because</d>", False, True)
    assert rerank_tokens("why", "because", vocab(), tok, template) == want


def test_why_a_server_cannot_rerank() -> None:
    assert reranking_problem(True, "rank") is None
    status, message = reranking_problem(False, "rank") or (0, "")
    assert status == 400 and "no rank head" in message
    status, message = reranking_problem(True, "mean") or (0, "")
    assert status == 501 and "--reranking" in message


def test_the_routes_refuse_a_model_without_a_rank_head_and_bad_bodies() -> None:
    good = {"query": "q", "documents": ["a", "b"]}
    bad = [{**good, "documents": d} for d in ([], None, 123, [1, 2, 3])]
    bad += [{"documents": ["a"]}, {**good, "query": 5}, {**good, "top_n": -1}]
    with scripted_app() as app:
        for path in ("/rerank", "/reranking", "/v1/rerank", "/v1/reranking"):
            r = app.post(path, good)
            assert r.status_code == 400 and "no rank head" in r.json()["error"]["message"]
        assert app.post("/v1/rerank", good).json()["error"]["type"] == "invalid_request_error"
        for body in bad:
            r = app.post("/rerank", body)
            assert r.status_code == 400 and r.json()["error"]["message"], body
