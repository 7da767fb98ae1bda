"""The tokens of a chat prompt: the template's markup may write control tokens, the text of
the messages never does (DESIGN.md, ending rule 8). A message holding `<|im_end|>` must not end
its turn, open a fake assistant turn, or start a new system turn.

A render is first tokenized as llama-server tokenizes it, special tokens parsed: that is right
for every conversation whose strings hold no control-token text, and costs nothing more. When
one does, each such text is hidden behind a private-use character that stands in for it
(`StandIns`), the conversation is rendered again, and that render is tokenized as llama.cpp's
tokenizer would (`tokenize_markup`): cut where the markup writes a control token (longest
token first), and each run of text between two of them tokenized whole, with the stand-ins
put back and special tokens not parsed. Tokenizing runs whole keeps the tokenizer's merges
across the joins of markup and text exactly as before; a template that trims, slices, tests
or writes a text as JSON does so with the stand-in in it, which is a single character that
`trim` keeps and JSON keeps (or escapes, which is put back as the text's own JSON form).
Two things of llama.cpp's are not repeated there: the spaces it strips beside Phi-3's control
tokens (a rule it keys on the model's name), and the order of two control tokens whose texts
overlap.

What a template decides from a control-token text in a message (Qwen3 splits thinking out of
content at `</think>`) it no longer decides: the text is text. Thinking in a history belongs in
`reasoning_content`, which templates write with their own markers. Tokens the vocabulary calls
user-defined (Qwen's `<think>`, `<tool_call>`) are how it spells those words: llama.cpp's
tokenizer uses them for any text, as it always did.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from endmark.engine import Vocab
from endmark.tools import ToolRequest

Tokenize = Callable[[str, bool, bool], list[int]]
# Supplementary Private Use Area-B: no text means anything by these characters.
FIRST_STAND_IN = 0x100000
LAST_STAND_IN = 0x10FFFD


def special_only_tokens(vocab: Vocab) -> frozenset[int]:
    """The tokens llama.cpp's tokenizer reads from text only when special tokens are parsed:
    control tokens and the unknown token, whose piece is their name only when special tokens
    are rendered. User-defined tokens are read from any text."""
    return frozenset(t for t in range(vocab.n_vocab) if vocab.special_pieces[t] != vocab.pieces[t])


def strings_in(value: Any) -> Iterator[str]:
    """Every string within `value` (mappings' keys included), depth first."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from strings_in(key)
            yield from strings_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings_in(item)


def texts_within(value: Any, texts: Collection[str]) -> set[str]:
    """Which of `texts` occur in some string within `value`."""
    found: set[str] = set()
    for s in strings_in(value):
        found.update(t for t in texts if t not in found and t in s)
    return found


def tools_as_data(tools: ToolRequest | None) -> list[dict[str, Any]]:
    return [t.as_openai() for t in tools.tools] if tools is not None else []


def _alternation(texts: Collection[str]) -> re.Pattern[str]:
    """Any of `texts`, the longest first where one begins another."""
    return re.compile("|".join(re.escape(t) for t in sorted(texts, key=len, reverse=True)))


def _json_escaped(text: str) -> str:
    """`text` inside a JSON string written with ASCII escapes (Python's default)."""
    return json.dumps(text)[1:-1]


@dataclass(frozen=True)
class StandIns:
    """One private-use character for each control-token text found in the messages."""

    chars: Mapping[str, str]  # the control token's text -> the character standing in for it

    @classmethod
    def choose(cls, texts: Collection[str], seen: str) -> StandIns:
        """Characters that `seen` (the render and every string of the request) holds neither
        as such nor JSON-escaped, so that each one in a render stands for its text only."""
        chars: dict[str, str] = {}
        code = FIRST_STAND_IN
        for text in sorted(texts):
            while chr(code) in seen or _json_escaped(chr(code)) in seen:
                code += 1
            if code > LAST_STAND_IN:
                raise ValueError("no private-use character is left to stand in for a text")
            chars[text] = chr(code)
            code += 1
        return cls(chars)

    def hide(self, value: Any) -> Any:
        """A copy of `value` with every string's control-token texts replaced."""
        pattern = _alternation(self.chars)

        def walk(v: Any) -> Any:
            if isinstance(v, str):
                return pattern.sub(lambda m: self.chars[m.group()], v)
            if isinstance(v, Mapping):
                return {walk(k): walk(item) for k, item in v.items()}
            if isinstance(v, list | tuple):
                return type(v)(walk(item) for item in v)
            return v

        return walk(value)

    def hide_tools(self, tools: ToolRequest | None) -> ToolRequest | None:
        if tools is None:
            return None
        hidden = tuple(
            replace(t, name=self.hide(t.name), description=self.hide(t.description),
                    parameters=self.hide(t.parameters))
            for t in tools.tools
        )  # fmt: skip
        return replace(tools, tools=hidden)

    def restorer(self) -> Callable[[str], str]:
        """Puts the texts back into a run of a render: a stand-in as its text, a stand-in that
        a template wrote as JSON with ASCII escapes as its text's JSON form."""
        back = {}
        for text, char in self.chars.items():
            back[char] = text
            back[_json_escaped(char)] = _json_escaped(text)
        pattern = _alternation(back)
        return lambda run: pattern.sub(lambda m: back[m.group()], run)


def tokenize_markup(
    text: str,
    markup: Mapping[str, int],
    tokenize: Tokenize,
    vocab: Vocab,
    add_special: bool,
    restore: Callable[[str], str] = lambda run: run,
) -> list[int]:
    """`text` as llama.cpp tokenizes it with special tokens parsed, but parsing only the
    `markup` texts (a control token's text -> its id): the text is cut at each of them, the
    longest first (llama.cpp's order), and each run between them is tokenized whole, after
    `restore`, without parsing special tokens. BOS (and EOS) where the model adds them."""
    pieces: list[str | int] = [text]
    for special in sorted(markup, key=len, reverse=True):
        cut: list[str | int] = []
        for piece in pieces:
            if isinstance(piece, int):
                cut.append(piece)
                continue
            for i, run in enumerate(piece.split(special)):
                if i:
                    cut.append(markup[special])
                if run:
                    cut.append(run)
        pieces = cut
    around = tokenize("", add_special, False)  # [BOS], [BOS, EOS], [] ...
    head = around[:1] if around[:1] == [vocab.bos] else []
    tokens = list(head)
    for piece in pieces:
        tokens.extend([piece] if isinstance(piece, int) else tokenize(restore(piece), False, False))
    return tokens + around[len(head) :]


@dataclass(frozen=True)
class ChatTokenizer:
    """Turns a chat turn into prompt tokens, the messages' text as text (or, with
    `parse_special`, as llama-server does: special tokens parsed in the whole render)."""

    tokenize: Tokenize
    vocab: Vocab
    bos_text: str = ""  # a render that starts with it gets no second BOS
    parse_special: bool = False
    special_only: frozenset[int] = frozenset()

    @classmethod
    def of(
        cls, tokenize: Tokenize, vocab: Vocab, bos_text: str = "", parse_special: bool = False
    ) -> ChatTokenizer:
        return cls(tokenize, vocab, bos_text, parse_special, special_only_tokens(vocab))

    def __call__(
        self,
        render: Callable[[Sequence[dict[str, Any]], ToolRequest | None], str],
        messages: Sequence[dict[str, Any]],
        tools: ToolRequest | None,
    ) -> list[int]:
        """The render of `messages` and `tools` (by the template, the same way for both of its
        calls) tokenized with special tokens parsed, if no string of the messages or tools
        holds the text of a control token it contains; else the turn rendered again with those
        texts hidden, and tokenized with them as text."""
        text = render(messages, tools)
        tokens = self.tokenize(text, self._adds_bos(text), True)
        if self.parse_special:
            return tokens
        request = (list(messages), tools_as_data(tools))
        hidden = texts_within(request, self._markup(tokens))
        if not hidden:
            return tokens
        seen = "\0".join([text, *strings_in(request)])
        while True:  # once, unless hiding the texts made the template write other strings
            stand_ins = StandIns.choose(hidden, seen)
            marked = render(stand_ins.hide(list(messages)), stand_ins.hide_tools(tools))
            markup = self._markup(self.tokenize(marked, False, True))
            more = texts_within(request, markup) - hidden
            if not more:
                break
            hidden |= more
        add_special = self._adds_bos(marked)
        restore = stand_ins.restorer()
        return tokenize_markup(marked, markup, self.tokenize, self.vocab, add_special, restore)

    def _markup(self, tokens: list[int]) -> dict[str, int]:
        """The texts of the special-only tokens among `tokens` (llama.cpp's tokenizer makes
        one text into one id only), each with its id."""
        texts = {self._text(t): t for t in set(tokens) & self.special_only}
        texts.pop("", None)
        return texts

    def _adds_bos(self, text: str) -> bool:
        """A template that writes the BOS text itself must not get a second BOS."""
        return not (self.bos_text and text.startswith(self.bos_text))

    def _text(self, token: int) -> str:
        return self.vocab.special_pieces[token].decode("utf-8", errors="replace")
