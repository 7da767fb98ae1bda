"""Grammar, JSON Schema and JSON-object constraints, on llguidance.

One llguidance tokenizer per model (its end tokens are the whole EOG set, so an end token is
allowed exactly where the grammar accepts); one matcher per generation.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import llguidance as lg
import numpy as np

from endmark.invalid import InvalidRequest

log = logging.getLogger("endmark.constraints")

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
    properties = schema.get("properties")
    out = {k: closed_objects(v, max_string) if k not in LITERAL_KEYS else v
           for k, v in schema.items() if k != "properties" or not isinstance(v, dict)}  # fmt: skip
    if isinstance(properties, dict):  # its keys are names, not keywords: walked once, here
        out["properties"] = {k: closed_objects(v, max_string) for k, v in properties.items()}
        out.setdefault("additionalProperties", False)
    bounded = {"maxLength", "enum", "const", "pattern", "format"} & schema.keys()
    if max_string is not None and schema.get("type") == "string" and not bounded:
        out["maxLength"] = max_string
    return out


LITERAL_KEYS = ("const", "enum", "default", "examples")  # values, not schemas


MAX_SCHEMA_DEPTH = 100  # JSON levels; llguidance's own parser stops at 128 with its wrapping
# llguidance's defaults (lexer fuel, Earley items per step, grammar size) bound each step to a
# few milliseconds; without verbose errors its messages carry no parser state.
LIMITS = lg.LLParserLimits(verbose_errors=False)


def json_depth(value: Any) -> int:
    """How deeply `value` nests (a scalar is 0), counted without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        items = list(item.values()) if isinstance(item, dict) else item
        if isinstance(items, list):
            deepest = max(deepest, depth + 1)
            stack += [(v, depth + 1) for v in items if isinstance(v, (dict, list))]
    return deepest


def _subschemas(schema: Any, pointer: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object in `schema` that may be a schema, with its JSON pointer (literal values
    under `enum`, `const`, ... are skipped)."""
    stack = [(schema, pointer)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, dict):
            yield at, item
            pairs = [(k, v) for k, v in item.items() if k not in LITERAL_KEYS]
        elif isinstance(item, list):
            pairs = [(str(i), v) for i, v in enumerate(item)]
        else:
            continue
        for key, value in pairs:
            escaped = str(key).replace("~", "~0").replace("/", "~1")
            stack.append((value, f"{at}/{escaped}"))


def _resolve(root: Any, ref: Any) -> Any:
    """The local target of a `$ref` (`#`, `#/$defs/a`), or None for any other."""
    if not isinstance(ref, str) or not ref.startswith("#") or (len(ref) > 1 and ref[1] != "/"):
        return None
    node = root
    for part in ref[2:].split("/") if len(ref) > 1 else ():
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _requirements(root: Any, node: dict[str, Any]) -> list[list[Any]]:
    """What `node` needs to have a value: each group is met when any one of its schemas is
    (a `$ref`'s target, each of `allOf`, one of `anyOf`, each required property, an item)."""
    groups: list[list[Any]] = []
    if "$ref" in node:
        groups.append([_resolve(root, node["$ref"])])
    if isinstance(node.get("allOf"), list):
        groups += [[s] for s in node["allOf"]]
    for key in ("anyOf", "oneOf"):
        if isinstance(node.get(key), list) and node[key]:
            groups.append(node[key])
    props, required = node.get("properties"), node.get("required")
    if isinstance(props, dict) and isinstance(required, list):
        groups += [[props[k]] for k in required if isinstance(k, str) and k in props]
    min_items = node.get("minItems")
    if isinstance(min_items, int) and min_items > 0 and isinstance(node.get("items"), dict):
        groups.append([node["items"]])
    return groups


def endless_ref(schema: Any) -> str | None:
    """The pointer of a subschema no finite value can satisfy because its `$ref`s lead back to
    it (`a` refers to `a`, or requires a property that does), or None. llguidance takes such a
    schema and then finds no token to write. What this cannot read (a remote `$ref`, a `true`
    schema) counts as satisfiable, so only a cycle is ever reported. Linear in the schema's
    size: each requirement is met at most once."""
    nodes = dict(_subschemas(schema))  # pointer -> schema
    at_of = {id(node): at for at, node in nodes.items()}
    left: dict[str, int] = {}  # the node's groups not met yet
    waiting: dict[str, list[tuple[str, int]]] = {}  # schema -> the (node, group) it would meet
    ready = []
    for at, node in nodes.items():
        groups = [g for g in _requirements(schema, node)
                  if all(isinstance(s, dict) and id(s) in at_of for s in g)]  # fmt: skip
        left[at] = len(groups)
        for i, group in enumerate(groups):
            for member in group:
                waiting.setdefault(at_of[id(member)], []).append((at, i))
        if not groups:
            ready.append(at)
    met: set[tuple[str, int]] = set()
    while ready:
        for at, i in waiting.get(ready.pop(), ()):
            if (at, i) not in met:
                met.add((at, i))
                left[at] -= 1
                if left[at] == 0:
                    ready.append(at)
    endless = [at for at, n in left.items() if n > 0 and "$ref" in nodes[at]]
    return min(endless, key=len) if endless else None


@dataclass(frozen=True)
class ConstraintSpec:
    """What a request asked for, and the field it came in (named in errors)."""

    kind: Kind
    source: str | dict[str, Any] | None
    field: str


class ConstraintFailure(InvalidRequest):
    """The matcher rejected a token or ran out of resources: never a clean stop. The request's
    constraint is at fault (a 400 where the answer has not started); the message names its
    field, never llguidance's state; `reason` is the part after the field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: the constraint failed: {reason}", field)
        self.reason = reason


def failure_reason(error: str) -> str:
    """llguidance's error in words for the client: its first line, never its state dump."""
    first = error.strip().splitlines()[0] if error.strip() else "unknown error"
    if "NoExtensionBias" in first:
        return "no token may come next (a rule that never ends, as in a $ref cycle?)"
    if "recursion limit" in first:
        return "it is nested too deeply to compile"
    if "fuel" in first or "Too many items" in first or "max is" in first or "limit" in first:
        return f"it is too complex to follow within the server's limits ({first})"
    return first


class Constraint:
    """One generation's matcher: what may come next, and whether the grammar is done."""

    def __init__(self, matcher: lg.LLMatcher, n_vocab: int, field: str = "grammar") -> None:
        self._matcher = matcher
        self._n_vocab = n_vocab
        self.field = field
        self._next_mask: np.ndarray | None = None  # computed ahead (off the decode path)
        self._check()

    def _check(self) -> None:
        if self._matcher.is_error():
            error = self._matcher.get_error()
            log.debug("%s: the constraint failed: %s", self.field, error)
            raise ConstraintFailure(self.field, failure_reason(error))

    def copy(self) -> Constraint:
        """An independent matcher in the same state (llguidance shares the compiled grammar)."""
        twin = Constraint(self._matcher.deep_copy(), self._n_vocab, self.field)
        twin._next_mask = self._next_mask
        return twin

    def prime(self) -> None:
        """Compute the next mask now (a first mask can take a while on a large grammar): it
        fails here, at prepare time, if the grammar allows nothing at all."""
        self._next_mask = self.mask()

    def mask(self) -> np.ndarray:
        """A boolean array over the vocabulary: True where the grammar allows the token."""
        if self._next_mask is not None:
            return self._next_mask
        bits = np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8)
        self._check()
        return np.unpackbits(bits, bitorder="little")[: self._n_vocab].astype(bool)

    def consume(self, token: int) -> None:
        self._next_mask = None
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
    """Turns request fields into matchers for one model; compile errors become 400s.

    Everything here is bounded: the schema's depth is checked before any recursion, and
    llguidance runs within `LIMITS`. Compiling still takes up to a few hundred milliseconds on
    a large grammar, so the server compiles on a worker thread (`Runtime.prepare_async`)."""

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
        error = lg.LLMatcher.validate_grammar(grammar, self.tokenizer, limits=LIMITS)
        if error:
            log.debug("%s: llguidance refused the grammar: %s", spec.field, error)
            raise InvalidRequest(f"{spec.field}: {failure_reason(error)}", spec.field)
        return grammar

    def constraint(self, spec: ConstraintSpec) -> Constraint:
        """A checked matcher for `spec`, its first mask computed: a grammar that allows no
        output at all is refused here (a 400), not found out on the decode path."""
        matcher = self.matcher(self.compile(spec), field=spec.field)
        try:
            matcher.prime()
        except ConstraintFailure as exc:
            message = f"{spec.field}: the grammar cannot even start: {exc.reason}"
            raise InvalidRequest(message, spec.field) from None
        return matcher

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
        depth = json_depth(schema)
        if depth > MAX_SCHEMA_DEPTH:
            raise ValueError(
                f"the schema is nested {depth} levels deep, more than the server compiles "
                f"({MAX_SCHEMA_DEPTH})"
            )
        json.dumps(schema)  # a TypeError here names an unserialisable value
        cycle = endless_ref(schema)
        if cycle is not None:
            raise ValueError(f"the schema has a $ref cycle that no value can end (at {cycle})")
        return lg.LLMatcher.grammar_from_json_schema(closed_objects(schema), defaults=JSON_OPTIONS)

    def matcher(self, grammar: str, written: str = "", field: str = "grammar") -> Constraint:
        """A matcher of `grammar`, past `written` if the model has already written that much
        (a lazy grammar). llguidance tokenizes it: a SentencePiece tokenizer would put its
        dummy-prefix space in front, which no grammar expects."""
        matcher = lg.LLMatcher(self.tokenizer, grammar, log_level=0, limits=LIMITS)
        constraint = Constraint(matcher, self.n_vocab, field)
        return self.resume(constraint, written) if written else constraint

    def resume(self, base: Constraint, written: str) -> Constraint:
        """A copy of `base` past `written` (a lazy grammar the model has started)."""
        matcher = base.copy()
        for token in self.tokenizer.tokenize_str(written) if written else ():
            matcher.consume(token)
        return matcher
