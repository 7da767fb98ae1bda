"""Which models a multi-model server offers: a folder, repeated `-m`, and a models file.

Each model gets an id (the file stem, a subfolder's name, or its alias), more names it answers
to, and the settings its own worker runs with. Nothing here loads a model.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from endmark.models import check_gguf
from endmark.settings import Settings

# Settings that belong to the whole server, not to one model's worker.
SERVER_WIDE = frozenset(
    {"model", "host", "port", "api_key", "api_key_file", "cors", "alias", "metrics"}
    | {"models_dir", "models_file", "models_max", "models_memory", "models_autoload"}
    | {"default_model", "keep_alive", "shutdown_grace", "max_body_bytes"}
    | {"replicas", "ray_address"}
    | {"cors_methods", "cors_headers", "cors_credentials", "api_prefix"}
    | {"mcp_servers_config", "mcp_servers_json"}  # the router alone runs the MCP servers
)
# Settings a models file may give one model: how its worker loads and serves it.
PER_MODEL = frozenset(f.name for f in fields(Settings)) - SERVER_WIDE


@dataclass
class ModelEntry:
    id: str
    path: Path
    aliases: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)

    def names(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)


class CatalogError(ValueError):
    """The models cannot be served as given (a missing file, a clash of names, a bad key)."""


def scan_folder(folder: Path) -> list[ModelEntry]:
    """`*.gguf` files (id: the stem) and subfolders holding one model (id: the folder's name;
    the first shard of a split model; a multimodal projector is not a model)."""
    if not folder.is_dir():
        raise CatalogError(f"--models-dir: {folder} is not a folder")
    found = [ModelEntry(p.stem, p) for p in sorted(folder.glob("*.gguf")) if _is_model(p)]
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in sub.rglob("*.gguf") if _is_model(p))
        if files:
            found.append(ModelEntry(sub.name, files[0]))
    return found


def _is_model(path: Path) -> bool:
    if path.name.lower().startswith("mmproj"):
        return False
    shard = re.search(r"-(\d{5})-of-\d{5}\.gguf$", path.name)
    return shard is None or shard.group(1) == "00001"


def from_paths(paths: list[str], aliases: list[str]) -> list[ModelEntry]:
    """Repeated `-m`, each named by the `--alias` in the same place (comma-separated names:
    the first is the id), or by its stem."""
    out = []
    for i, raw in enumerate(paths):
        path = Path(raw).expanduser()
        names = [a.strip() for a in (aliases[i] if i < len(aliases) else "").split(",")]
        names = [n for n in names if n]
        out.append(ModelEntry(names[0] if names else path.stem, path, tuple(names[1:])))
    return out


def read_models_file(path: Path, known: list[ModelEntry]) -> list[ModelEntry]:
    """A TOML table per model, `[models.ID]`: `path` (needed unless the id is already known),
    `aliases`, and any per-model setting under its flag name (`ctx-size`, `parallel`,
    `threads`, `chat-template`, ...)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"--models-file {path}: {exc}") from None
    by_id = {e.id: e for e in known}
    out = list(known)
    for model_id, table in (data.get("models") or {}).items():
        if not isinstance(table, dict):
            raise CatalogError(f"--models-file: [models.{model_id}] must be a table")
        values = {str(k).replace("-", "_"): v for k, v in table.items()}
        entry = by_id.get(model_id)
        if "path" in values:
            model_path = Path(str(values.pop("path"))).expanduser()
            if not model_path.is_absolute():
                model_path = path.parent / model_path
            if entry is None:
                entry = ModelEntry(model_id, model_path)
                out.append(entry)
                by_id[model_id] = entry
            else:
                entry.path = model_path
        elif entry is None:
            raise CatalogError(f"--models-file: [models.{model_id}] needs a path")
        aliases = values.pop("aliases", ())
        entry.aliases += tuple([aliases] if isinstance(aliases, str) else aliases)
        unknown = sorted(set(values) - PER_MODEL)
        if unknown:
            raise CatalogError(f"--models-file: [models.{model_id}] has unknown keys {unknown}")
        entry.settings.update(values)
    return out


def check_catalog(entries: list[ModelEntry]) -> None:
    """Every file is a GGUF, and every name points at one model."""
    if not entries:
        raise CatalogError("no models found")
    seen: dict[str, str] = {}
    for entry in entries:
        if not entry.path.is_file():
            raise CatalogError(f"model file not found: {entry.path}")
        check_gguf(entry.path)
        for name in entry.names():
            if name in seen and seen[name] != entry.id:
                raise CatalogError(f"two models are named '{name}': {seen[name]}, {entry.id}")
            seen[name] = entry.id


def parse_bytes(text: str) -> int:
    """`8G`, `512M`, `1.5GiB`, or a plain count of bytes."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"not a size: {text!r} (e.g. 8G, 512M)")
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)


def parse_duration(value: str | float | int | None) -> float | None:
    """Ollama's `keep_alive`: seconds as a number, or a Go duration (`5m`, `1h30m`, `10s`);
    negative keeps the model loaded for good (None), 0 unloads it now."""
    if value is None or isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = re.findall(r"(-?[\d.]+)(ms|h|m|s)", text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"not a duration: {value!r} (e.g. 5m, 1h, 30s, -1)") from None
            unit = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
            seconds = sum(float(n) * unit[u] for n, u in parts)
    return None if seconds < 0 else seconds
