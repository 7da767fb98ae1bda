"""The llama.cpp context's knobs (llama-server's flags), and how big a context fits."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import llama_cpp as L

log = logging.getLogger("endmark.engine")


@dataclass(frozen=True)
class ContextOptions:
    """llama.cpp context knobs beyond size and threads (llama-server's flag names)."""

    n_ubatch: int = 512
    n_threads_batch: int | None = None
    kv_unified: bool = False  # False: one cache per sequence, so no slot's numerics depend
    # on another's; True: sequences share one cache of n_ctx cells, as llama-server's slots do
    type_k: str = "f16"
    type_v: str = "f16"
    flash_attn: str = "auto"
    swa_full: bool = False
    repack: bool = True  # llama.cpp's repacked weights for its batched kernels (`-nr`: off)
    kv_budget_fraction: float = 0.25  # -c 0: at most this share of RAM for the KV cache


GGML_TYPES = {
    "f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8,
    "iq4_nl": 20, "bf16": 30,
}  # fmt: skip
BYTES_PER_VALUE = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 1.0625}
FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}


def flash_attention(opts: ContextOptions) -> int:
    """llama.cpp's switch; `auto` is llama.cpp's own choice, as in llama-server: on for this
    CPU build, where it processes prompts 10-15% faster but decodes faster only below ~150
    cached tokens (its kernel takes each query row alone: past that, and for a checked
    guess, plain attention wins; `benchmarks/flash_attention.py`). Its numerics suit
    checked guesses: a prompt fed in pieces gives the logits of the same prompt fed whole,
    so a checked guess takes what one-token decoding would. (Without it, a piece of 14
    tokens then 1 gave logits up to 0.8 away from the 15 fed together.) What differs with
    it is a prefix written inside a long batch (32 tokens or more take a tiled kernel) and
    continued by a short one; up to 0.85 apart on SmolLM2, the rounding of another kernel,
    as without it."""
    return FLASH_ATTN[opts.flash_attn]


def context_params(
    opts: ContextOptions, n_ctx: int, n_batch: int, n_seq_max: int, threads: int
) -> Any:
    """llama.cpp's context parameters for these options."""
    cparams = L.llama_context_default_params()
    cparams.n_ctx = n_ctx
    cparams.n_batch = n_batch
    cparams.n_ubatch = min(opts.n_ubatch, n_batch)
    cparams.n_seq_max = n_seq_max
    cparams.n_threads = threads
    cparams.n_threads_batch = opts.n_threads_batch or threads
    cparams.kv_unified = opts.kv_unified
    cparams.type_k = GGML_TYPES[opts.type_k]
    cparams.type_v = GGML_TYPES[opts.type_v]
    cparams.flash_attn_type = flash_attention(opts)
    cparams.swa_full = opts.swa_full
    cparams.no_perf = True
    return cparams


def physical_memory() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return float(8 * 2**30)


def context_from_model(model: Any, n_seq_max: int, opts: ContextOptions) -> int:
    """`-c 0`: the training context for each sequence (for the shared cache when unified),
    within a share of the machine's memory."""
    n_ctx_train = int(L.llama_model_n_ctx_train(model))
    per_token = kv_bytes_per_token(model, opts)
    seqs = 1 if opts.kv_unified else n_seq_max
    wanted = n_ctx_train * seqs
    budget = physical_memory() * opts.kv_budget_fraction
    if per_token * wanted <= budget:
        return wanted
    fitted = max(256, int(budget / per_token) // seqs // 256 * 256) * seqs
    log.warning(
        "the model's context of %d tokens for %d slot(s) needs %.1f GiB of KV cache; "
        "using %d tokens per slot (set -c to choose)",
        n_ctx_train, seqs, per_token * wanted / 2**30, fitted // seqs,
    )  # fmt: skip
    return fitted


def kv_bytes_per_token(model: Any, opts: ContextOptions) -> float:
    n_layer = int(L.llama_model_n_layer(model))
    n_head = max(1, int(L.llama_model_n_head(model)))
    n_head_kv = int(L.llama_model_n_head_kv(model))
    width = int(L.llama_model_n_embd(model)) // n_head * n_head_kv
    k = BYTES_PER_VALUE.get(opts.type_k, 0.6)
    v = BYTES_PER_VALUE.get(opts.type_v, 0.6)
    return n_layer * width * (k + v)
