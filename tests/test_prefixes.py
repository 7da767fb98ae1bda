from __future__ import annotations

import json

from endmark.replicas.prefixes import BLOCK_CHARS, PrefixIndex, prefix_hashes, routing_text
from endmark.server.dialects.registry import DIALECTS
from endmark.server.http.dialect import register

SYSTEM = "You answer questions about the lighthouse at Corran Point. " * 8


def test_hashes_name_whole_prefixes() -> None:
    a = prefix_hashes("x" * BLOCK_CHARS * 3)
    b = prefix_hashes("x" * BLOCK_CHARS * 2 + "y" * BLOCK_CHARS)
    assert len(a) == 3 and a[:2] == b[:2] and a[2] != b[2]
    assert prefix_hashes("short") == []


def test_the_replica_holding_the_longest_prefix_wins() -> None:
    index = PrefixIndex()
    index.record(SYSTEM + "first question", "r1")
    index.record(SYSTEM[: BLOCK_CHARS * 2] + "another start" * 20, "r2")
    assert index.best(SYSTEM + "a new question", {"r1", "r2"}) == ("r1", len(SYSTEM) // BLOCK_CHARS)
    assert index.best(SYSTEM + "a new question", {"r2"})[0] == "r2"  # r1 is gone
    assert index.best("nothing shared here" * 30, {"r1", "r2"}) == (None, 0)
    index.forget("r1")
    assert index.best(SYSTEM, {"r1", "r2"})[0] == "r2"


def test_the_index_is_bounded() -> None:
    index = PrefixIndex(max_entries=3)
    index.record("a" * BLOCK_CHARS * 3, "r1")
    index.record("b" * BLOCK_CHARS * 3, "r2")
    assert index.best("a" * BLOCK_CHARS * 3, {"r1", "r2"}) == (None, 0)
    assert index.best("b" * BLOCK_CHARS * 3, {"r1", "r2"}) == ("r2", 3)


def test_routing_text_reads_each_dialect() -> None:
    register(DIALECTS)  # as the ingress does
    parts = [{"type": "text", "text": "Q"}]
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": parts}]
    chat = json.dumps({"messages": messages}).encode()
    assert routing_text("/v1/chat/completions", chat) == "<system>S\n<user>Q"
    assert routing_text("/completion", b'{"prompt": "P"}') == "P"
    assert routing_text("/v1/messages", b'{"system": "S", "messages": []}') == "S"
    assert routing_text("/v1/responses", b'{"instructions": "I", "input": "Q"}') == "I\nQ"
    assert routing_text("/health", b"") == "" and routing_text("/x", b"not json") == ""
    ollama = b'{"system": "S", "prompt": "P"}'
    assert routing_text("/api/generate", ollama) == "S\nP"
