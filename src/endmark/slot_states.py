"""Slot states beyond the live cache: the prompt cache's snapshots and restores, and
llama-server's slot files (`POST /slots/{id}?action=save|restore|erase`).

All of it runs on the scheduler's thread (llama.cpp's context is not thread-safe): taking a
snapshot is one memory copy out of the KV cache; writing it to disk is the prompt cache's
background thread's job, so decoding never waits for a disk.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from endmark.engine import Engine
from endmark.invalid import InvalidRequest
from endmark.prompt_cache import PromptCache, parse_size
from endmark.settings import Settings
from endmark.slots import Slot

log = logging.getLogger("endmark.prompt_cache")


class SlotFileError(InvalidRequest):
    """A slot action that cannot be done; `status` is the HTTP status llama-server answers."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, "filename" if status == 400 else None)
        self.status = status


def check_filename(name: object) -> str:
    """A plain file name inside the slot folder: no path separators, no `..`."""
    if not isinstance(name, str) or not name or name in (".", ".."):
        raise SlotFileError("Invalid filename")
    if "/" in name or "\\" in name or "\0" in name or ".." in name:
        raise SlotFileError("Invalid filename")
    return name


class SlotStates:
    def __init__(self, engine: Engine, cache: PromptCache | None, save_dir: Path | None) -> None:
        self.engine = engine
        self.cache = cache
        self.save_dir = save_dir

    # -- the prompt cache -------------------------------------------------------------------

    def dropping(self, slot: Slot, keep: int) -> None:
        """The slot is about to lose its cache after `keep` tokens: if at least a stored
        prefix's worth is lost and no stored state holds it already, snapshot it first."""
        cache = self.cache
        if cache is None or len(slot.cached) - keep < cache.min_tokens:
            return
        if cache.covers(slot.cached):
            return
        t0 = time.perf_counter()
        data = self.engine.state_bytes(slot.id)
        cache.put(list(slot.cached), data)
        ms = (time.perf_counter() - t0) * 1000
        log.debug("prompt cache: snapshot of slot %d, %d tokens, %.1f MiB in %.0f ms",
                  slot.id, len(slot.cached), len(data) / 2**20, ms)  # fmt: skip

    def restore(self, slot: Slot, prompt: list[int], have: int) -> int:
        """Load the stored state that shares the longest prefix with `prompt` into `slot`, if
        it gives more than the `have` tokens the slots hold; the tokens now cached, 0 if none
        was restored (the slot's cache is then as it was)."""
        cache = self.cache
        if cache is None or len(prompt) <= cache.min_tokens:
            return 0
        found = cache.find(prompt)
        n = min(found[1], len(prompt) - 1) if found else 0
        if found is None or n <= have:
            if have < cache.min_tokens:
                cache.record(hit=False)
            return 0
        entry = found[0]
        t0 = time.perf_counter()
        loaded = cache.fetch(entry)
        if loaded is None:
            cache.record(hit=False)
            return 0
        self.dropping(slot, 0)
        try:
            ok = self.engine.load_state_bytes(slot.id, loaded.buffer, loaded.offset, loaded.size)
        finally:
            loaded.close()
        slot.cached, slot.n_past = [], 0
        if ok:
            self.engine.drop(slot.id, n)
            ok = self.engine.can_continue(slot.id, n)
        if not ok:
            self.engine.drop(slot.id, 0)
            log.warning("prompt cache: a state of %d tokens could not be restored",
                        len(entry.tokens))  # fmt: skip
            cache.record(hit=False)
            return 0
        seconds = time.perf_counter() - t0
        cache.record(hit=True, tokens=n, seconds=seconds)
        slot.cached = list(prompt[:n])
        log.info("prompt cache: restored %d tokens into slot %d in %.0f ms", n, slot.id,
                 seconds * 1000)  # fmt: skip
        return n

    def save_all(self, slots: list[Slot]) -> None:
        """At shutdown: every slot's state that no stored one holds, then wait for the disk."""
        if self.cache is None:
            return
        for slot in slots:
            self.dropping(slot, 0)
        self.cache.flush()

    # -- llama-server's slot files ----------------------------------------------------------

    def _path(self, filename: object) -> tuple[str, str]:
        if self.save_dir is None:
            raise SlotFileError(
                "This server does not support slots action. Start it with `--slot-save-path`",
                501,
            )
        name = check_filename(filename)
        return name, os.path.join(self.save_dir, name)

    def check(self, action: str, filename: object) -> None:
        """Refuse a bad action before it is queued for the scheduler's thread."""
        if action not in ("save", "restore", "erase"):
            raise SlotFileError("Invalid action")
        if action == "erase":
            if self.save_dir is None:
                self._path(filename)
            return
        self._path(filename)

    def save(self, slot: Slot, filename: object) -> dict[str, object]:
        name, path = self._path(filename)
        t0 = time.perf_counter()
        n_written = self.engine.save_state_file(slot.id, path, list(slot.cached))
        if n_written == 0 and slot.cached:
            raise SlotFileError(f"could not write {name}", 500)
        return {"id_slot": slot.id, "filename": name, "n_saved": len(slot.cached),
                "n_written": n_written,
                "timings": {"save_ms": round((time.perf_counter() - t0) * 1000, 3)}}  # fmt: skip

    def restore_file(self, slot: Slot, filename: object, n_ctx_slot: int) -> dict[str, object]:
        name, path = self._path(filename)
        if not os.path.isfile(path):
            raise SlotFileError(f"no slot file named {name}", 404)
        t0 = time.perf_counter()
        slot.cached, slot.n_past = [], 0
        tokens, n_read = self.engine.load_state_file(slot.id, path)
        if n_read == 0 or len(tokens) >= n_ctx_slot:
            self.engine.drop(slot.id, 0)
            raise SlotFileError(
                "Unable to restore slot, no available space in KV cache or invalid slot save file"
            )
        slot.cached, slot.n_past = tokens, len(tokens)
        return {"id_slot": slot.id, "filename": name, "n_restored": len(tokens),
                "n_read": n_read,
                "timings": {"restore_ms": round((time.perf_counter() - t0) * 1000, 3)}}  # fmt: skip

    def act(self, slot: Slot, action: str, filename: object, n_ctx_slot: int) -> dict[str, object]:
        if slot.busy:
            raise SlotFileError(f"slot {slot.id} is busy: try again when it is idle", 409)
        if action == "save":
            return self.save(slot, filename)
        if action == "restore":
            return self.restore_file(slot, filename, n_ctx_slot)
        return self.erase(slot)

    def erase(self, slot: Slot) -> dict[str, object]:
        n = len(slot.cached)
        self.engine.drop(slot.id, 0)
        slot.cached, slot.n_past = [], 0
        return {"id_slot": slot.id, "n_erased": n}


def slot_states(engine: Engine, settings: Settings) -> SlotStates | None:
    """The slot files and prompt cache the settings ask for (None: neither). Each model has
    its own subfolder of `--cache-dir` (router mode's workers share the folder)."""
    ram_mib = settings.cache_ram
    if ram_mib is None:
        ram_mib = 8192 if settings.cache_dir else 0
    cache = None
    if settings.cache_dir or ram_mib != 0:
        folder = None
        if settings.cache_dir:
            name = Path(engine.model_path).name.replace(os.sep, "_") or "model"
            folder = Path(settings.cache_dir).expanduser() / name
        cache = PromptCache(
            engine.state_identity(),
            folder,
            disk_bytes=parse_size(settings.cache_dir_size),
            ram_bytes=ram_mib * 2**20 if ram_mib > 0 else ram_mib,
            min_tokens=settings.cache_min_tokens,
        )
        where = f"{folder} (at most {settings.cache_dir_size})" if folder else "host memory"
        log.info("prompt cache: %s, prefixes of %d tokens or more", where, cache.min_tokens)
    save_dir = Path(settings.slot_save_path).expanduser() if settings.slot_save_path else None
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
    if cache is None and save_dir is None:
        return None
    return SlotStates(engine, cache, save_dir)
