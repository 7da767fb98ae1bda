"""Cache reuse and context shift plans: llama-server's algorithms, on token lists."""

from __future__ import annotations

from endmark.kv_shift import Move, apply_plan, reuse_plan, shift_plan


def test_a_chunk_the_new_prompt_repeats_further_on_moves_into_place() -> None:
    cached = [1, 2, 9, 9, 3, 4, 5, 6, 7]
    prompt = [1, 2, 3, 4, 5, 6, 8]
    moves = reuse_plan(cached, prompt, 2, 3)
    assert moves == [Move(4, 4, 2)]
    assert apply_plan(cached, moves) == [1, 2, 3, 4, 5, 6]


def test_a_chunk_shorter_than_the_minimum_is_not_reused() -> None:
    cached = [1, 2, 9, 3, 4, 0]
    assert reuse_plan(cached, [1, 2, 3, 4, 5], 2, 3) == []
    assert reuse_plan(cached, [1, 2, 3, 4, 5], 2, 0) == []  # 0: off


def test_several_chunks_move_in_order() -> None:
    cached = [7, 8, 1, 1, 1, 9, 2, 2, 2]
    prompt = [1, 1, 1, 2, 2, 2, 5]
    moves = reuse_plan(cached, prompt, 0, 2)
    assert moves == [Move(2, 3, 0), Move(6, 3, 3)]
    assert apply_plan(cached, moves) == prompt[:6]


def test_a_context_shift_keeps_n_keep_and_drops_half_of_the_rest() -> None:
    assert shift_plan(100, 0, 40, 100, False) == Move(50, 50, 0)
    assert shift_plan(100, 10, 40, 100, True) == Move(55, 45, 11)  # BOS kept besides
    assert shift_plan(100, -1, 40, 100, False) == Move(70, 30, 40)  # -1: the whole prompt
    assert shift_plan(100, 500, 40, 100, False) == Move(98, 2, 96)  # within n_ctx - 4
