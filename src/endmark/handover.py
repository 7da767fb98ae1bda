"""Where a grammar takes over in the middle of a token.

A grammar starts at a marker: a lazy call grammar at the call's start marker (`auto`), the
answer's grammar (a forced call, a schema) at the end of thinking. A marker written as text
may end inside a token (`<tool_call` then `>,`), and what the token holds after the marker
is then already written when the grammar takes over. So before such a token is kept, its
effect is tried on copies: a token whose rest the new grammar refuses is not kept, and
another is sampled (as if the grammar had masked it), instead of failing the request.
After thinking, the rest must be empty: the answer's grammar starts on a token boundary.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np

from endmark.channels import ChannelSplitter
from endmark.constraints import Constraint, ConstraintFailure
from endmark.detokenize import Detokenizer
from endmark.endings import StopMatcher
from endmark.engine import Vocab
from endmark.sampling import Draws, Sampled, SamplingParams, sample

TRIES = 32  # tokens drawn again at a marker; then the grammar's refusal ends the answer


def draw(
    x: np.ndarray,
    params: SamplingParams,
    rng: Draws,
    verbose: bool,
    refused: Callable[[int], bool] | None,
) -> Sampled:
    """A token sampled from `x`; one that `refused` refuses is drawn again without it (as if
    a mask had taken it out: the same distribution, conditioned on the grammar's consent)."""
    picked = sample(x, params, rng, want_logprob=verbose)
    if refused is None:
        return picked
    for _ in range(TRIES):
        if not refused(picked.token):
            break
        x = np.array(x, copy=True)
        x[picked.token] = -np.inf
        if not np.isfinite(x).any():
            break
        picked = sample(x, params, rng, want_logprob=verbose)
    return picked


def handover_check(
    vocab: Vocab,
    detok: Detokenizer,
    stops: StopMatcher,
    channels: ChannelSplitter | None,
    on_call: Callable[[str], Constraint] | None,
    answer_waits: bool,
) -> Callable[[int], bool] | None:
    """What `draw` asks of each token it draws, or None where no grammar can take over (no
    lazy call grammar, none waiting for the end of thinking): a control token is a marker
    that leaves no rest."""
    if channels is None or (on_call is None and not answer_waits):
        return None

    def refused(token: int) -> bool:
        if token in vocab.control:
            return False
        return refused_handover(detok.peek(token), stops, channels, on_call, answer_waits)

    return refused


def refused_handover(
    text: str,
    stops: StopMatcher,
    channels: ChannelSplitter,
    on_call: Callable[[str], Constraint] | None,
    answer_waits: bool,
) -> bool:
    """Whether a token whose text is `text` would complete a marker and leave after it text
    that the grammar taking over refuses. `stops` and `channels` are the generation's, left
    as they are; `on_call`: the lazy call grammar, when no grammar runs yet; `answer_waits`:
    a grammar waits for the end of thinking."""
    pending = stops.held + channels.held + text
    fmt, think = channels.calls_format, channels.think
    may_call = (  # at the call's start marker, or a bare header (the last, per token drawn)
        on_call is not None and not channels.in_reasoning and not channels.in_call
        and fmt is not None
        and (bool(fmt.start) and fmt.start in pending or fmt.opens_bare(channels.held + text))
    )  # fmt: skip
    may_answer = (
        answer_waits and channels.in_reasoning and think is not None and think.end in pending
    )
    if not (may_call or may_answer):
        return False
    stopping = copy.copy(stops)
    released, word = stopping.push(text)
    if word is not None:  # a stop string ends the generation first
        return False
    trial = channels.peek_copy()
    pieces = trial.push(released)
    if may_answer and not trial.in_reasoning:
        rest = any(p.channel != "reasoning" for p in pieces) or trial.held or trial.in_call
        return bool(rest)
    if on_call is not None and trial.in_call:
        try:
            on_call(trial.call_text + trial.held + stopping.held)
        except ConstraintFailure:
            return True
    return False
