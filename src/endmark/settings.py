"""Server settings: one dataclass, from command-line flags and ENDMARK_* environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields


@dataclass
class Settings:
    model: str | None = None
    ctx_size: int = 4096
    threads: int | None = None
    parallel: int = 4
    batch_size: int = 512
    queue_size: int = 64
    host: str = "127.0.0.1"
    port: int = 8080
    verbose: bool = False
    alias: str | None = None
    chat_template: str | None = None

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Defaults, then ENDMARK_<NAME> variables, then explicit (non-None) overrides."""
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = os.environ.get(f"ENDMARK_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _parse(raw, f.default)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _parse(raw: str, default: object) -> object:
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int) or default is None and raw.strip().isdigit():
        return int(raw)
    return raw
