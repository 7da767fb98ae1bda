"""The Engine protocol on llama-cpp-python's low-level (ctypes) API.

This is the only module that calls into llama.cpp.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import llama_cpp as L
import numpy as np

from endmark.engine import DecodeError, SeqInput, Vocab
from endmark.engine.gguf_meta import read_int_array

log = logging.getLogger("endmark.engine")

ProgressFn = Callable[[float], None]

_ATTR_CONTROL = 1 << 3  # LLAMA_TOKEN_ATTR_CONTROL
_backend_lock = threading.Lock()
_backend_ready = False
_log_callback = None  # keep the ctypes callback alive for the process


def _init_backend() -> None:
    """Initialise llama.cpp once, and route its chatter to our logger at debug level."""
    global _backend_ready, _log_callback
    with _backend_lock:
        if _backend_ready:
            return

        @L.llama_log_callback
        def _on_log(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
            if log.isEnabledFor(logging.DEBUG) and text:
                log.debug("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())

        _log_callback = _on_log
        L.llama_log_set(_log_callback, ctypes.c_void_p(0))
        L.llama_backend_init()
        _backend_ready = True


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
    kv_budget_fraction: float = 0.25  # -c 0: at most this share of RAM for the KV cache


_GGML_TYPES = {
    "f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8,
    "iq4_nl": 20, "bf16": 30,
}  # fmt: skip
_BYTES_PER_VALUE = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 1.0625}
_FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}


def _flash_attention(opts: ContextOptions) -> int:
    """llama.cpp's switch; `auto` is llama.cpp's own choice, as in llama-server: on for this
    CPU build, where it decodes SmolLM2 10-15% faster. Its numerics suit checked guesses: a
    prompt fed in pieces gives the logits of the same prompt fed whole, so a checked guess
    takes what one-token decoding would. (Without it, a piece of 14 tokens then 1 gave logits
    up to 0.8 away from the 15 fed together.) What differs with it is a prefix written
    inside a long batch (32 tokens or more take a tiled kernel) and continued by a short one;
    up to 0.85 apart on SmolLM2, the rounding of another kernel, as without it."""
    return _FLASH_ATTN[opts.flash_attn]


def _physical_memory() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return float(8 * 2**30)


def _cpu_has_amx() -> bool:
    """Whether this CPU advertises AMX: llama.cpp's AMX kernels (an extra buffer type that
    repacks weights) crashed decoding SmolLM2 (Q4_1) on such a machine, a segfault in
    `ggml_backend_amx_mul_mat` for any batch of two tokens or more, so they are not used."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return any(line.startswith("flags") and "amx_tile" in line for line in f)
    except OSError:
        return False


def _none_if_invalid(token: int) -> int | None:
    return None if token < 0 else int(token)


class LlamaCppEngine:
    """One model and one context; sequences are identified by llama.cpp seq ids."""

    def __init__(
        self,
        model_path: str,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_seq_max: int = 1,
        n_batch: int = 512,
        progress: ProgressFn | None = None,
        options: ContextOptions | None = None,
    ) -> None:
        """`n_ctx` is the whole context, all sequences together; 0 takes it from the model:
        the training context for each sequence (for the shared cache when unified), within a
        share of the machine's memory."""
        opts = options or ContextOptions()
        _init_backend()
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"model file not found: {model_path}")
        self.model_path = model_path
        self._progress_cb = self._make_progress(progress)
        mparams = L.llama_model_default_params()
        mparams.n_gpu_layers = 0
        mparams.use_extra_bufts = not _cpu_has_amx()
        if self._progress_cb is not None:
            mparams.progress_callback = self._progress_cb
        self._model = L.llama_model_load_from_file(model_path.encode(), mparams)
        if not self._model:
            raise ValueError(f"llama.cpp could not load {model_path}: is it a GGUF model?")
        self._vocab_p = L.llama_model_get_vocab(self._model)
        self.n_ctx_train = int(L.llama_model_n_ctx_train(self._model))
        self._n_swa = int(L.llama_model_n_swa(self._model))  # 0: attention sees everything
        if n_ctx <= 0:
            n_ctx = self._context_from_model(n_seq_max, opts)
        threads = n_threads or max(1, os.cpu_count() or 1)
        cparams = L.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = min(opts.n_ubatch, n_batch)
        cparams.n_seq_max = n_seq_max
        cparams.n_threads = threads
        cparams.n_threads_batch = opts.n_threads_batch or threads
        cparams.kv_unified = opts.kv_unified
        cparams.type_k = _GGML_TYPES[opts.type_k]
        cparams.type_v = _GGML_TYPES[opts.type_v]
        cparams.flash_attn_type = _flash_attention(opts)
        cparams.swa_full = opts.swa_full
        cparams.no_perf = True
        self._ctx = L.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            L.llama_model_free(self._model)
            raise ValueError(
                f"llama.cpp could not create a context of {n_ctx} tokens with a "
                f"{opts.type_k}/{opts.type_v} cache and flash attention {opts.flash_attn} "
                "(a quantized V cache needs -fa on; or it is out of memory)"
            )
        self._mem = L.llama_get_memory(self._ctx)
        self.n_ctx = int(L.llama_n_ctx(self._ctx))
        self.n_seq_max = n_seq_max
        self.n_batch = n_batch
        self.n_threads = threads
        self._batch_cap = n_batch
        self._batch = L.llama_batch_init(self._batch_cap, 0, n_seq_max)
        self._piece_buf = ctypes.create_string_buffer(256)
        self.vocab = self._read_vocab()
        self.kv_unified = opts.kv_unified
        self._embedder: Embedder | None = None
        self._embedder_lock = threading.Lock()

    def _context_from_model(self, n_seq_max: int, opts: ContextOptions) -> int:
        per_token = self._kv_bytes_per_token(opts)
        seqs = 1 if opts.kv_unified else n_seq_max
        wanted = self.n_ctx_train * seqs
        budget = _physical_memory() * opts.kv_budget_fraction
        if per_token * wanted <= budget:
            return wanted
        fitted = max(256, int(budget / per_token) // seqs // 256 * 256) * seqs
        log.warning(
            "the model's context of %d tokens for %d slot(s) needs %.1f GiB of KV cache; "
            "using %d tokens per slot (set -c to choose)",
            self.n_ctx_train, seqs, per_token * wanted / 2**30, fitted // seqs,
        )  # fmt: skip
        return fitted

    def _kv_bytes_per_token(self, opts: ContextOptions) -> float:
        n_layer = int(L.llama_model_n_layer(self._model))
        n_head = max(1, int(L.llama_model_n_head(self._model)))
        n_head_kv = int(L.llama_model_n_head_kv(self._model))
        width = int(L.llama_model_n_embd(self._model)) // n_head * n_head_kv
        k = _BYTES_PER_VALUE.get(opts.type_k, 0.6)
        v = _BYTES_PER_VALUE.get(opts.type_v, 0.6)
        return n_layer * width * (k + v)

    @staticmethod
    def _make_progress(progress: ProgressFn | None):  # type: ignore[no-untyped-def]
        if progress is None:
            return None

        @L.llama_progress_callback
        def _cb(value: float, _user: ctypes.c_void_p) -> bool:
            progress(float(value))
            return True

        return _cb

    # -- vocabulary -------------------------------------------------------------------------

    def _piece(self, token: int, special: bool) -> bytes:
        n = L.llama_token_to_piece(self._vocab_p, token, self._piece_buf, 256, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self._vocab_p, token, buf, -n, 0, special)
            return buf.raw[:n]
        return self._piece_buf.raw[:n]

    def _read_vocab(self) -> Vocab:
        v = self._vocab_p
        n = int(L.llama_vocab_n_tokens(v))
        eog = frozenset(t for t in range(n) if L.llama_vocab_is_eog(v, t))
        control = frozenset(t for t in range(n) if L.llama_vocab_get_attr(v, t) & _ATTR_CONTROL)
        return Vocab(
            n_vocab=n,
            bos=_none_if_invalid(L.llama_vocab_bos(v)),
            eos=_none_if_invalid(L.llama_vocab_eos(v)),
            eot=_none_if_invalid(L.llama_vocab_eot(v)),
            eom=_none_if_invalid(self._eom(v)),
            add_bos=bool(L.llama_vocab_get_add_bos(v)),
            eog_flagged=eog,
            control=control,
            pieces=[self._piece(t, False) for t in range(n)],
            special_pieces=[self._piece(t, True) for t in range(n)],
            eos_token_ids=self._eos_token_ids(n),
        )

    @staticmethod
    def _eom(v: L.llama_vocab_p) -> int:
        fn = getattr(L, "llama_vocab_eom", None)
        return int(fn(v)) if fn is not None else -1

    def _eos_token_ids(self, n_vocab: int) -> tuple[int, ...]:
        ids = read_int_array(self.model_path, "tokenizer.ggml.eos_token_ids") or []
        return tuple(t for t in ids if 0 <= t < n_vocab)

    # -- text <-> tokens --------------------------------------------------------------------

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (L.llama_token * cap)()
        n = L.llama_tokenize(self._vocab_p, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            buf = (L.llama_token * cap)()
            n = L.llama_tokenize(
                self._vocab_p, data, len(data), buf, cap, add_special, parse_special
            )
        return list(buf[:n])

    def metadata(self, key: str) -> str | None:
        size = 1 << 16
        buf = ctypes.create_string_buffer(size)
        n = L.llama_model_meta_val_str(self._model, key.encode(), buf, size)
        if n < 0:
            return None
        if n >= size:
            buf = ctypes.create_string_buffer(n + 1)
            L.llama_model_meta_val_str(self._model, key.encode(), buf, n + 1)
        return buf.value.decode("utf-8", errors="replace")

    def lltokenizer(self, end_tokens: Sequence[int]):  # type: ignore[no-untyped-def]
        """llguidance's view of this vocabulary, with `end_tokens` as its end-of-sequence set."""
        from llguidance.llamacpp import lltokenizer_from_vocab

        with warnings.catch_warnings():  # it calls a deprecated alias once per token
            warnings.simplefilter("ignore", DeprecationWarning)
            return lltokenizer_from_vocab(
                self._vocab_p, self.vocab.n_vocab, eos_token=list(end_tokens)
            )

    def builtin_template_names(self) -> list[str]:
        """llama.cpp's own chat formats (llama-server's --chat-template names)."""
        n = L.llama_chat_builtin_templates(None, 0)
        names = (ctypes.c_char_p * n)()
        L.llama_chat_builtin_templates(names, n)
        return [name.decode() for name in names if name]

    def apply_builtin_template(
        self, template: str, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool
    ) -> str:
        """Format `messages` with llama.cpp's C++ formatter for `template` (a built-in name, or
        a Jinja source it recognises), as llama-server does without --jinja."""
        chat = (L.llama_chat_message * len(messages))()
        keep = []  # the C strings must outlive the call
        for item, m in zip(chat, messages, strict=True):
            role, content = m["role"].encode(), (m.get("content") or "").encode()
            keep += [role, content]
            item.role, item.content = role, content
        size = 4096 + sum(len(b) for b in keep) * 2
        buf = ctypes.create_string_buffer(size)
        n = L.llama_chat_apply_template(
            template.encode(), chat, len(messages), add_generation_prompt, buf, size
        )
        if n < 0:
            raise ValueError(f"llama.cpp has no built-in chat format for {template[:40]!r}")
        if n > size:
            buf = ctypes.create_string_buffer(n)
            n = L.llama_chat_apply_template(
                template.encode(), chat, len(messages), add_generation_prompt, buf, n
            )
        return buf.raw[:n].decode("utf-8", errors="replace")

    def model_facts(self) -> dict[str, Any]:
        """What the weights are, as model listings show it (Ollama's `details`, `model_info`)."""
        buf = ctypes.create_string_buffer(256)
        L.llama_model_desc(self._model, buf, len(buf))
        desc = buf.value.decode("utf-8", errors="replace")  # "llama ?B Q4_1", for example
        return {
            "architecture": self.metadata("general.architecture") or desc.split(" ")[0],
            "parameters": int(L.llama_model_n_params(self._model)),
            "bytes": int(L.llama_model_size(self._model)),
            "quantization": desc.rsplit(" ", 1)[-1],
            "context_length": self.n_ctx_train,
            "embedding_length": int(L.llama_model_n_embd(self._model)),
            "layers": int(L.llama_model_n_layer(self._model)),
            "heads": int(L.llama_model_n_head(self._model)),
        }

    def chat_template(self) -> str | None:
        raw = L.llama_model_chat_template(self._model, None)
        return raw.decode("utf-8", errors="replace") if raw else None

    # -- decoding ---------------------------------------------------------------------------

    def decode(self, inputs: Sequence[SeqInput]) -> dict[int, np.ndarray]:
        """One llama_decode over all inputs; returns rows of logits, views into llama.cpp's
        buffer where one row is asked for (the common case: no copy).

        The views stay valid until the next decode call: callers copy before they modify.
        """
        total = sum(len(i.tokens) for i in inputs)
        if total == 0:
            return {}
        if total > self._batch_cap:
            raise ValueError(f"batch of {total} tokens exceeds n_batch {self._batch_cap}")
        b = self._batch
        rows: dict[int, list[int]] = {}
        k = 0
        for item in inputs:
            first_out = len(item.tokens) - item.n_logits
            for j, tok in enumerate(item.tokens):
                b.token[k] = tok
                b.pos[k] = item.pos + j
                b.n_seq_id[k] = 1
                b.seq_id[k][0] = item.seq_id
                want = item.want_logits and j >= first_out
                b.logits[k] = want
                if want:
                    rows.setdefault(item.seq_id, []).append(k)
                k += 1
        b.n_tokens = k
        rc = L.llama_decode(self._ctx, b)
        if rc == 1:
            raise DecodeError("the context size has been exceeded: the shared cache is full")
        if rc != 0:
            raise DecodeError(f"llama_decode returned {rc} for a batch of {k} tokens")
        n_vocab = self.vocab.n_vocab
        out: dict[int, np.ndarray] = {}
        for seq_id, ks in rows.items():
            views = [
                np.ctypeslib.as_array(L.llama_get_logits_ith(self._ctx, k), shape=(1, n_vocab))
                for k in ks
            ]
            out[seq_id] = views[0] if len(views) == 1 else np.concatenate(views)
        return out

    def drop(self, seq_id: int, from_pos: int = 0) -> None:
        L.llama_memory_seq_rm(self._mem, seq_id, from_pos, -1)

    def can_continue(self, seq_id: int, n: int) -> bool:
        # As llama-server checks: the window behind position n must still be cached.
        if n <= 0:
            return True
        first = int(L.llama_memory_seq_pos_min(self._mem, seq_id))
        return 0 <= first <= max(0, n - self._n_swa)

    def copy(self, src: int, dst: int, up_to: int) -> None:
        # Per-slot caches can only be copied whole; the tail is then dropped.
        L.llama_memory_seq_rm(self._mem, dst, -1, -1)
        L.llama_memory_seq_cp(self._mem, src, dst, -1, -1)
        L.llama_memory_seq_rm(self._mem, dst, up_to, -1)

    def embedder(self, pooling: str = "auto") -> Embedder:
        """The embedding context on these weights, made on first use (most servers never
        embed, and it costs its own cache)."""
        with self._embedder_lock:
            if self._embedder is None:
                self._embedder = Embedder(self._model, self.n_threads, pooling)
            return self._embedder

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            if self._embedder is not None:
                self._embedder.close()
            L.llama_batch_free(self._batch)
            L.llama_free(self._ctx)
            L.llama_model_free(self._model)
            self._ctx = None


POOLING = {"none": 0, "mean": 1, "cls": 2, "last": 3}
EMBED_BATCH = 512  # tokens per embedding decode, and the longest input
EMBED_SEQS = 16  # inputs per embedding decode


class Embedder:
    """A second llama.cpp context on the same weights, with embeddings on: vectors for whole
    inputs (pooled as the GGUF says, or as asked; mean for a generative model, whose GGUF
    names no pooling), or one per token with `none`. Several inputs share each decode."""

    def __init__(self, model: Any, n_threads: int, pooling: str = "auto") -> None:
        self._model = model
        self._lock = threading.Lock()
        self._ctx = self._context(n_threads, POOLING.get(pooling, -1))
        if pooling == "auto" and L.llama_pooling_type(self._ctx) == POOLING["none"]:
            L.llama_free(self._ctx)
            self._ctx = self._context(n_threads, POOLING["mean"])
        self.pooling = next(k for k, v in POOLING.items() if v == L.llama_pooling_type(self._ctx))
        self.n_embd = int(L.llama_model_n_embd(model))
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
        cparams.flash_attn_type = _FLASH_ATTN["off"]
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
        return np.ctypeslib.as_array(ptr, shape=(self.n_embd,)).copy()

    def close(self) -> None:
        if self._ctx:
            L.llama_batch_free(self._batch)
            L.llama_free(self._ctx)
            self._ctx = None
