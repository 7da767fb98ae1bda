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
    api_key: str | None = None  # several: comma-separated, or one per line in api_key_file
    api_key_file: str | None = None
    n_predict: int = -1  # server-side cap on n_predict / max_tokens; -1: none
    max_body_bytes: int = 4 * 1024 * 1024
    cors: str | None = None
    shutdown_grace: int = 10  # seconds running generations get to finish on SIGTERM

    def api_keys(self) -> tuple[str, ...]:
        keys = [k.strip() for k in (self.api_key or "").split(",")]
        if self.api_key_file:
            with open(self.api_key_file, encoding="utf-8") as f:
                keys += [line.strip() for line in f]
        return tuple(k for k in keys if k and not k.startswith("#"))

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
    if isinstance(default, int) or default is None and raw.strip().lstrip("-").isdigit():
        return int(raw)
    return raw
