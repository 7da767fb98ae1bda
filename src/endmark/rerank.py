"""Reranking (llama-server's `/rerank`): one prompt per document, scored by the model's rank
head through the embedding context with pooling `rank`.

The prompt is built as llama.cpp's `format_prompt_rerank` builds it: the model's rerank
template (`tokenizer.chat_template.rerank`, with `{query}` and `{document}`) when it has one,
else `[bos] query [eos] [sep] document [eos]`, each special token where the vocabulary adds
it (eos falls back to sep).
"""

from __future__ import annotations

from collections.abc import Callable

from endmark.engine import Vocab

Tokenize = Callable[[str, bool, bool], list[int]]  # text, add_special, parse_special
RERANK_TEMPLATE_KEY = "tokenizer.chat_template.rerank"


def rerank_tokens(
    query: str, document: str, vocab: Vocab, tokenize: Tokenize, template: str | None = None
) -> list[int]:
    """The prompt one document is scored with."""
    if template is not None:
        text = template.replace("{query}", query).replace("{document}", document)
        return tokenize(text, False, True)
    eos = vocab.eos if vocab.eos is not None else vocab.sep
    out: list[int] = []
    if vocab.add_bos and vocab.bos is not None:
        out.append(vocab.bos)
    out += tokenize(query, False, False)
    if vocab.add_eos and eos is not None:
        out.append(eos)
    if vocab.add_sep and vocab.sep is not None:
        out.append(vocab.sep)
    out += tokenize(document, False, False)
    if vocab.add_eos and eos is not None:
        out.append(eos)
    return out


def reranking_problem(rank_head: bool, pooling: str) -> tuple[int, str] | None:
    """Why this server cannot rerank (an HTTP status and a message), or None when it can."""
    if not rank_head:
        return 400, (
            "this model cannot rerank: it has no rank head (no cls or cls.output tensor); "
            "serve a reranker model (such as bge-reranker-v2-m3) with --rerank"
        )
    if pooling != "rank":
        return 501, (
            f"This server does not support reranking (its embeddings pool by {pooling}). "
            "Start it with `--reranking`"
        )
    return None
