"""The persistent prompt cache: KV states of long prefixes, in host memory first and on disk
behind it, so a prompt that starts with a stored prefix restores it instead of decoding it,
after a restart too.

A state is stored under its tokens and the engine's state identity (the weights, the cache
types, ...), so a changed model or `-ctk` never restores a wrong state. Files are written by
a background thread, atomically (a temporary file, then a rename), and carry a CRC-32 of the
state and its size: a file that does not check out is deleted and logged, never loaded. The
disk bound holds over the whole cache folder (every model's subfolder): the least recently
used files go first, whoever wrote them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import queue
import struct
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("endmark.prompt_cache")

# A prefix shorter than this is decoded again rather than stored: below ~256 tokens a small
# model decodes it in about the time a restore takes, and a chat's own turns (which differ
# after a few dozen tokens) would fill the cache with states nobody asks for again.
MIN_PREFIX_TOKENS = 256
MAGIC = b"EMKV1\n"
SUFFIX = ".kv"
_HEADER_LEN = struct.Struct("<I")


def identity_key(identity: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def parse_size(text: str) -> int:
    """`4G`, `512M`, `100K` or bytes."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(t[-1:], 1)
    number = t[:-1] if scale > 1 else t
    try:
        value = int(float(number) * scale)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (e.g. 4G, 512M)") from None
    if value < 0:
        raise ValueError(f"not a size: {text!r}")
    return value


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass(eq=False)
class Entry:
    tokens: tuple[int, ...]
    nbytes: int
    last_used: float
    data: bytearray | None = None  # in host memory
    path: Path | None = None  # on disk, written and renamed into place


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    restored_tokens: int = 0
    restore_seconds: float = 0.0
    stored: int = 0
    bad_files: int = 0


@dataclass
class Loaded:
    """A state to load: a writable buffer (a bytearray, or a private map of the file)."""

    buffer: Any
    offset: int
    size: int
    _closer: Any = field(default=None, repr=False)

    def close(self) -> None:
        if self._closer is not None:
            self._closer.close()


class PromptCache:
    """States by token prefix, for one engine identity; `directory` None keeps them in host
    memory only, `ram_bytes` 0 on disk only (-1: no limit)."""

    def __init__(
        self,
        identity: dict[str, str],
        directory: Path | None = None,
        disk_bytes: int = 4 * 2**30,
        ram_bytes: int = 0,
        min_tokens: int = MIN_PREFIX_TOKENS,
    ) -> None:
        self.identity = identity_key(identity)
        self.directory = directory
        self.root = directory.parent if directory is not None else None
        self.disk_bytes = disk_bytes
        self.ram_bytes = ram_bytes
        self.min_tokens = min_tokens
        self.stats = CacheStats()
        self._entries: dict[tuple[int, ...], Entry] = {}
        self._lock = threading.Lock()
        self._writes: queue.Queue[tuple[Entry, bytearray] | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self._scan()
            self._writer = threading.Thread(target=self._write_loop, name="endmark-kv-writer",
                                            daemon=True)  # fmt: skip
            self._writer.start()

    # -- lookups (the scheduler's thread) ---------------------------------------------------

    def find(self, prompt: Sequence[int]) -> tuple[Entry, int] | None:
        """The stored state sharing the longest prefix with `prompt` (at least `min_tokens`),
        and that length."""
        best: tuple[Entry, int] | None = None
        with self._lock:
            for entry in self._entries.values():
                n = common_length(entry.tokens, prompt)
                if n >= self.min_tokens and (best is None or n > best[1]):
                    best = (entry, n)
        return best

    def covers(self, tokens: Sequence[int]) -> bool:
        """A stored state already starts with all of `tokens`."""
        key = tuple(tokens)
        with self._lock:
            return any(e.tokens[: len(key)] == key for e in self._entries.values())

    def fetch(self, entry: Entry) -> Loaded | None:
        """The entry's state, from memory or its file (checked); None if it is gone or bad."""
        with self._lock:
            data, path = entry.data, entry.path
            entry.last_used = time.monotonic()
        if data is not None:
            return Loaded(data, 0, len(data))
        if path is None:
            return None
        loaded = self._read(path, entry)
        if loaded is None:
            self.forget(entry)
        else:
            try:
                os.utime(path)  # recency on disk, for LRU across restarts and processes
            except OSError:
                pass
        return loaded

    def forget(self, entry: Entry) -> None:
        with self._lock:
            if self._entries.get(entry.tokens) is entry:
                del self._entries[entry.tokens]

    def record(self, hit: bool, tokens: int = 0, seconds: float = 0.0) -> None:
        if hit:
            self.stats.hits += 1
            self.stats.restored_tokens += tokens
            self.stats.restore_seconds += seconds
        else:
            self.stats.misses += 1

    # -- storing ----------------------------------------------------------------------------

    def put(self, tokens: Sequence[int], data: bytearray) -> None:
        """Keep a state: in memory now (within its bound), on disk by the writer thread. A
        stored state that this one extends is replaced by it."""
        key = tuple(tokens)
        entry = Entry(key, len(data), time.monotonic())
        keep_in_ram = self.ram_bytes != 0 and (self.ram_bytes < 0 or len(data) <= self.ram_bytes)
        to_disk = self.directory is not None and len(data) <= self.disk_bytes
        if not keep_in_ram and not to_disk:
            return
        if keep_in_ram:
            entry.data = data
        with self._lock:
            for old in [e for e in self._entries.values() if key[: len(e.tokens)] == e.tokens]:
                del self._entries[old.tokens]
                if old.path is not None:
                    _unlink(old.path)
            self._entries[key] = entry
            self._trim_ram()
        self.stats.stored += 1
        if to_disk:
            self._writes.put((entry, data))

    def _trim_ram(self) -> None:
        if self.ram_bytes < 0:
            return
        held = sorted((e for e in self._entries.values() if e.data is not None),
                      key=lambda e: e.last_used)  # fmt: skip
        total = sum(e.nbytes for e in held)
        for e in held:
            if total <= self.ram_bytes:
                break
            total -= e.nbytes
            e.data = None
            if e.path is None and self.directory is None:
                del self._entries[e.tokens]

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for the pending writes (at shutdown)."""
        if self._writer is None:
            return
        self._writes.put(None)
        self._writer.join(timeout)

    # -- what /slots and /metrics show ------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        with self._lock:
            entries = list(self._entries.values())
        s = self.stats
        return {
            "entries": len(entries),
            "ram_bytes": sum(e.nbytes for e in entries if e.data is not None),
            "disk_bytes": sum(e.nbytes for e in entries if e.path is not None),
            "hits": s.hits,
            "misses": s.misses,
            "restored_tokens": s.restored_tokens,
            "restore_ms": round(s.restore_seconds * 1000.0, 3),
            "stored": s.stored,
            "bad_files": s.bad_files,
            "min_tokens": self.min_tokens,
        }

    # -- files ------------------------------------------------------------------------------

    def _name(self, tokens: tuple[int, ...]) -> str:
        digest = hashlib.sha256(self.identity.encode() + struct.pack(f"<{len(tokens)}i", *tokens))
        return digest.hexdigest()[:40] + SUFFIX

    def _write_loop(self) -> None:
        while (item := self._writes.get()) is not None:
            entry, data = item
            try:
                self._write(entry, data)
            except OSError as exc:
                log.warning("prompt cache: could not write a state: %s", exc)

    def _write(self, entry: Entry, data: bytearray) -> None:
        assert self.directory is not None
        with self._lock:
            if self._entries.get(entry.tokens) is not entry:
                return  # replaced meanwhile
        path = self.directory / self._name(entry.tokens)
        header = json.dumps({
            "identity": self.identity, "tokens": list(entry.tokens), "size": len(data),
            "crc32": zlib.crc32(data),
        }).encode()  # fmt: skip
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(MAGIC + _HEADER_LEN.pack(len(header)) + header)
            f.write(data)
        os.replace(tmp, path)
        with self._lock:
            if self._entries.get(entry.tokens) is entry:
                entry.path = path
            else:
                _unlink(path)
                return
        log.info("prompt cache: stored %d tokens (%.1f MiB)", len(entry.tokens), len(data) / 2**20)
        self._bound_disk()

    def _bound_disk(self) -> None:
        """Delete the least recently used files of the whole cache folder until it fits."""
        assert self.root is not None
        files = []
        for p in self.root.rglob(f"*{SUFFIX}"):
            try:
                st = p.stat()
            except OSError:
                continue
            files.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in files)
        for _, size, p in sorted(files):
            if total <= self.disk_bytes:
                break
            _unlink(p)
            total -= size
            with self._lock:
                for e in [e for e in self._entries.values() if e.path == p]:
                    e.path = None
                    if e.data is None:
                        del self._entries[e.tokens]

    def _scan(self) -> None:
        """Index the files a previous run left: their headers only (the states are checked
        when loaded). Another identity's files stay (a server with those settings may come
        back) until the disk bound takes them."""
        assert self.directory is not None
        for tmp in self.directory.glob(".*.tmp"):
            _unlink(tmp)  # a write cut short
        others = 0
        for path in self.directory.glob(f"*{SUFFIX}"):
            header = self._header(path)
            if header is None:
                continue
            if header["identity"] != self.identity:
                others += 1
                continue
            tokens = tuple(int(t) for t in header["tokens"])
            entry = Entry(tokens, int(header["size"]), path.stat().st_mtime - time.time()
                          + time.monotonic(), path=path)  # fmt: skip
            self._entries[tokens] = entry
        log.info(
            "prompt cache: %d stored states in %s, %d of other settings (another model file, "
            "cache type, ...) left alone", len(self._entries), self.directory, others,
        )  # fmt: skip
        self._bound_disk()  # the bound may have been lowered since

    def _header(self, path: Path) -> dict[str, Any] | None:
        try:
            with open(path, "rb") as f:
                if f.read(len(MAGIC)) != MAGIC:
                    raise ValueError("not a prompt cache file")
                (n,) = _HEADER_LEN.unpack(f.read(_HEADER_LEN.size))
                header = json.loads(f.read(n))
                header["offset"] = len(MAGIC) + _HEADER_LEN.size + n
                if not isinstance(header.get("tokens"), list):
                    raise ValueError("no token list")
                return header  # type: ignore[no-any-return]
        except (OSError, ValueError, struct.error, UnicodeDecodeError) as exc:
            self._bad(path, str(exc))
            return None

    def _read(self, path: Path, entry: Entry) -> Loaded | None:
        """The file's state, mapped privately (writable for llama.cpp, no copy), after its
        size and CRC check out."""
        header = self._header(path)
        if header is None:
            return None
        if header["identity"] != self.identity or tuple(header["tokens"]) != entry.tokens:
            self._bad(path, "another state under this name")
            return None
        offset, size = int(header["offset"]), int(header["size"])
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size != offset + size:
                    self._bad(path, "truncated or padded")
                    return None
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError) as exc:
            self._bad(path, str(exc))
            return None
        with memoryview(mm) as view:
            crc = zlib.crc32(view[offset:])
        if crc != header["crc32"]:
            mm.close()
            self._bad(path, "checksum mismatch")
            return None
        return Loaded(mm, offset, size, mm)

    def _bad(self, path: Path, why: str) -> None:
        self.stats.bad_files += 1
        log.warning("prompt cache: deleting bad file %s (%s); it is not loaded", path.name, why)
        _unlink(path)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
