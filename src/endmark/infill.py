"""Fill-in-the-middle prompts (llama-server's `/infill`): the prompt tokens, built exactly as
llama.cpp's `format_prompt_infill` builds them. The rest is an ordinary completion.

The repo-level pattern (https://arxiv.org/pdf/2409.12186), for a vocabulary with FIM repo and
file-separator tokens:

    <FIM_REP>myproject\\n<FIM_SEP>{filename}\\n{text}...<FIM_SEP>filename\\n
    <FIM_PRE>{prefix}<FIM_SUF>{suffix}<FIM_MID>{prompt}    (the prompt follows the prefix)

Otherwise each extra chunk follows a plain "\\n\\n--- snippet ---\\n\\n". The prefix keeps its
last 3/4 of a batch, the suffix its first 1/4 (less the prompt), and the extra context the
last tokens that leave room for the batch and twice the server's `-n`. With `--spm-infill`
the suffix part comes before the prefix part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from endmark.engine import Vocab
from endmark.invalid import InvalidRequest

Tokenize = Callable[[str, bool, bool], list[int]]  # text, add_special, parse_special
Mixed = str | Sequence[str | int]  # llama-server's prefix and suffix: text, ids, or both
REPO_NAME = "myproject\n"  # llama.cpp's, not yet an input
FILE_NAME = "filename\n"  # the current file's name, likewise
CHUNK_PREFIX = "\n\n--- snippet ---\n\n"  # between extra chunks without a file separator


@dataclass(frozen=True)
class InfillParts:
    """What an `/infill` request gives: the code before and after the hole, extra files as
    `(filename, text)`, and a prompt that starts the middle."""

    prefix: Mixed = ""
    suffix: Mixed = ""
    extra: Sequence[tuple[str, str]] = field(default_factory=tuple)
    prompt: str = ""


@dataclass(frozen=True)
class InfillLimits:
    """llama-server's numbers the pattern fits into: its batch size, its `-n` (not the
    request's), and a slot's context."""

    n_batch: int
    n_predict: int
    n_ctx: int
    spm: bool = False  # --spm-infill: suffix, prefix, middle


def missing_fim_tokens(vocab: Vocab) -> list[str]:
    """The FIM tokens infill needs that this vocabulary lacks (llama-server's words)."""
    fim = vocab.fim
    named = (("prefix", fim.pre), ("suffix", fim.suf), ("middle", fim.mid))
    return [name for name, token in named if token is None]


def check_infill_model(vocab: Vocab) -> None:
    """A 400 for a model that cannot infill (it has no FIM prefix, suffix or middle token)."""
    missing = missing_fim_tokens(vocab)
    if missing:
        gone = ", ".join(missing)
        raise InvalidRequest(
            f"Infill is not supported by this model: its vocabulary has no FIM {gone} token "
            "(a code model such as Qwen2.5-Coder has them)",
            "input_prefix",
        )


def _mixed(value: Mixed, tokenize: Tokenize, n_vocab: int, param: str) -> list[int]:
    """llama.cpp's `tokenize_mixed`: texts tokenized (no special tokens), ids as they are."""
    if isinstance(value, str):
        return tokenize(value, False, False)
    out: list[int] = []
    for item in value:
        if isinstance(item, str):
            out += tokenize(item, False, False)
        elif 0 <= item < n_vocab:
            out.append(item)
        else:
            raise InvalidRequest(f"token id {item} is outside the vocabulary", param)
    return out


def infill_tokens(
    parts: InfillParts, vocab: Vocab, tokenize: Tokenize, limits: InfillLimits
) -> list[int]:
    """The prompt tokens of an infill, as llama.cpp's `format_prompt_infill` assembles them."""
    check_infill_model(vocab)
    fim = vocab.fim
    assert fim.pre is not None and fim.suf is not None and fim.mid is not None
    prefix = _mixed(parts.prefix, tokenize, vocab.n_vocab, "input_prefix")
    suffix = _mixed(parts.suffix, tokenize, vocab.n_vocab, "input_suffix")
    prompt = tokenize(parts.prompt, False, True)

    extra: list[int] = []
    if fim.rep is not None:
        extra += [fim.rep, *tokenize(REPO_NAME, False, False)]
    for filename, text in parts.extra:
        if fim.sep is not None:
            extra += [fim.sep, *tokenize(filename + "\n", False, False)]
        else:
            extra += tokenize(CHUNK_PREFIX, False, False)
        extra += tokenize(text, False, False)
    if fim.sep is not None:
        extra += [fim.sep, *tokenize(FILE_NAME, False, False)]

    n_batch = limits.n_batch
    n_prefix = min(len(prefix), 3 * (n_batch // 4))
    n_suffix = min(len(suffix), max(0, n_batch // 4 - (2 + len(prompt))))
    n_extra = min(max(0, limits.n_ctx - n_batch - 2 * limits.n_predict), len(extra))

    head = [fim.pre, *prefix[len(prefix) - n_prefix :], *prompt]
    tail = [fim.suf, *suffix[:n_suffix]]
    first, second = (tail, head) if limits.spm else (head, tail)
    bos = [vocab.bos] if vocab.add_bos and vocab.bos is not None else []
    kept = extra[len(extra) - n_extra :] if n_extra else []
    return [*kept, *bos, *first, *second, fim.mid]
