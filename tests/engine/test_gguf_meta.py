from __future__ import annotations

from pathlib import Path

import numpy as np

from endmark.endings import EogSet
from endmark.engine.gguf_meta import read_int_array, read_tensors
from endmark.engine.llamacpp import LlamaCppEngine
from endmark.models import bundled_model_path
from tests.gguf_factory import FAMILIES, build_gguf


def test_eos_token_ids_array_is_read_and_joins_the_end_tokens(tmp_path: Path) -> None:
    ids = ["</s>", "<|speaker:bot|>"]
    path = build_gguf(tmp_path / "m.gguf", FAMILIES["unknown"], eos_token_ids=ids)
    assert read_int_array(path, "tokenizer.ggml.eos_token_ids") == [2, 4]
    assert read_int_array(path, "tokenizer.ggml.bos_token_id") is None  # a scalar, not an array
    assert read_int_array(path, "no.such.key") is None
    engine = LlamaCppEngine(str(path), n_ctx=256, n_threads=1)
    try:
        assert engine.vocab.eos_token_ids == (2, 4)
        eog = EogSet.from_vocab(engine.vocab)
        assert eog.tokens[4].sources == ("eos_token_ids",)
    finally:
        engine.close()


def test_files_without_the_key_or_not_gguf(tmp_path: Path) -> None:
    assert read_int_array(bundled_model_path(), "tokenizer.ggml.eos_token_ids") is None
    other = tmp_path / "x.bin"
    other.write_bytes(b"nope" * 10)
    assert read_int_array(other, "tokenizer.ggml.eos_token_ids") is None


def test_tensors_are_read_with_shapes_and_types_as_the_gguf_package_reads_them() -> None:
    gguf = __import__("gguf")
    path = bundled_model_path()
    theirs = [(t.name, len(t.shape), int(np.prod(t.shape[1:])), int(t.tensor_type))
              for t in gguf.GGUFReader(path).tensors]  # fmt: skip
    assert [(t.name, t.n_dims, t.n_rows, t.ggml_type) for t in read_tensors(path)] == theirs
    assert read_tensors(Path(__file__)) == []  # not GGUF
