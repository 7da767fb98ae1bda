"""The FIM prompt of `/infill`, as llama.cpp's `format_prompt_infill` assembles it, on a toy
vocabulary (one token per character); and the route's refusals, through the scripted app."""

from __future__ import annotations

import pytest

from endmark.engine import FimTokens, Vocab
from endmark.infill import (
    CHUNK_PREFIX,
    FILE_NAME,
    REPO_NAME,
    InfillLimits,
    InfillParts,
    infill_tokens,
    missing_fim_tokens,
)
from endmark.invalid import InvalidRequest
from tests.scripted_app import scripted_app

PRE, SUF, MID, PAD, REP, SEP, BOS = 10, 11, 12, 13, 14, 15, 1
REPO_LEVEL = FimTokens(PRE, SUF, MID, PAD, REP, SEP)
PLAIN = FimTokens(PRE, SUF, MID, PAD)
WIDE = InfillLimits(n_batch=512, n_predict=-1, n_ctx=4096)


def vocab(fim: FimTokens, add_bos: bool = True) -> Vocab:
    return Vocab(1000, BOS, 2, None, None, add_bos, frozenset(), frozenset(), [], [], fim=fim)


def tok(text: str, add_special: bool = False, parse_special: bool = False) -> list[int]:
    assert not add_special  # infill never adds bos by tokenizing
    return [100 + ord(c) for c in text]


PARTS = InfillParts("def f():\n", "\nreturn x", (("a.py", "A = 1\n"), ("b.py", "B")), "  x =")


def test_the_repo_level_pattern_when_the_vocabulary_has_repo_and_file_tokens() -> None:
    got = infill_tokens(PARTS, vocab(REPO_LEVEL), tok, WIDE)
    want = [
        REP, *tok(REPO_NAME),
        SEP, *tok("a.py\n"), *tok("A = 1\n"),
        SEP, *tok("b.py\n"), *tok("B"),
        SEP, *tok(FILE_NAME),
        BOS, PRE, *tok("def f():\n"), *tok("  x ="), SUF, *tok("\nreturn x"), MID,
    ]  # fmt: skip
    assert got == want


def test_plain_prefixing_without_them_and_suffix_first_with_spm() -> None:
    extra = [*tok(CHUNK_PREFIX), *tok("A = 1\n"), *tok(CHUNK_PREFIX), *tok("B")]
    head = [PRE, *tok("def f():\n"), *tok("  x =")]
    tail = [SUF, *tok("\nreturn x")]
    assert infill_tokens(PARTS, vocab(PLAIN), tok, WIDE) == [*extra, BOS, *head, *tail, MID]
    spm = InfillLimits(512, -1, 4096, spm=True)
    assert infill_tokens(PARTS, vocab(PLAIN), tok, spm) == [*extra, BOS, *tail, *head, MID]
    no_bos = vocab(PLAIN, add_bos=False)
    assert infill_tokens(PARTS, no_bos, tok, WIDE) == [*extra, *head, *tail, MID]


def test_batch_and_context_limits_cut_as_llama_server_cuts() -> None:
    parts = InfillParts("p" * 100, "s" * 100, (("f", "e" * 100),), "ab")
    limits = InfillLimits(n_batch=64, n_predict=20, n_ctx=150)  # extra: 150 - 64 - 40 = 46
    got = infill_tokens(parts, vocab(REPO_LEVEL), tok, limits)
    extra = [REP, *tok(REPO_NAME), SEP, *tok("f\n"), *tok("e" * 100), SEP, *tok(FILE_NAME)]
    want = [
        *extra[-46:],
        BOS, PRE, *tok("p" * 48), *tok("ab"),  # the prefix's last 3/4 of a batch
        SUF, *tok("s" * (16 - 2 - 2)), MID,  # the suffix's first quarter, less the prompt
    ]  # fmt: skip
    assert got == want
    no_room = InfillLimits(n_batch=64, n_predict=100, n_ctx=150)  # no extra context at all
    assert infill_tokens(parts, vocab(REPO_LEVEL), tok, no_room)[:2] == [BOS, PRE]
    long_prompt = InfillParts("p", "s" * 10, (), "x" * 20)  # the suffix gets nothing
    assert infill_tokens(long_prompt, vocab(PLAIN), tok, InfillLimits(64, -1, 4096))[-2:] == [
        SUF, MID,
    ]  # fmt: skip


def test_prefix_and_suffix_may_mix_texts_and_token_ids() -> None:
    parts = InfillParts(["a", 7, "b"], [8], (), "")
    assert infill_tokens(parts, vocab(PLAIN), tok, WIDE) == [
        BOS, PRE, *tok("a"), 7, *tok("b"), SUF, 8, MID,
    ]  # fmt: skip
    with pytest.raises(InvalidRequest) as exc:
        infill_tokens(InfillParts([5000], ""), vocab(PLAIN), tok, WIDE)
    assert exc.value.param == "input_prefix"


def test_a_vocabulary_without_fim_tokens_cannot_infill() -> None:
    assert missing_fim_tokens(vocab(FimTokens())) == ["prefix", "suffix", "middle"]
    assert missing_fim_tokens(vocab(FimTokens(pre=3, mid=4))) == ["suffix"]
    with pytest.raises(InvalidRequest, match="Infill is not supported by this model"):
        infill_tokens(PARTS, vocab(FimTokens(pre=3)), tok, WIDE)


def test_the_route_refuses_a_model_without_fim_tokens_and_bad_bodies() -> None:
    body = {"input_prefix": "def f", "input_suffix": "", "n_predict": 1}
    bad_extras = [{}, {"filename": "ok"}, {"filename": 123}, {"filename": 123, "text": "abc"}]
    with scripted_app() as app:  # the scripted vocabulary has no FIM tokens
        r = app.post("/infill", body)
        assert r.status_code == 400 and "FIM prefix, suffix, middle" in r.json()["error"]["message"]
        for extra in bad_extras:
            assert app.post("/infill", {**body, "input_extra": [extra]}).status_code == 400
        for wrong in ({"input_prefix": "x"}, {**body, "prompt": ["x"]}, {**body, "input_extra": 1}):
            assert app.post("/infill", wrong).status_code == 400, wrong
