"""One sequence from prompt to finish: sample, detokenize, check endings, report.

The scheduler owns the forward pass; a `Generation` only turns each step's logits into events,
so any number of them can be advanced by one batched decode.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from endmark.call_room import section_end, thinking_must_close
from endmark.channels import ToolCall
from endmark.constraints import ConstraintFailure
from endmark.delta import Delta
from endmark.detokenize import Detokenizer
from endmark.drafts import PromptLookup
from endmark.endings import (
    EndPolicy,
    Finish,
    StepFacts,
    StopMatcher,
    check_stop,
    end_token,
    printable,
)
from endmark.engine import Vocab
from endmark.events import Done, Event, Failed, Progress, Timings, TokenEvent
from endmark.handover import draw, handover_check
from endmark.invalid import InvalidRequest
from endmark.json_close import json_closing
from endmark.request import GenerationRequest, tokenize_prompt
from endmark.sampling import NO_DRAWS, Chain, Draws, Sampled, adjust, make_rng, plain_argmax

# Re-exported: the events and the request were defined here, and the server imports them so.
__all__ = [
    "Delta",
    "Done",
    "Event",
    "Failed",
    "Generation",
    "GenerationRequest",
    "InvalidRequest",
    "Progress",
    "Timings",
    "TokenEvent",
    "tokenize_prompt",
]

log = logging.getLogger("endmark.generation")

CLOSE_WINDOW = 64  # tokens before the limit from which JSON or a call checks its closing
CLOSE_MARGIN = 2  # tokens one more step may add to the closing (`[{` opens two)
VALUE_ROOM = 1  # tokens the model writes of a required argument's value that endmark names
ITEM_ROOM = 8  # tokens another small item needs (`, "key": 1`): less, and it closes instead
SHORT_VALUE = 4  # tokens a call begun near the limit keeps for each required value (`2.25`)


class Generation:
    """The per-sequence state between decode steps."""

    def __init__(
        self,
        request: GenerationRequest,
        vocab: Vocab,
        policy: EndPolicy,
        n_ctx: int,
        chain: Chain | None = None,
    ) -> None:
        """`chain`: the engine's sampler chain draws its tokens (`sampling.chain_fits`),
        made with `ignore_eos`'s bans."""
        self.request = request
        self.policy = policy
        self.vocab = vocab
        self.n_ctx = n_ctx
        self.tokens: list[int] = []
        self._history = list(request.prompt)
        # a greedy pick draws nothing: no generator is made for it (a fresh one reads the OS's
        # entropy, tens of microseconds before the first token)
        greedy = request.sampling.greedy
        self._rng: Draws = (
            chain if chain is not None else NO_DRAWS if greedy else make_rng(request.sampling.seed)
        )
        self._chain_bans = chain is not None  # it was made with the bans (`Engine`)
        # no channels and no grammar (a raw completion): no marker, call, closing or
        # hand-over can come, and each step goes straight to the pick
        self._plain = request.channels is None and request.constraint is None
        self._detok = Detokenizer(vocab.pieces)
        self._stops = StopMatcher(policy.stop)
        self._banned = policy.eog.ids() if policy.ignore_eos else ()
        self.finish: Finish | None = None
        self.channels = request.channels
        # A constraint applies to the answer: after the thinking, if the prompt opened it.
        thinking = self.channels is not None and self.channels.in_reasoning
        self.constraint = None if thinking else request.constraint
        self._after_thinking = request.constraint if thinking else None
        self._json_from = 0  # where the constrained answer begins in `tokens`
        self.reasoning_tail = ""
        self.tail_calls: tuple[ToolCall, ...] = ()
        self.reasoning_tokens = 0
        self._forced: list[int] = []
        self._writing_close = False  # writing a closing: no grammar takes over (not even a call's)
        self._room: int | None = None  # the tokens a call begun now needs (`_call_room`)
        self._failure: ConstraintFailure | None = None  # the constraint failed in a guess
        self.timings = Timings()
        self.drafter = PromptLookup(request.prompt, request.drafts) if request.drafts else None
        self._guessed = False  # the pending draft is the drafter's (not forced tokens)
        self.t_start = time.perf_counter()
        self.t_first: float | None = None
        self._now = self.t_start
        self.shifted = 0  # tokens a context shift dropped: the finish says it was truncated

    @property
    def n_prompt(self) -> int:
        return len(self.request.prompt)

    def admitted(self, cached: int, now: float) -> Progress:
        """The scheduler gave it a slot holding `cached` tokens of its prompt."""
        self.timings.cached_n = cached
        return self.progress(cached, now)

    def progress(self, n_past: int, now: float) -> Progress:
        ms = (now - self.t_start) * 1000.0
        return Progress(self.n_prompt, self.timings.cached_n, n_past, ms)

    def finish_before_start(self) -> Finish | None:
        """`n_predict: 0` asks for no token at all: the prompt is evaluated and that is all."""
        if self.policy.n_predict == 0:
            self.finish = Finish("limit", detail="n_predict 0")
        return self.finish

    def step(self, logits: np.ndarray, now: float | None = None) -> list[TokenEvent]:
        """Turn one step's logits into at most one token event; sets `finish` when done. A
        constraint failing once the answer has begun ends it there (`_constraint_failed`)."""
        try:
            if self._failure is not None:  # found while guessing ahead (`next_draft`)
                raise self._failure
            return self._step(logits, now)
        except ConstraintFailure as exc:
            return self._constraint_failed(exc)

    def _step(self, logits: np.ndarray, now: float | None) -> list[TokenEvent]:
        self._now = time.perf_counter() if now is None else now
        if self.t_first is None:
            self.t_first = self._now
            self.timings.prompt_n = self.n_prompt - self.timings.cached_n
            self.timings.prompt_ms = (self._now - self.t_start) * 1000.0
            if self.finish_before_start():
                return []
        verbose = log.isEnabledFor(logging.DEBUG)
        if self._plain:  # no channel, no grammar: none of the checks below can act
            picked = self._pick(logits, None, None, verbose)
            return self._kept(picked, verbose)
        if self._over_budget() or self._call_due():
            self._forced = list(self.request.think_close)
        if self._forced:  # the close of thinking, forced: no sampling
            return self._accept(self._forced.pop(0), None, ())
        closing = self._json_closing()
        if closing is not None:
            return self._close(closing, "n_predict, its JSON closed")
        closing = self._call_closing()
        if closing is not None:
            return self._close(closing, "n_predict, its tool call closed")
        reach = self._call_reach()
        constraint = self.constraint
        mask = constraint.mask() if constraint is not None else None
        picked = self._pick(logits, mask, self._refused(), verbose)
        if reach and not self._names_it(picked.token, reach):
            return [e for token in reach for e in self._accept(token, None, ())]
        if self._thinking_must_answer(picked.token):  # the end of thinking, not of the turn
            self._forced = list(self.request.think_close)
            return self._accept(self._forced.pop(0), None, ())
        end = self._no_room_in_section(picked.token)
        if end:  # the grammar allows it there; what follows is the model's
            return [e for token in end for e in self._accept(token, None, ())]
        if end is not None or self._no_room_for_another_call(picked.token):
            self._end(Finish("limit", detail="n_predict: no room for another tool call"))
            return []
        return self._kept(picked, verbose)

    def _kept(self, picked: Sampled, verbose: bool) -> list[TokenEvent]:
        events = self._accept(picked.token, picked.logprob, picked.top)
        if verbose:
            self._log_token(picked.token, picked.logprob)
        return events

    def _pick(
        self,
        logits: np.ndarray,
        mask: np.ndarray | None,
        refused: Callable[[int], bool] | None,
        verbose: bool,
    ) -> Sampled:
        params = self.request.sampling
        # only the pick is read: a greedy pick checks the bans, a chain applies them
        lazy = refused is None and not verbose and (params.greedy or self._chain_bans)
        if lazy and mask is None:
            token = plain_argmax(logits, params, self._banned)
            if token is not None:
                return Sampled(token)
        x = adjust(logits, params, self._history, self._banned, mask, lazy)
        return draw(x, params, self._rng, verbose, refused)

    def _refused(self) -> Callable[[int], bool] | None:
        """What a drawn token is checked by: never one whose text after a marker the grammar
        taking over refuses (None: no grammar can take over)."""
        lazy = self.constraint is None and not self._writing_close
        on_call = self.request.on_call if lazy else None
        waits = self._after_thinking is not None
        return handover_check(self.vocab, self._detok, self._stops, self.channels, on_call,
                              waits)  # fmt: skip

    def _thinking_must_answer(self, token: int) -> bool:
        """An end token while thinking, with a grammar waiting for the answer (a forced call,
        a schema): it ends the thinking instead of the turn, and the answer follows."""
        channels = self.channels
        waits = self._after_thinking is not None and bool(self.request.think_close)
        thinking = channels is not None and channels.in_reasoning
        return waits and thinking and token in self.policy.eog and not self._forced

    def _call_due(self) -> bool:
        """Thinking closes while a forced call still fits (`call_room`)."""
        if self._forced or self.request.close_call is None:
            return False
        waits, left = self._after_thinking is not None, self._tokens_left()
        return thinking_must_close(self.channels, self.request.think_close, waits, left,
                                   self._call_room)  # fmt: skip

    def _constraint_failed(self, exc: ConstraintFailure) -> list[TokenEvent]:
        """Before any token, the request's constraint is at fault (a 4xx, as at prepare
        time); after, the answer ends where it failed, a cut said in `constraint_error`,
        never an error in the middle of an answer."""
        if not self.tokens or self.finish is not None:
            raise exc
        log.warning("%s: %s; the answer ends here", self.request.label, exc)
        self.constraint, self._after_thinking, self._failure = None, None, None
        self._end(Finish("limit", detail=str(exc), constraint_error=str(exc)))
        return []

    def _near_json_limit(self) -> bool:
        """Close enough to the token limit that the JSON or a call may need closing: each
        step checks (no drafts, which could overrun it)."""
        n_predict = self.policy.n_predict
        closes = self.request.close_json is not None or self.request.close_call is not None
        return closes and n_predict >= 0 and n_predict - len(self.tokens) <= CLOSE_WINDOW

    def _json_closing(self) -> list[int] | None:
        """The tokens that close the JSON so far, once the budget is down to them (plus a
        margin: the next token may open more)."""
        if self.constraint is None or self._after_thinking is not None:
            return None
        if self.request.close_json is None or not self._near_json_limit():
            return None
        pieces = self.vocab.pieces
        text = b"".join(pieces[t] for t in self.tokens[self._json_from :])
        suffix = json_closing(text.decode("utf-8", errors="replace"))
        if not suffix:
            return None
        tokens = self.request.close_json(suffix)
        room = self.policy.n_predict - len(self.tokens)
        # Right after a whole value, close unless another whole item could still fit: a
        # comma now would need a made-up key (`"": null`) to close.
        at_boundary = suffix.strip("]}") == ""
        margin = ITEM_ROOM if at_boundary else CLOSE_MARGIN
        return tokens if len(tokens) + margin >= room else None

    def _call_closing(self) -> list[int] | None:
        """The tokens that close the open tool call (the open value and object, then the end
        marker), once the budget is down to them. Unlike JSON's, a cut after a comma names a
        real key (`calls/`), so a call goes on at a boundary while its closing fits."""
        channels, tokenize = self.channels, self.request.close_call
        if channels is None or tokenize is None or not channels.in_call:
            return None
        if not self._near_json_limit() or self._stops.held:
            return None  # (text a stop string holds back is written: the closing waits for it)
        # held text that may begin the end marker or another call is the end's: another
        # call, closed here with nothing in it, would not be valid (`_no_room_in_section`)
        close = channels.closing(here=True)
        if close is None or not close.text:  # whole but for its end marker: the model's to write
            return None
        tokens = tokenize(close.text, close.end)
        if len(tokens) + CLOSE_MARGIN < self.policy.n_predict - len(self.tokens):
            return None
        channels.closing_written(close)
        return tokens

    def _call_reach(self) -> list[int]:
        """The tokens that end the open call's running value early and name a required
        argument it lacks, once the budget is down to the closing plus room for each missing
        argument (its key and a short value): a string that loops would otherwise use the
        budget up and leave the call invalid. The grammar stays on: the model writes the
        value. Empty where nothing is missing, or the grammar would refuse the text."""
        channels, tokenize, constraint = self.channels, self.request.close_call, self.constraint
        if channels is None or tokenize is None or constraint is None or not channels.in_call:
            return []
        if not self._near_json_limit() or self._stops.held:
            return []
        found = channels.reaching()
        if found is None:
            return []
        reach, after = found
        # the model must write one token of the value before the closing (the `null` it would
        # write in its place) takes the rest: name the argument at the last step that leaves
        # it that (a bet that the running value will not end by itself first), plus room for
        # each other key missing
        tokens = tokenize(reach.text, "")
        need = len(tokens) + len(tokenize(after.text, after.end)) + CLOSE_MARGIN + VALUE_ROOM
        value = len(tokenize("null", "")) + VALUE_ROOM
        others = sum(
            len(tokenize(f', "{key}": ', "")) + value for key in reach.keys if key != reach.key
        )
        room = self.policy.n_predict - len(self.tokens)
        if room > need + others or room < need:
            return []  # not yet, or no room left for a value: the call is closed as it stands
        if constraint.valid_prefix(tokens) < len(tokens):
            return []
        return tokens

    def _names_it(self, token: int, reach: list[int]) -> bool:
        """The model's own pick already writes what `_call_reach` would force (and maybe
        more: the value itself, the call's close): no bet is needed, the pick stands."""
        if token in self.vocab.control:
            return False
        said = self._detok.peek_bytes(token)
        return said.startswith(b"".join(self.vocab.pieces[t] for t in reach))

    def _no_room_in_section(self, token: int) -> list[int] | None:
        """What a section of several calls writes instead of `token`, near the limit, when
        another call cannot fit (`call_room.section_end`); None: `token` is kept."""
        channels, tokenize = self.channels, self.request.close_call
        if channels is None or tokenize is None or not channels.in_call:
            return None
        if not self._near_json_limit() or token in self.policy.eog:
            return None
        control = token in self.vocab.control
        written = self.vocab.text(token).encode() if control else self._detok.peek_bytes(token)
        written = self._stops.held.encode() + written  # (held back, it comes before the token)
        end = section_end(channels, written, self._tokens_left(), self._call_room, tokenize)
        constraint = self.constraint
        if not end or constraint is None:
            return end
        if not written.strip() and constraint.valid_prefix([token, *end]) == len(end) + 1:
            return None  # a space the end may follow (not R1's `\n` between two calls)
        if constraint.valid_prefix(end) < len(end):
            return None  # the grammar is past where the end could begin: the token is kept
        return end

    def _tokens_left(self) -> int:
        """Tokens before the limit; -1 without one."""
        n_predict = self.policy.n_predict
        return n_predict - len(self.tokens) if n_predict >= 0 else -1

    def _no_room_for_another_call(self, token: int) -> bool:
        """Between whole calls, once the budget left cannot hold another whole call
        (`_call_room`), `token` may end the turn or go on in text, but not lead to another
        call: it would be cut before its arguments. The turn ends there instead, as the
        limit's."""
        channels = self.channels
        if channels is None or not channels.calls or self.policy.n_predict < 0:
            return False
        if channels.in_call or channels.in_reasoning or self.request.close_call is None:
            return False
        if self.policy.n_predict - len(self.tokens) >= self._call_room():
            return False
        if token in self._call_start():
            return True
        # under a call grammar, the answer goes on only with another call
        return self.constraint is not None and token not in self.policy.eog.ids()

    def _call_start(self) -> tuple[int, ...]:
        """The first token of the call format's start marker."""
        assert self.channels is not None and self.channels.calls_format is not None
        assert self.request.close_call is not None
        return tuple(self.request.close_call("", self.channels.calls_format.start)[:1])

    def _call_room(self) -> int:
        """The tokens a call begun now needs to be whole and valid, whichever tool the model
        names: the largest of the tools' smallest valid calls (the markup, the name, and for
        each required argument its markup, `argument_markup`, and `SHORT_VALUE`). A call begun with
        less left may be cut before an argument it needs (`add` after room for `get_time`'s)."""
        if self._room is None:
            channels, tokenize = self.channels, self.request.close_call
            assert channels is not None and channels.calls_format is not None and tokenize
            fmt = channels.calls_format
            start = len(tokenize("", fmt.start))
            sizes = []
            for tool in channels.callable:
                close = fmt.closing("", [tool])
                if close is not None:
                    keys = _required(tool.parameters)
                    args = sum(
                        len(tokenize(fmt.argument_markup(key), "")) + SHORT_VALUE for key in keys
                    )
                    sizes.append(len(tokenize(close.text, close.end)) + args)
            self._room = start + max(sizes, default=0)
        return self._room

    def _close(self, tokens: list[int], detail: str) -> list[TokenEvent]:
        """Write the closing without the grammar (a schema may still want a required key or
        more items: the result parses, and may not validate), and end as a limit stop."""
        self.constraint, self._writing_close = None, True
        events: list[TokenEvent] = []
        for token in tokens:
            events += self._accept(token, None, ())
            if self.finish is not None:
                break
        if self.finish is None:
            self._end(Finish("limit", detail=detail, json_closed=True))
        elif self.finish.stop_type == "limit":
            self.finish = replace(self.finish, json_closed=True)
        return events

    def verify(
        self, rows: np.ndarray, drafts: Sequence[int], now: float | None = None
    ) -> list[TokenEvent]:
        """Sample each position of a checked guess from the model's own distribution, and
        stop at the first token that differs from the guess: the output is the one plain
        decoding gives (at any temperature, the same distribution). `rows[i]` are the logits
        after the guess's first i tokens."""
        events: list[TokenEvent] = []
        accepted = 0
        for i, row in enumerate(rows):
            before = len(self.tokens)
            events += self.step(row, now)
            taken = self.tokens[before:]
            if self.finish is not None or i == len(drafts) or taken != [drafts[i]]:
                break
            accepted += 1
        self.timings.draft_n += len(drafts)
        self.timings.draft_n_accepted += accepted
        if self.drafter is not None and self._guessed:  # not for the grammar's forced runs
            self.drafter.feedback(len(drafts), accepted)
        return events

    def next_draft(self, room: int, price: float = 0.0) -> list[int]:
        """A guess at the next tokens (at most `room`), to be checked in one batched decode:
        the tokens the grammar forces next (a key, its quotes, a brace: llguidance's
        fast-forward, in its own tokenization, which the check keeps only where the model
        would have written the same tokens), else what followed the last few tokens earlier
        in the context, as much of it as is worth its rows at `price` (`PromptLookup.draft`).
        Cut where the grammar would refuse it or the limit would end it."""
        if self.finish is not None or self._forced or room <= 0 or self._near_json_limit():
            return []
        try:
            return self._draft(room, price)
        except ConstraintFailure as exc:  # the next step ends the answer with it
            self._failure = exc
            return []

    def _draft(self, room: int, price: float) -> list[int]:
        constraint = self.constraint
        if constraint is not None and self.request.fast_forward:
            forced = constraint.forced()
            if forced:
                self._guessed = False
                return forced[: min(room, self._left())]
        if self.drafter is None:
            return []
        self._guessed = True
        guess = self.drafter.draft(price)[:room]
        guess = guess[: self._left()]
        if guess and constraint is not None:
            guess = guess[: constraint.valid_prefix(guess)]
        return guess

    def _left(self) -> int:
        """Tokens a guess may hold before the limit (the check samples one more)."""
        n_predict = self.policy.n_predict
        return max(0, n_predict - len(self.tokens) - 1) if n_predict >= 0 else 1 << 30

    def _accept(
        self, token: int, logprob: float | None, top: tuple[tuple[int, float], ...]
    ) -> list[TokenEvent]:
        constraint = self.constraint
        accepting = constraint is not None and constraint.accepting
        ended = end_token(self.policy, token, accepting)
        if ended is not None:
            self._end(ended)
            return []
        if constraint is not None:  # first: a token it refuses is not kept
            constraint.consume(token)
        self.tokens.append(token)
        self._history.append(token)
        if self.drafter is not None:
            self.drafter.extend((token,))
        text = self._detok.add_token(token)
        marker = self._marker(token)
        if marker:  # the text before a marker is over: an unfinished character stays on its side
            text += self._detok.finalize() + marker
        released, word = self._stops.push(text)
        delta = self._split(released)
        constraint = self.constraint
        timings = self._timings_now() if self.request.timings_per_token else None
        facts = StepFacts(
            n_generated=len(self.tokens),
            n_prompt=self.n_prompt,
            n_ctx=self.n_ctx,
            word=word,
            grammar_complete=constraint is not None and constraint.complete,
            elapsed_ms=(self._now - self.t_first) * 1000.0 if self.t_first is not None else 0.0,
        )
        finish = check_stop(self.policy, facts)
        if finish is not None:
            self._end(finish, flush=finish.stop_type != "word")
        return [
            TokenEvent(token, delta.content, logprob, top, timings, delta.reasoning, delta.calls)
        ]

    def end_reasoning(self) -> bool:
        """Close the thinking now (`/v1/chat/completions/control`'s `reasoning_end`): its
        close is forced from the next step on, as a spent budget forces it."""
        if self.channels is None or not self.channels.in_reasoning or self._forced:
            return False
        self._forced = list(self.request.think_close)
        return bool(self._forced)

    def _over_budget(self) -> bool:
        budget = self.request.reasoning_budget
        thinking = self.channels is not None and self.channels.in_reasoning
        return thinking and 0 <= budget <= self.reasoning_tokens and not self._forced

    def _marker(self, token: int) -> str:
        """A control token that is a channel marker (`<tool_call>`, `<think>`) renders as
        nothing in output (rule 3), but the splitter must see it where it acts; elsewhere (a
        stray `</tool_call>` in content) it is nothing at all."""
        if self.channels is None or token not in self.vocab.control:
            return ""
        text = self.vocab.text(token)
        return text if text in self.channels.markers else ""

    def _split(self, text: str) -> Delta:
        """Content, reasoning and finished calls in `text`; a call the model starts under
        `auto` switches its grammar on from here (a lazy grammar)."""
        if self.channels is None:
            return Delta(text)
        was_thinking = self.channels.in_reasoning
        pieces = self.channels.push(text)
        self.reasoning_tokens += was_thinking
        if self._after_thinking is not None and not self.channels.in_reasoning:
            self.constraint, self._after_thinking = self._after_thinking, None
            self._json_from = len(self.tokens)
        if self.channels.in_call and self.constraint is None and self.request.on_call \
                and not self._writing_close:  # fmt: skip
            # from all the call's text, held text too (a `<` that may begin its end marker, or
            # a stop string: the model wrote it already)
            written = self.channels.call_text + self.channels.held + self._stops.held
            self.constraint = self.request.on_call(written)
        return Delta.of(pieces)

    def _timings_now(self) -> Timings:
        t = self.timings
        t.predicted_n = len(self.tokens)
        t.predicted_ms = (self._now - (self.t_first or self._now)) * 1000.0
        return replace(t)

    def _end(self, finish: Finish, flush: bool = True) -> None:
        self._timings_now()
        if self.shifted:
            finish = replace(finish, truncated=True)
        tail = self._stops.flush() + self._detok.finalize() if flush else ""
        if self.channels is not None:
            cut = finish.stop_type == "limit"
            pieces = self.channels.push(tail) + self.channels.finish(cut)
            ended = Delta.of(pieces)
            tail, self.reasoning_tail, self.tail_calls = ended.content, ended.reasoning, ended.calls
            if self.channels.closed_by_endmark:  # a call cut short, closed (channels.py)
                finish = replace(finish, json_closed=True)
        self.finish = replace(finish, tail=tail) if tail else finish

    @property
    def calls(self) -> tuple[ToolCall, ...]:
        return tuple(self.channels.calls) if self.channels is not None else ()

    def result(self) -> Done:
        """The one result of a finished generation, which every dialect renders."""
        assert self.finish is not None
        return Done(
            self.finish,
            tuple(self.tokens),
            self.n_prompt,
            self.timings,
            self.reasoning_tail,
            self.tail_calls,
            self.calls,
        )

    def _log_token(self, token: int, logprob: float | None) -> None:
        prob = float(np.exp(logprob)) if logprob is not None else float("nan")
        decision = self.finish.describe() if self.finish else "continue"
        log.debug(
            "%s token %d '%s' p=%.4f -> %s",
            self.request.label,
            token,
            printable(self.vocab.text(token)),
            prob,
            decision,
        )


def _required(schema: object) -> list[str]:
    """The required arguments of a tool's parameters schema."""
    required = schema.get("required") if isinstance(schema, dict) else None
    return [k for k in required if isinstance(k, str)] if isinstance(required, list) else []
