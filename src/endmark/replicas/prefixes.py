"""Which replica holds a prompt's prefix: the routing memory of a set of endmark replicas.

A prompt's text is cut into blocks, and each block's hash is chained to the ones before it,
so one hash names a whole prefix. After a request goes to a replica, its prefixes are
remembered as held by that replica (its slots keep them cached); the next request is sent to
the replica holding its longest remembered prefix. Text, not tokens: the router runs before
any tokenizer, and the same text tokenizes the same way on every replica.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Any

from endmark.server.http.dialect import dialect_for

BLOCK_CHARS = 128  # about 30 tokens of English
MIN_BLOCKS = 2  # a shorter shared prefix is not worth a detour from the least loaded replica
MAX_ENTRIES = 200_000  # prefix hashes remembered, least recently used dropped first


def prefix_hashes(text: str) -> list[bytes]:
    """One chained hash per whole block of `text`."""
    out, h = [], b""
    for start in range(0, len(text) - BLOCK_CHARS + 1, BLOCK_CHARS):
        h = hashlib.blake2b(h + text[start : start + BLOCK_CHARS].encode(), digest_size=12).digest()
        out.append(h)
    return out


class PrefixIndex:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._holder: OrderedDict[bytes, str] = OrderedDict()
        self._max = max_entries

    def best(self, text: str, replicas: set[str]) -> tuple[str | None, int]:
        """The live replica holding the longest prefix of `text`, and how many blocks long
        (None if under `MIN_BLOCKS`)."""
        hashes = prefix_hashes(text)
        for n in range(len(hashes), MIN_BLOCKS - 1, -1):
            holder = self._holder.get(hashes[n - 1])
            if holder in replicas:
                return holder, n
        return None, 0

    def record(self, text: str, replica: str) -> None:
        for h in prefix_hashes(text):
            self._holder[h] = replica
            self._holder.move_to_end(h)
        while len(self._holder) > self._max:
            self._holder.popitem(last=False)

    def forget(self, replica: str) -> None:
        """A replica that died took its cache with it."""
        for h in [h for h, r in self._holder.items() if r == replica]:
            del self._holder[h]


def routing_text(path: str, body: bytes) -> str:
    """The text a request's prompt starts with, as far as the router can tell without a
    tokenizer, read the way the dialect `path` speaks lays out its body."""
    try:
        data: Any = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return ""
    return dialect_for(path).routing_text(data) if isinstance(data, dict) else ""
