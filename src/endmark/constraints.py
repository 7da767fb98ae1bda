"""Grammar, JSON Schema and JSON-object constraints, on llguidance.

One llguidance tokenizer per model (its end tokens are the whole EOG set, so an end token is
allowed exactly where the grammar accepts); one matcher per generation.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import llguidance as lg
import numpy as np

from endmark.invalid import InvalidRequest

Kind = Literal["grammar", "json_schema", "json_object", "lark"]

# Compact JSON: a small model cannot run away in blanks between tokens.
JSON_OPTIONS: dict[str, Any] = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}


def closed_objects(schema: Any, max_string: int | None = None) -> Any:
    """`schema` with `additionalProperties: false` wherever an object lists its properties and
    says nothing of others, as llama.cpp reads schemas: a small model cannot ramble in made-up
    keys until the token limit cuts its JSON (`additionalProperties: true` still allows them).
    With `max_string`, a string the schema does not bound gets that `maxLength`."""
    if isinstance(schema, list):
        return [closed_objects(s, max_string) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed_objects(v, max_string) if k not in LITERAL_KEYS else v
           for k, v in schema.items()}  # fmt: skip
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {k: closed_objects(v, max_string)
                             for k, v in schema["properties"].items()}  # fmt: skip
        out.setdefault("additionalProperties", False)
    bounded = {"maxLength", "enum", "const", "pattern", "format"} & schema.keys()
    if max_string is not None and schema.get("type") == "string" and not bounded:
        out["maxLength"] = max_string
    return out


LITERAL_KEYS = ("const", "enum", "default", "examples")  # values, not schemas


@dataclass(frozen=True)
class ConstraintSpec:
    """What a request asked for, and the field it came in (named in errors)."""

    kind: Kind
    source: str | dict[str, Any] | None
    field: str


class ConstraintFailure(RuntimeError):
    """The matcher rejected a token or ran out of resources: never a clean stop."""


class Constraint:
    """One generation's matcher: what may come next, and whether the grammar is done."""

    def __init__(self, matcher: lg.LLMatcher, n_vocab: int) -> None:
        self._matcher = matcher
        self._n_vocab = n_vocab
        self._check()

    def _check(self) -> None:
        if self._matcher.is_error():
            raise ConstraintFailure(f"constraint failed: {self._matcher.get_error()}")

    def mask(self) -> np.ndarray:
        """A boolean array over the vocabulary: True where the grammar allows the token."""
        bits = np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8)
        self._check()
        return np.unpackbits(bits, bitorder="little")[: self._n_vocab].astype(bool)

    def consume(self, token: int) -> None:
        self._matcher.consume_token(token)
        self._check()

    def forced(self) -> list[int]:
        """The tokens the grammar allows and no other, from here (llguidance's fast-forward:
        forced text in its canonical tokenization)."""
        tokens = self._matcher.compute_ff_tokens()
        self._check()
        return list(tokens)

    def valid_prefix(self, tokens: list[int]) -> int:
        """How many of `tokens` the grammar would take in a row, consuming none."""
        return int(self._matcher.validate_tokens(tokens))

    @property
    def accepting(self) -> bool:
        return bool(self._matcher.is_accepting())

    @property
    def complete(self) -> bool:
        """The grammar can go no further: generation must end now."""
        return bool(self._matcher.is_stopped())


class ConstraintCompiler:
    """Turns request fields into matchers for one model; compile errors become 400s."""

    def __init__(self, make_tokenizer: Callable[[], lg.LLTokenizer], n_vocab: int) -> None:
        self._make_tokenizer = make_tokenizer
        self._tokenizer: lg.LLTokenizer | None = None
        self._lock = threading.Lock()
        self.n_vocab = n_vocab

    @property
    def tokenizer(self) -> lg.LLTokenizer:
        """Built on first use: it takes a moment, and many servers never see a grammar."""
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = self._make_tokenizer()
            return self._tokenizer

    def compile(self, spec: ConstraintSpec) -> str:
        """The llguidance grammar for `spec`, checked; raises InvalidRequest naming the field."""
        try:
            grammar = self._grammar(spec)
        except (ValueError, TypeError) as exc:
            raise InvalidRequest(f"{spec.field}: {exc}", spec.field) from None
        error = lg.LLMatcher.validate_grammar(grammar, self.tokenizer)
        if error:
            raise InvalidRequest(f"{spec.field}: {error}", spec.field)
        return grammar

    @staticmethod
    def _grammar(spec: ConstraintSpec) -> str:
        if spec.kind == "lark":  # built by endmark itself (tool calls)
            return lg.grammar_from("lark", str(spec.source))
        if spec.kind == "grammar":
            if not isinstance(spec.source, str) or not spec.source.strip():
                raise ValueError("the grammar must be a non-empty GBNF text")
            return lg.grammar_from("gbnf", spec.source)
        schema = spec.source if spec.kind == "json_schema" else (spec.source or {"type": "object"})
        if not isinstance(schema, dict):
            raise ValueError("the schema must be a JSON object")
        json.dumps(schema)  # a TypeError here names an unserialisable value
        return lg.LLMatcher.grammar_from_json_schema(closed_objects(schema), defaults=JSON_OPTIONS)

    def matcher(self, grammar: str, written: str = "") -> Constraint:
        """A matcher of `grammar`, past `written` if the model has already written that much
        (a lazy grammar). llguidance tokenizes it: a SentencePiece tokenizer would put its
        dummy-prefix space in front, which no grammar expects."""
        matcher = Constraint(lg.LLMatcher(self.tokenizer, grammar, log_level=0), self.n_vocab)
        for token in self.tokenizer.tokenize_str(written) if written else ():
            matcher.consume(token)
        return matcher
