from __future__ import annotations

import numpy as np

from endmark.sampling import (
    SamplingParams,
    adjust,
    chain_fits,
    make_rng,
    plain_argmax,
    sample,
    top_logprobs,
)


def logits() -> np.ndarray:
    return np.array([1.0, 3.0, 2.0, -1.0, 0.5], dtype=np.float32)


def test_greedy_picks_the_argmax_and_reports_sorted_logprobs() -> None:
    params = SamplingParams(temperature=0, n_probs=3)
    s = sample(logits(), params, make_rng(0))
    assert s.token == 1
    assert [t for t, _ in s.top] == [1, 2, 0]
    assert s.logprob == s.top[0][1] <= 0
    assert np.isclose(sum(np.exp(lp) for _, lp in top_logprobs(np.log(np.full(4, 0.25)), 4)), 1)


def test_adjust_leaves_the_view_alone_when_nothing_applies() -> None:
    x = logits()
    assert adjust(x, SamplingParams(), [1, 2]) is x


def test_bias_and_bans_change_the_choice_without_touching_the_input() -> None:
    x = logits()
    params = SamplingParams(temperature=0, logit_bias={4: 10.0, 1: float("-inf")})
    y = adjust(x, params, [])
    assert sample(y, params, make_rng(0)).token == 4
    z = adjust(x, SamplingParams(temperature=0), [], banned=[1, 2])
    assert sample(z, SamplingParams(temperature=0), make_rng(0)).token == 0
    assert x[1] == 3.0


def test_penalties_follow_llama_cpp() -> None:
    params = SamplingParams(repeat_penalty=2.0, presence_penalty=0.5, frequency_penalty=0.25)
    y = adjust(logits(), params, [1, 1, 3])
    assert y[1] == 3.0 / 2.0 - 2 * 0.25 - 0.5
    assert y[3] == -1.0 * 2.0 - 0.25 - 0.5
    assert y[2] == 2.0


def test_the_same_seed_draws_the_same_tokens() -> None:
    params = SamplingParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=7)
    draws = [
        [sample(logits(), params, rng).token for _ in range(30)]
        for rng in (make_rng(7), make_rng(7))
    ]
    assert draws[0] == draws[1]
    assert len(set(draws[0])) > 1


def test_top_k_one_and_min_p_narrow_to_the_best() -> None:
    rng = make_rng(1)
    for params in (
        SamplingParams(temperature=2.0, top_k=1),
        SamplingParams(temperature=2.0, top_k=0, top_p=1.0, min_p=0.9),
        SamplingParams(temperature=2.0, top_k=0, top_p=0.5, min_p=0.0),
    ):
        assert {sample(logits(), params, rng).token for _ in range(20)} == {1}


def test_all_but_banned_tokens_can_still_be_drawn() -> None:
    x = np.array([0.0, -np.inf, 0.0, -np.inf], dtype=np.float32)
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    seen = {sample(x, params, make_rng(i)).token for i in range(40)}
    assert seen == {0, 2}


def test_masked_tokens_are_never_alternatives() -> None:
    x = np.array([0.0, -np.inf, 1.0, -np.inf], dtype=np.float32)
    s = sample(x, SamplingParams(temperature=0, n_probs=4), make_rng(0))
    assert [t for t, _ in s.top] == [2, 0]
    assert all(np.isfinite(lp) for _, lp in s.top)


def test_extreme_knobs_never_make_a_nan() -> None:
    """A huge bias, a tiny penalty or a tiny temperature overflow float32 logits: they are
    capped, so probabilities and logprobs stay numbers (JSON has no NaN)."""
    history = [0, 1, 2, 3, 4]
    for params in (
        SamplingParams(logit_bias={1: 1e308, 2: 1e308}, n_probs=3),
        SamplingParams(repeat_penalty=5e-324, n_probs=3),
        SamplingParams(temperature=5e-324, n_probs=3),
        SamplingParams(
            temperature=1e-300, repeat_penalty=1e-300, post_sampling_probs=True, n_probs=3
        ),  # fmt: skip
    ):
        x = adjust(logits(), params, history)
        assert not np.isnan(x).any()
        s = sample(x, params, make_rng(2**64 - 1 + 5))  # a seed + choice index past 64 bits
        assert s.logprob is not None and np.isfinite(s.logprob)
        assert all(np.isfinite(lp) for _, lp in s.top)


def test_a_greedy_pick_reads_the_logits_unless_a_ban_changes_it() -> None:
    greedy = SamplingParams(temperature=0)
    x = logits()
    assert plain_argmax(x, greedy, [0, 4]) == 1  # the pick, 1, is not banned: no copy
    assert plain_argmax(x, greedy, [1]) is None  # it is: `adjust` bans it on a copy
    y = adjust(x, greedy, [], banned=[1], lazy_bans=True)
    assert y is not x and sample(y, greedy, make_rng(0)).token == 2
    assert plain_argmax(x, SamplingParams(temperature=0, logprobs=True), []) is None
    assert plain_argmax(x, SamplingParams(temperature=0, logit_bias={2: 5.0}), []) is None
    assert plain_argmax(x, SamplingParams(), []) is None  # a draw, not a pick
    assert adjust(x, SamplingParams(), [], banned=[1], lazy_bans=True) is x  # a chain bans
    wants_logprobs = SamplingParams(temperature=0, logprobs=True)
    assert adjust(x, wants_logprobs, [], banned=[4], lazy_bans=True) is not x


def test_a_chain_draws_for_sampled_requests_but_not_the_rest() -> None:
    assert chain_fits(SamplingParams(temperature=0.8))
    assert not chain_fits(SamplingParams(temperature=0))
    assert not chain_fits(SamplingParams(temperature=1e-6))  # numpy's overflow guard
    assert not chain_fits(SamplingParams(post_sampling_probs=True, n_probs=2))
    picked = sample(logits(), SamplingParams(), lambda x: 3)
    assert picked.token == 3
