"""LoRA adapters, engine-neutral: the files the server loaded, their global scales
(llama-server's `GET`/`POST /lora-adapters`), a request's own `lora` list, and the
configuration key a request runs under.

llama.cpp applies adapters to a whole context, not to one sequence, so requests under
different configurations are decoded apart (`group_by_adapters`), and KV computed under one
configuration is never continued under another (the slots key their caches by it).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from endmark.engine import AdapterScales
from endmark.invalid import InvalidRequest

__all__ = ["BASE", "AdapterFile", "AdapterScales", "Adapters", "group_by_adapters"]

BASE: AdapterScales = ()  # the base model: no adapter
# The largest scale taken, either way: real adapters run at 0..2, and a scale far beyond
# overflows the activations (inf, then NaN logits) instead of adapting anything.
MAX_SCALE = 100.0

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class AdapterFile:
    """One `--lora` / `--lora-scaled` file and the scale it starts at."""

    path: str
    scale: float = 1.0


def format_adapter_files(files: Iterable[AdapterFile]) -> str:
    """The settings' text form, `PATH:SCALE,...` (llama-server's `--lora-scaled` form), so
    it travels through `ENDMARK_LORA` to router workers as any other setting."""
    return ",".join(f"{f.path}:{f.scale!r}" for f in files)


def parse_adapter_files(text: str | None) -> list[AdapterFile]:
    """`PATH[:SCALE],...`: a missing scale is 1 (llama-server's `--lora`); a path whose last
    `:` is not followed by a number is a path."""
    files = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        path, _, tail = item.rpartition(":")
        try:
            scale = float(tail) if path else None
        except ValueError:
            scale = None
        if scale is None or not math.isfinite(scale):
            files.append(AdapterFile(item))
        else:
            files.append(AdapterFile(path, scale))
    return files


def configuration(scales: Sequence[float]) -> AdapterScales:
    """The key of one scale per adapter, by id."""
    return tuple((i, float(s)) for i, s in enumerate(scales) if s != 0.0)


class Adapters:
    """The adapters the engine loaded (id = position), with their global scales: what a
    request that gives no `lora` list of its own runs with."""

    def __init__(
        self, paths: Sequence[str] = (), scales: Sequence[float] = (),
        facts: Sequence[dict[str, str]] = (),
    ) -> None:  # fmt: skip
        """`facts`: each adapter's `task_name` and `prompt_prefix`, as its GGUF names them."""
        self.paths = list(paths)
        self._scales = [float(s) for s in scales] or [1.0] * len(self.paths)
        self._facts = list(facts) or [{} for _ in self.paths]
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.paths)

    def listing(self) -> list[dict[str, object]]:
        """`GET /lora-adapters`: `[{id, path, scale, task_name, prompt_prefix}]`."""
        with self._lock:
            scales = list(self._scales)
        return [
            {"id": i, "path": path, "scale": scales[i],
             "task_name": self._facts[i].get("task_name", ""),
             "prompt_prefix": self._facts[i].get("prompt_prefix", "")}
            for i, path in enumerate(self.paths)
        ]  # fmt: skip

    def set_global(self, entries: Sequence[tuple[int, float]]) -> None:
        """`POST /lora-adapters`: these scales; an adapter left out goes to 0 (llama-server's
        rule). An unknown id or a scale out of range is refused whole."""
        scales = self._scales_of(entries, "lora")
        with self._lock:
            self._scales = scales

    def resolve(self, entries: Sequence[tuple[int, float]] | None) -> AdapterScales:
        """The configuration a request runs under: its own `lora` list (adapters it leaves out
        at 0), or the global scales when it gives none. An empty list is no list, as in
        llama-server."""
        if not entries:
            with self._lock:
                return configuration(self._scales)
        return configuration(self._scales_of(entries, "lora"))

    def _scales_of(self, entries: Sequence[tuple[int, float]], param: str) -> list[float]:
        scales = [0.0] * len(self.paths)
        for adapter_id, scale in entries:
            if not 0 <= adapter_id < len(self.paths):
                known = f"0..{len(self.paths) - 1}" if self.paths else "none are loaded"
                raise InvalidRequest(f"no LoRA adapter has id {adapter_id} ({known})", param)
            if not -MAX_SCALE <= scale <= MAX_SCALE:  # NaN too
                raise InvalidRequest(
                    f"a LoRA scale must be between {-MAX_SCALE:g} and {MAX_SCALE:g}, not {scale}",
                    param,
                )
            scales[adapter_id] = float(scale)
        return scales


def group_by_adapters(
    items: Sequence[T], key_of: Callable[[T], K], current: K
) -> list[tuple[K, list[T]]]:
    """`items` split by configuration, each group in its items' order: the `current` one
    first (no switch), then the others as they first appear, so a step switches adapters
    once per extra configuration and the next step starts where this one ended."""
    groups: dict[K, list[T]] = {}
    for item in items:
        groups.setdefault(key_of(item), []).append(item)
    order = sorted(groups, key=lambda k: k != current)  # stable: first appearance otherwise
    return [(k, groups[k]) for k in order]
