"""Slot file names: a plain name inside --slot-save-path, never a path."""

from __future__ import annotations

import pytest

from endmark.slot_states import SlotFileError, SlotStates, check_filename


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
