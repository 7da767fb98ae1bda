"""Slot file names (a plain name inside --slot-save-path, never a path), and the prompt
cache in the slot table: stored before a slot drops it, restored for a prompt it starts."""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Any

import pytest

from endmark.prompt_cache import PromptCache
from endmark.slot_states import SlotFileError, SlotStates, check_filename
from endmark.slots import SlotTable, Ticket


@pytest.mark.parametrize("bad", ["", "..", "../x.bin", "a/b.bin", "a\\b.bin", "x..bin", None, 3])
def test_a_path_or_dots_is_a_400(bad: object) -> None:
    with pytest.raises(SlotFileError) as err:
        check_filename(bad)
    assert err.value.status == 400


def test_a_plain_name_passes() -> None:
    assert check_filename("slot1.bin") == "slot1.bin"


def test_without_a_save_path_every_action_is_llama_servers_501() -> None:
    states = SlotStates(None, None, None)  # type: ignore[arg-type]
    for action in ("save", "restore", "erase"):
        with pytest.raises(SlotFileError) as err:
            states.check(action, "x.bin")
        assert err.value.status == 501 and "--slot-save-path" in str(err.value)
    with pytest.raises(SlotFileError, match="Invalid action"):
        states.check("load", "x.bin")


# -- the prompt cache in the slot table, on an engine whose state is its token list ---------


class StateEngine:
    """Sequences as token lists; a state is the list's bytes (as a backend's would be)."""

    def __init__(self, n: int, refuse: bool = False) -> None:
        self.seqs: dict[int, list[int]] = {i: [] for i in range(n)}
        self.refuse = refuse

    def drop(self, seq_id: int, from_pos: int = 0) -> None:
        del self.seqs[seq_id][from_pos:]

    def copy(self, src: int, dst: int, up_to: int) -> None:
        self.seqs[dst] = self.seqs[src][:up_to]

    def can_continue(self, seq_id: int, n: int) -> bool:
        return True

    def state_bytes(self, seq_id: int) -> bytearray:
        return bytearray(struct.pack(f"<{len(self.seqs[seq_id])}i", *self.seqs[seq_id]))

    def load_state_bytes(self, seq_id: int, data: Any, offset: int = 0, size: int = -1) -> bool:
        self.seqs[seq_id] = []
        if self.refuse:
            return False
        raw = bytes(data)[offset : offset + (len(data) if size < 0 else size)]
        self.seqs[seq_id] = list(struct.unpack(f"<{len(raw) // 4}i", raw))
        return True


def ticket(prompt: list[int]) -> Ticket:
    request = SimpleNamespace(prompt=prompt, cache_prompt=True, adapters=(), cache_reuse=0)
    return Ticket(SimpleNamespace(request=request), lambda event: None)  # type: ignore[arg-type]


def run(table: SlotTable, prompt: list[int], answer: list[int]) -> int:
    """Place a request, feed its prompt and answer as the scheduler would, release it."""
    t = ticket(prompt)
    cached = table.place(t)
    slot = table.slots[t.slot]  # type: ignore[index]
    fed = prompt[cached:] + answer
    table.engine.seqs[slot.id] = table.engine.seqs[slot.id][:cached] + fed  # type: ignore[attr-defined]
    table.fed(slot, fed)
    table.release(slot, keep_cache=True)
    return cached


SYSTEM = list(range(100, 140))  # 40 tokens: over min_tokens


def table_with_cache(refuse: bool = False) -> tuple[SlotTable, PromptCache]:
    engine = StateEngine(1, refuse)
    cache = PromptCache({"model": "m"}, None, ram_bytes=-1, min_tokens=16)
    return SlotTable(engine, 1, states=SlotStates(engine, cache, None)), cache  # type: ignore[arg-type]


def test_a_dropped_prefix_is_stored_and_restored_for_the_next_prompt_it_starts() -> None:
    table, cache = table_with_cache()
    assert run(table, SYSTEM + [1, 2], [7, 8]) == 0
    assert run(table, [5, 6, 7], [9]) == 0  # takes the one slot: the first state is stored
    assert cache.summary()["entries"] == 1
    assert run(table, SYSTEM + [3, 4], [7]) == len(SYSTEM)  # restored, cut to the shared part
    assert table.engine.seqs[0][: len(SYSTEM) + 2] == SYSTEM + [3, 4]  # type: ignore[attr-defined]
    assert cache.summary()["hits"] == 1


def test_a_restore_the_backend_refuses_decodes_the_prompt_again() -> None:
    table, cache = table_with_cache(refuse=True)
    run(table, SYSTEM + [1, 2], [7, 8])
    run(table, [5, 6, 7], [9])
    assert run(table, SYSTEM + [3, 4], [7]) == 0
    assert table.slots[0].cached == table.engine.seqs[0] == SYSTEM + [3, 4, 7]  # type: ignore[attr-defined]
    assert cache.summary()["hits"] == 0 and cache.summary()["misses"] == 2  # the first prompt too
