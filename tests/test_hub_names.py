"""`user/repo[:tag]` names and llama.cpp's choice of files."""

from __future__ import annotations

import pytest

from endmark.hub.names import (
    BadName,
    ModelRef,
    parse_ref,
    pick_mmproj,
    pick_model,
    shards_of,
    tags_of,
)

FILES = [
    "README.md",
    "gemma-3-4b-it-Q8_0.gguf",
    "gemma-3-4b-it-Q4_K_M.gguf",
    "gemma-3-4b-it-q4_0.gguf",
    "mmproj-model-f16.gguf",
    "BF16/gemma-3-4b-it-BF16-00001-of-00002.gguf",
    "BF16/gemma-3-4b-it-BF16-00002-of-00002.gguf",
]


def test_names_with_hosts_and_tags() -> None:
    assert parse_ref("ggml-org/gemma-3-4b-it-GGUF") == ModelRef("ggml-org/gemma-3-4b-it-GGUF")
    assert parse_ref("hf.co/user/repo:q4_k_m") == ModelRef("user/repo", "q4_k_m")
    assert parse_ref("huggingface.co/user/repo:latest") == ModelRef("user/repo")
    assert parse_ref("user/repo:q8_0").name() == "user/repo:Q8_0"
    for bad in ("repo", "user/repo/x", "user/repo:a:b", ""):
        with pytest.raises(BadName, match="user/repo"):
            parse_ref(bad)


def test_the_tag_picks_the_quantization_case_insensitively() -> None:
    assert pick_model(FILES, "q8_0") == "gemma-3-4b-it-Q8_0.gguf"
    assert pick_model(FILES, "Q4_0") == "gemma-3-4b-it-q4_0.gguf"
    assert pick_model(FILES, "") == "gemma-3-4b-it-Q4_K_M.gguf"  # llama-server's default
    assert pick_model(FILES, "IQ2_XS") is None
    assert pick_model(["a-F16.gguf", "mmproj-F16.gguf"], "") == "a-F16.gguf"  # else the first


def test_a_split_model_is_all_its_shards_and_a_projector_comes_beside() -> None:
    first = pick_model(FILES, "bf16")
    assert first == "BF16/gemma-3-4b-it-BF16-00001-of-00002.gguf"
    assert shards_of(FILES, first) == [first, "BF16/gemma-3-4b-it-BF16-00002-of-00002.gguf"]
    assert pick_mmproj(FILES, "gemma-3-4b-it-Q8_0.gguf") == "mmproj-model-f16.gguf"
    assert pick_mmproj(["a-Q4_0.gguf"], "a-Q4_0.gguf") is None
    assert tags_of(FILES) == ["BF16", "Q4_0", "Q4_K_M", "Q8_0"]
