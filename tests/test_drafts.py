"""Prompt-lookup drafts: what follows the last n-gram earlier in the context."""

from __future__ import annotations

from endmark.drafts import DraftSettings, PromptLookup


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
