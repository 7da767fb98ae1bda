"""The prompt cache's store: prefixes, tiers, files that check out or are deleted, bounds."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from endmark.prompt_cache import PromptCache, parse_size

ID = {"model": "/m.gguf", "size": "1", "mtime_ns": "2", "type_k": "f16", "type_v": "f16"}
TOKENS = list(range(1, 41))


def state(n: int = 1000, seed: int = 7) -> bytearray:
    return bytearray((seed * i) % 251 for i in range(n))


def on_disk(tmp_path: Path, **kw: object) -> PromptCache:
    return PromptCache(ID, tmp_path / "model", ram_bytes=0, min_tokens=8, **kw)  # type: ignore[arg-type]


def stored(cache: PromptCache, tokens: list[int], data: bytearray) -> None:
    cache.put(tokens, data)
    cache.flush()


def loaded_bytes(cache: PromptCache, prompt: list[int]) -> bytes | None:
    found = cache.find(prompt)
    if found is None:
        return None
    got = cache.fetch(found[0])
    if got is None:
        return None
    data = bytes(memoryview(got.buffer)[got.offset : got.offset + got.size])
    got.close()
    return data


def test_parse_size() -> None:
    assert parse_size("4G") == 4 * 2**30
    assert parse_size("512M") == 512 * 2**20
    assert parse_size("1000") == 1000
    with pytest.raises(ValueError):
        parse_size("lots")


def test_longest_stored_prefix_at_least_min_tokens() -> None:
    cache = PromptCache(ID, None, ram_bytes=-1, min_tokens=8)
    cache.put(TOKENS[:20], state())
    cache.put([99] * 30, state())
    entry, n = cache.find(TOKENS[:12] + [500, 501])  # type: ignore[misc]
    assert (entry.tokens, n) == (tuple(TOKENS[:20]), 12)
    assert cache.find(TOKENS[:5] + [500] * 10) is None  # 5 shared: under min_tokens
    assert cache.covers(TOKENS[:10]) and not cache.covers(TOKENS[:25])
    cache.put(TOKENS[:30], state())  # extends the first: replaces it
    assert cache.summary()["entries"] == 2


def test_a_restart_finds_the_file_and_loads_the_same_bytes(tmp_path: Path) -> None:
    stored(on_disk(tmp_path), TOKENS, state())
    again = on_disk(tmp_path)
    assert loaded_bytes(again, TOKENS + [1000]) == bytes(state())


def test_another_identity_restores_nothing(tmp_path: Path) -> None:
    stored(on_disk(tmp_path), TOKENS, state())
    other = PromptCache({**ID, "type_k": "q8_0"}, tmp_path / "model", ram_bytes=0, min_tokens=8)
    assert other.find(TOKENS) is None


@pytest.mark.parametrize("damage", ["truncate", "flip", "header"])
def test_a_bad_file_is_deleted_and_logged_never_loaded(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    stored(on_disk(tmp_path), TOKENS, state())
    (path,) = (tmp_path / "model").glob("*.kv")
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[:-100]
    elif damage == "flip":
        raw[-10] ^= 0xFF
    else:
        raw[:6] = b"XXXXXX"
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, "endmark.prompt_cache"):
        again = on_disk(tmp_path)
        assert loaded_bytes(again, TOKENS) is None
    assert "deleting bad file" in caplog.text
    assert not path.exists()


def test_the_disk_bound_holds_least_recently_used_first(tmp_path: Path) -> None:
    cache = on_disk(tmp_path, disk_bytes=2500)
    for k in range(4):
        stored_tokens = [k + 1000] * 10
        cache.put(stored_tokens, state(1000, k + 1))
        cache.flush()
        cache = on_disk(tmp_path, disk_bytes=2500)  # the writer ends with each flush
    files = list((tmp_path / "model").glob("*.kv"))
    assert sum(f.stat().st_size for f in files) <= 2500
    assert len(files) == 2
    assert cache.find([1003] * 10) is not None and cache.find([1000] * 10) is None


def test_the_ram_bound_holds() -> None:
    cache = PromptCache(ID, None, ram_bytes=2500, min_tokens=8)
    for k in range(4):
        cache.put([k + 1000] * 10, state(1000, k + 1))
    assert cache.summary()["ram_bytes"] <= 2500
    assert cache.find([1003] * 10) is not None and cache.find([1000] * 10) is None
