"""Logits to a token: penalties, bias, top-k/p, min-p, temperature, seed, and logprobs.

The order follows llama.cpp's default chain: penalties, top-k, top-p, min-p, temperature, draw.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

# A draw outside numpy (llama.cpp's sampler chain, `engine.sampler_chain`): adjusted logits
# in, a token out, through the same top-k, top-p, min-p and temperature, with its own seeded
# generator. A request draws with one or the other from its first token to its last.
Chain = Callable[[np.ndarray], int]
Draws = np.random.Generator | Chain

# a temperature below this may overflow float32 in a chain's division: numpy's draw, which
# guards it, keeps such requests
CHAIN_MIN_TEMPERATURE = 1e-3

# The largest logit a bias or a penalty may make: beyond it float32 holds only +inf, and two
# infinite logits make NaN probabilities (a 10^308 bias, a penalty of 10^-300).
LOGIT_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int = -1
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    n_probs: int = 0
    logprobs: bool = False  # the chosen token's logprob even when no alternatives are asked for
    post_sampling_probs: bool = False  # report probabilities after top-k/p, min-p, temperature

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def penalizes(self) -> bool:
        return self.repeat_last_n != 0 and (
            self.repeat_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
        )


@dataclass(frozen=True)
class Sampled:
    token: int
    logprob: float | None = None
    top: tuple[tuple[int, float], ...] = ()


def chain_fits(params: SamplingParams) -> bool:
    """Whether a chain may draw for this request: sampled (greedy is numpy's argmax, cheaper
    still), at a temperature it divides by safely, not asking for the chain's own
    probabilities (`post_sampling_probs`: numpy's candidates give them)."""
    post = params.post_sampling_probs and (params.n_probs or params.logprobs)
    return not params.greedy and params.temperature >= CHAIN_MIN_TEMPERATURE and not post


def _no_draws(x: np.ndarray) -> int:
    raise AssertionError("a greedy request drew a random token")


NO_DRAWS: Chain = _no_draws  # a greedy request's draws: none (`sample` takes the argmax)


def make_rng(seed: int) -> np.random.Generator:
    """A request's own generator: the same seed gives the same draws, alone or batched."""
    return np.random.default_rng(None if seed < 0 else seed)


def adjust(
    logits: np.ndarray,
    params: SamplingParams,
    history: Sequence[int],
    banned: Collection[int] = (),
    mask: np.ndarray | None = None,
    lazy_bans: bool = False,
) -> np.ndarray:
    """Apply bias, penalties, bans and an allowed-token mask; copies only when it must.

    `lazy_bans`: only the pick is read (no redraw, no logprob to log), and a draw that is not
    greedy bans by itself (a chain made with the bans). Where the bans are then the only
    change, a chain needs no copy (of a row of logits that a decode has left cold, ~60 us);
    a greedy pick needs none either unless it is banned (`plain_argmax`, asked first)."""
    if not (params.logit_bias or params.penalizes or mask is not None):
        if not banned:
            return logits
        if lazy_bans and not params.greedy and not (params.logprobs or params.n_probs):
            return logits
    x = np.array(logits, dtype=np.float32, copy=True)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # capped just below
        if params.penalizes and history:
            window = history if params.repeat_last_n < 0 else history[-params.repeat_last_n :]
            ids, counts = np.unique(np.asarray(window, dtype=np.int64), return_counts=True)
            vals = x[ids]
            if params.repeat_penalty != 1.0:
                pen = params.repeat_penalty
                vals = np.where(vals > 0, vals / pen, vals * pen)
            vals = vals - counts * params.frequency_penalty - params.presence_penalty
            x[ids] = np.minimum(vals, LOGIT_MAX)
        for token, bias in params.logit_bias.items():
            x[token] = min(x[token] + bias, LOGIT_MAX)  # -inf (a ban) stays
    if banned:
        x[list(banned)] = -np.inf
    if mask is not None:
        x[~mask] = -np.inf
    return x


def plain_argmax(logits: np.ndarray, params: SamplingParams, banned: Collection[int]) -> int | None:
    """A greedy pick that nothing but bans could change, read straight off the logits (the
    bans checked on the pick, not applied to a copy); None where `adjust` must act first."""
    if not params.greedy or params.logit_bias or params.penalizes:
        return None
    if params.logprobs or params.n_probs or params.post_sampling_probs:
        return None
    token = int(logits.argmax())
    return None if token in banned else token


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = np.max(x)
    shifted = x - m
    return shifted - np.log(np.sum(np.exp(shifted)))


def top_logprobs(logprobs: np.ndarray, n: int) -> tuple[tuple[int, float], ...]:
    """The n most likely tokens; banned or masked ones (-inf) are never alternatives, and
    -inf would not even be valid JSON."""
    n = min(n, logprobs.shape[0])
    idx = np.argpartition(-logprobs, n - 1)[:n]
    idx = idx[np.argsort(-logprobs[idx], kind="stable")]
    return tuple((int(i), float(logprobs[i])) for i in idx if np.isfinite(logprobs[i]))


def _candidates(x: np.ndarray, params: SamplingParams) -> tuple[np.ndarray, np.ndarray]:
    """The tokens the sampling chain keeps, most likely first, and their final probabilities."""
    n = x.shape[0]
    k = params.top_k if 0 < params.top_k < n else n
    cand = np.argpartition(-x, k - 1)[:k] if k < n else np.arange(n)
    cand = cand[np.argsort(-x[cand], kind="stable")]
    vals = x[cand].astype(np.float64)
    finite = np.isfinite(vals)
    if not finite.all():
        if not finite.any():
            return cand[:1], np.ones(1)
        cand, vals = cand[finite], vals[finite]
    probs = np.exp(vals - vals[0])
    probs /= probs.sum()
    keep = len(cand)
    if 0.0 < params.top_p < 1.0:
        keep = min(keep, int(np.searchsorted(np.cumsum(probs), params.top_p)) + 1)
    if params.min_p > 0.0:
        keep = min(keep, int(np.count_nonzero(probs >= params.min_p * probs[0])))
    keep = max(1, keep)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = vals[:keep] / params.temperature
        p = np.exp(scaled - scaled[0])
        if not np.isfinite(p).all():  # a temperature so small the logits overflow: greedy
            p = np.exp((vals[:keep] - vals[0]) / params.temperature)  # 0 or 1: never NaN
    p /= p.sum()
    return cand[:keep], p


def _draw(x: np.ndarray, params: SamplingParams, rng: Draws) -> int:
    if not isinstance(rng, np.random.Generator):
        return rng(x)
    cand, p = _candidates(x, params)
    return int(cand[rng.choice(len(cand), p=p)])


def _sample_post(x: np.ndarray, params: SamplingParams, rng: Draws) -> Sampled:
    """llama-server's `post_sampling_probs`: probabilities from the end of the chain, only
    for the tokens it kept (none of them zero)."""
    if params.greedy:
        token = int(np.argmax(x))
        return Sampled(token, 0.0, ((token, 0.0),) if params.n_probs else ())
    cand, p = _candidates(x, params)
    assert isinstance(rng, np.random.Generator)  # `chain_fits` keeps chains away from here
    i = int(rng.choice(len(cand), p=p))
    logp = np.log(p)
    top = tuple((int(t), float(lp)) for t, lp in zip(cand, logp, strict=True))
    return Sampled(int(cand[i]), float(logp[i]), top[: params.n_probs])


def sample(
    x: np.ndarray, params: SamplingParams, rng: Draws, want_logprob: bool = False
) -> Sampled:
    """Pick a token from adjusted logits `x`; logprobs come from the same adjusted logits."""
    if params.post_sampling_probs and (params.n_probs or params.logprobs):
        return _sample_post(x, params, rng)
    token = int(np.argmax(x)) if params.greedy else _draw(x, params, rng)
    if not (want_logprob or params.logprobs or params.n_probs):
        return Sampled(token)
    lp = log_softmax(x.astype(np.float64, copy=False))
    top = top_logprobs(lp, params.n_probs) if params.n_probs else ()
    return Sampled(token, float(lp[token]), top)
