"""Prompt-lookup drafts: what follows the last n-gram earlier in the context."""

from __future__ import annotations

import math

import pytest

from endmark.drafts import DecodeCost, DraftSettings, PromptLookup


def test_a_repeated_span_is_guessed_from_its_earlier_occurrence() -> None:
    text = [5, 6, 7, 8, 9, 10, 11, 12, 1, 2, 3]
    drafter = PromptLookup(text, DraftSettings(max=16))
    assert drafter.draft() == []  # [2, 3] never came before
    drafter.extend([6, 7])  # ... 3, 6, 7 repeats "6, 7" (and "5, 6, 7" is not the suffix)
    assert drafter.draft() == [8, 9, 10, 11]  # the first guess holds 4 tokens


def test_guesses_grow_on_hits_and_a_miss_makes_the_sequence_wait() -> None:
    drafter = PromptLookup([1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2], DraftSettings(max=6))
    assert drafter.draft() == [3, 4, 5, 6]
    drafter.feedback(4, 4)
    assert drafter.draft() == [3, 4, 5, 6, 7, 8]  # doubled, within max
    drafter.feedback(6, 0)
    assert drafter.draft() == []  # waiting after a guess with nothing right
    drafter.extend([3, 4, 5, 6])
    assert drafter.draft() == [7]  # its next guess is short: one more than it got right


def test_no_guess_shorter_than_draft_min_and_none_with_max_zero() -> None:
    assert PromptLookup([1, 2, 3, 1, 2], DraftSettings(max=16, min=3)).draft() == [3, 1, 2]
    assert PromptLookup([1, 2, 3, 1, 2], DraftSettings(max=16, min=4)).draft() == []
    assert PromptLookup([1, 2, 9, 1, 2], DraftSettings(max=0)).draft() == []


def test_copying_follows_its_source_past_a_phrase_that_repeats() -> None:
    # "1 2 3 4 5" comes twice; copying from the first, the latest match would jump to 50
    text = [7, 1, 2, 3, 4, 5, 40, 8, 1, 2, 3, 4, 5, 50, 9]
    drafter = PromptLookup([*text, 7, 1], DraftSettings(max=16))
    assert drafter.draft() == [2, 3, 4, 5]
    drafter.feedback(4, 4)
    drafter.extend([2, 3, 4, 5])
    assert drafter.draft() == [40, 8, 1, 2, 3, 4, 5, 50]  # on from its source, not 50


def test_drafts_by_default_only_for_greedy_decoding_unless_asked() -> None:
    from endmark.prepare import drafts_for_sampling as pick
    from endmark.sampling import SamplingParams

    server, asked = DraftSettings(16, 0), DraftSettings(8, 0, asked=True)
    assert pick(server, SamplingParams(temperature=0)) is server
    assert pick(server, SamplingParams(temperature=0.8, top_k=1)) is server
    assert pick(server, SamplingParams(temperature=0.8)) is None
    assert pick(asked, SamplingParams(temperature=0.8)) is asked
    assert pick(None, SamplingParams(temperature=0)) is None


def test_a_guess_holds_only_the_tokens_likely_enough_to_pay_for_their_rows() -> None:
    """At a price of 0.7 (a checked row costs 70% of a step), a sequence with no record yet
    (a right guess at even odds) checks nothing, but follows the guess it did not check: the
    text repeats, its chance climbs, and it checks as many tokens as that chance pays for."""
    text = list(range(10, 40))
    drafter = PromptLookup([*text, 10, 11], DraftSettings(max=16))
    assert drafter.chance == 0.5
    assert drafter.draft(price=0.7) == []  # followed instead: [12, 13, 14, 15]
    drafter.extend([12, 13, 14, 15])
    assert drafter.chance == (0.8 + 4) / (0.8 + 4 + 0.8)  # four right, none wrong
    worth = int(math.log(0.7) / math.log(drafter.chance))  # 0.857 ** 2 > 0.7 > 0.857 ** 3
    assert drafter.draft(price=0.7) == [16, 17] and worth == 2
    drafter.feedback(2, 2)
    drafter.extend([16, 17])
    assert len(drafter.draft(price=0.7)) == 3
    assert drafter.draft(price=0.0)[:3] == [18, 19, 20]  # free rows: the whole guess


def test_a_guess_followed_and_wrong_makes_the_sequence_wait() -> None:
    drafter = PromptLookup([1, 2, 3, 4, 5, 6, 1, 2], DraftSettings(max=16))
    assert drafter.draft(price=0.9) == []
    drafter.extend([9])  # not the 3 guessed
    assert drafter.chance < 0.5 and drafter.draft() == []  # waiting, as after a checked miss


def test_a_minimum_asked_for_is_checked_whatever_it_costs() -> None:
    drafter = PromptLookup([1, 2, 3, 4, 5, 1, 2], DraftSettings(max=16, min=3))
    assert drafter.draft(price=0.99) == [3, 4, 5, 1]


def test_a_rows_price_is_read_off_the_decodes_seen() -> None:
    cost = DecodeCost()
    assert cost.price(1) == 0.0  # nothing seen: rows are free until they are not
    cost.add(1, 0.010)
    assert cost.price(1) == 0.0  # no larger decode seen yet
    for n in (3, 5):  # 10 ms a step, 7 ms each row more
        cost.add(n, 0.010 + 0.007 * (n - 1))
    assert cost.price(1) == pytest.approx(0.7)
    cost.add(2, 0.017)
    assert cost.price(2) == pytest.approx(0.007 * 2 / 0.017)  # two steps share the decode
    quick = DecodeCost()
    for n in (1, 5):
        quick.add(n, 0.0001 * n)
    assert quick.price(1) == 0.0  # a test double's decode: nothing to win or lose
