"""Embeddings on llama.cpp: a second context on the engine's weights, with embeddings on."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import llama_cpp as L
import numpy as np

from endmark.engine import DecodeError
from endmark.engine.options import FLASH_ATTN

POOLING = {"none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}
RANK_HEAD = ("cls.weight", "cls.output.weight")  # llama.cpp's classification head tensors
EMBED_BATCH = 512  # tokens per embedding decode, and the longest input
EMBED_SEQS = 16  # inputs per embedding decode


class LlamaCppEmbedder:
    """A second llama.cpp context on the same weights, with embeddings on: vectors for whole
    inputs (pooled as the GGUF says, or as asked; mean for a generative model, whose GGUF
    names no pooling), one per token with `none`, or with `rank` the outputs of the model's
    classification head (a reranker's score first). Several inputs share each decode."""

    def __init__(
        self, model: Any, n_threads: int, pooling: str = "auto", rank_head: bool = False
    ) -> None:
        self._model = model
        self.rank_head = rank_head
        self._lock = threading.Lock()
        self._ctx = self._context(n_threads, POOLING.get(pooling, -1))
        if pooling == "auto" and L.llama_pooling_type(self._ctx) == POOLING["none"]:
            L.llama_free(self._ctx)
            self._ctx = self._context(n_threads, POOLING["mean"])
        self.pooling = next(k for k, v in POOLING.items() if v == L.llama_pooling_type(self._ctx))
        self.n_embd = int(L.llama_model_n_embd(model))
        # what llama.cpp gives per input: with rank pooling, one value per head output
        self._width = int(L.llama_model_n_cls_out(model)) if self.pooling == "rank" else self.n_embd
        self._mem = L.llama_get_memory(self._ctx)
        self._batch = L.llama_batch_init(EMBED_BATCH, 0, EMBED_SEQS)

    def _context(self, n_threads: int, pooling: int) -> Any:
        cparams = L.llama_context_default_params()
        cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = EMBED_BATCH
        cparams.n_seq_max = EMBED_SEQS
        cparams.kv_unified = True  # one input may use the whole batch
        cparams.n_threads = cparams.n_threads_batch = n_threads
        cparams.embeddings = True
        cparams.pooling_type = pooling
        cparams.flash_attn_type = FLASH_ATTN["off"]
        cparams.no_perf = True
        ctx = L.llama_init_from_model(self._model, cparams)
        if not ctx:
            raise ValueError("llama.cpp could not create an embedding context")
        return ctx

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """One array per input: a vector, or (with `none`) a row per token. Raises ValueError
        for an empty input or one over EMBED_BATCH tokens."""
        for tokens in inputs:
            if not 0 < len(tokens) <= EMBED_BATCH:
                raise ValueError(
                    f"an input has {len(tokens)} tokens; it must have 1 to {EMBED_BATCH}"
                )
        out: list[np.ndarray] = []
        with self._lock:
            batch: list[Sequence[int]] = []
            for tokens in inputs:
                full = sum(map(len, batch)) + len(tokens) > EMBED_BATCH
                if batch and (full or len(batch) == EMBED_SEQS):
                    out += self._decode(batch)
                    batch = []
                batch.append(tokens)
            if batch:
                out += self._decode(batch)
        return out

    def _decode(self, inputs: Sequence[Sequence[int]]) -> list[np.ndarray]:
        b = self._batch
        k = 0
        for seq, tokens in enumerate(inputs):
            for pos, token in enumerate(tokens):
                b.token[k], b.pos[k], b.n_seq_id[k], b.logits[k] = token, pos, 1, True
                b.seq_id[k][0] = seq
                k += 1
        b.n_tokens = k
        try:
            rc = L.llama_decode(self._ctx, b)
            if rc != 0:
                raise DecodeError(f"llama_decode returned {rc} for {len(inputs)} inputs")
            out = []
            row = 0
            for seq, tokens in enumerate(inputs):
                if self.pooling == "none":
                    rows = [self._row(L.llama_get_embeddings_ith(self._ctx, row + i))
                            for i in range(len(tokens))]  # fmt: skip
                    out.append(np.stack(rows))
                else:
                    out.append(self._row(L.llama_get_embeddings_seq(self._ctx, seq)))
                row += len(tokens)
            return out
        finally:
            L.llama_memory_clear(self._mem, True)

    def _row(self, ptr: Any) -> np.ndarray:
        return np.ctypeslib.as_array(ptr, shape=(self._width,)).copy()

    def close(self) -> None:
        if self._ctx:
            L.llama_batch_free(self._batch)
            L.llama_free(self._ctx)
            self._ctx = None
