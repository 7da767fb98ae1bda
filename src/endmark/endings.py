"""Deciding when a generation has ended: the one place every endpoint goes through.

The EOG set is gathered from everything the model says about itself (DESIGN.md, ending rule 1);
stop strings are matched on text with hold-back while streaming (rule 4); a `Finish` says why
(rule 6). The decision itself is two pure functions, in the shape of vLLM's `check_stop`:
`end_token` before a sampled token is kept, `check_stop` after.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from endmark.engine import Vocab

StopType = Literal["eos", "word", "limit"]

# The order sources are listed in, most general first: a token's `source` is the first one.
SOURCES = ("vocab", "eos", "eot", "eom", "eos_token_ids", "template", "stop")


def printable(text: str) -> str:
    """Text from a model file or a client, safe for a log line: control characters (a
    terminal escape sequence, a newline that forges a log line) are shown escaped."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


@dataclass(frozen=True)
class EogToken:
    id: int
    text: str
    sources: tuple[str, ...]

    @property
    def source(self) -> str:
        return self.sources[0]

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "text": self.text, "source": self.source, "sources": self.sources}


def _sort_sources(sources: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(sources), key=SOURCES.index))


@dataclass(frozen=True)
class EogSet:
    """Every token that ends a generation, with where we learned it from."""

    tokens: dict[int, EogToken]

    @classmethod
    def from_vocab(cls, vocab: Vocab, template_markers: Iterable[int] = ()) -> EogSet:
        found: dict[int, set[str]] = {}

        def add(token: int | None, source: str) -> None:
            if token is not None and 0 <= token < vocab.n_vocab:
                found.setdefault(token, set()).add(source)

        for t in vocab.eog_flagged:
            add(t, "vocab")
        add(vocab.eos, "eos")
        add(vocab.eot, "eot")
        add(vocab.eom, "eom")
        for t in vocab.eos_token_ids:
            add(t, "eos_token_ids")
        for t in template_markers:
            add(t, "template")
        return cls(
            {t: EogToken(t, vocab.text(t), _sort_sources(s)) for t, s in sorted(found.items())}
        )

    def with_stop_tokens(self, vocab: Vocab, tokens: Iterable[int]) -> EogSet:
        """Add `stop` entries that are exactly one control token (for one request)."""
        extra = {t for t in tokens if t not in self.tokens}
        if not extra:
            return self
        merged = dict(self.tokens)
        for t in extra:
            merged[t] = EogToken(t, vocab.text(t), ("stop",))
        return EogSet(merged)

    def __contains__(self, token: object) -> bool:
        return token in self.tokens

    def ids(self) -> list[int]:
        return list(self.tokens)


@dataclass(frozen=True)
class EndPolicy:
    """How one request ends: its EOG tokens, stop strings, and token budget."""

    eog: EogSet
    stop: tuple[str, ...] = ()
    n_predict: int = -1
    ignore_eos: bool = False
    time_limit_ms: int = 0  # llama-server's t_max_predict_ms: 0 is none


@dataclass(frozen=True)
class Finish:
    """Why a generation stopped, and the text still held back when it did."""

    stop_type: StopType
    token: EogToken | None = None
    word: str | None = None
    truncated: bool = False
    tail: str = ""
    detail: str = field(default="", compare=False)
    grammar_complete: bool = False
    json_closed: bool = False  # cut short, with its JSON or tool call closed so that it parses
    # the constraint failed mid-answer (its reason): the answer was cut there, not refused
    constraint_error: str = ""

    @property
    def finish_reason(self) -> str:
        """OpenAI's name for it."""
        return "length" if self.stop_type == "limit" else "stop"

    def describe(self) -> str:
        """One phrase for logs, e.g. `eos <|im_end|> (id 2, source vocab)`."""
        if self.token is not None:
            text = printable(self.token.text)
            return f"eos {text} (id {self.token.id}, source {self.token.source})"
        if self.grammar_complete:
            return "eos (grammar complete)"
        if self.word is not None:
            return f"word '{printable(self.word)}'"
        return f"limit ({self.detail})" if self.detail else "limit"


@dataclass(frozen=True)
class StepFacts:
    """What the end decision needs to know after a token was kept."""

    n_generated: int  # tokens kept so far, this one included
    n_prompt: int
    n_ctx: int  # the sequence's context
    word: str | None = None  # a stop string this token's text completed
    grammar_complete: bool = False  # the constraint can go no further
    elapsed_ms: float = 0.0  # since the first token


def end_token(policy: EndPolicy, token: int, grammar_accepting: bool = False) -> Finish | None:
    """A sampled EOG token ends the generation and is never kept (rules 1-2); under
    `ignore_eos` such tokens are banned before sampling, so none arrives here."""
    if token not in policy.eog or policy.ignore_eos:
        return None
    return Finish("eos", token=policy.eog.tokens[token], grammar_complete=grammar_accepting)


def check_stop(policy: EndPolicy, facts: StepFacts) -> Finish | None:
    """Whether the generation ends after the token just kept, and why (rules 4-6)."""
    if facts.word is not None:
        return Finish("word", word=facts.word)
    if facts.grammar_complete:  # rule 5: stop now, without another forward pass
        return Finish("eos", grammar_complete=True)
    if 0 <= policy.n_predict <= facts.n_generated:
        return Finish("limit", detail=f"n_predict {policy.n_predict}")
    if facts.n_prompt + facts.n_generated >= facts.n_ctx:
        return Finish("limit", truncated=True, detail=f"context {facts.n_ctx} full")
    if policy.time_limit_ms and facts.elapsed_ms >= policy.time_limit_ms:
        return Finish("limit", detail=f"t_max_predict_ms {policy.time_limit_ms}")
    return None


class StopMatcher:
    """Finds stop strings in streamed text, holding back what might be the start of one."""

    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._pending = ""
        self.after_stop = ""  # the text that followed the stop string found last

    def push(self, text: str) -> tuple[str, str | None]:
        """Add text; return what is safe to release and the stop string found, if any."""
        if not self.stops:
            return text, None
        buf = self._pending + text
        hit_at, hit = -1, None
        for s in self.stops:
            i = buf.find(s)
            if i != -1 and (hit_at == -1 or i < hit_at):
                hit_at, hit = i, s
        if hit is not None:
            self._pending = ""
            self.after_stop = buf[hit_at + len(hit) :]
            return buf[:hit_at], hit
        keep = self._held_suffix(buf)
        self._pending = buf[len(buf) - keep :]
        return buf[: len(buf) - keep], None

    @property
    def held(self) -> str:
        """The text held back for now (it may begin a stop string)."""
        return self._pending

    def flush(self) -> str:
        """The held-back text, released because the generation ended another way."""
        out, self._pending = self._pending, ""
        return out

    def _held_suffix(self, buf: str) -> int:
        """Length of the longest end of `buf` that begins some stop string."""
        best = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(buf)), best, -1):
                if buf.endswith(s[:n]):
                    best = n
                    break
        return best
