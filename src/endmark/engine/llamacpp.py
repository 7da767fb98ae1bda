"""The Engine protocol on llama-cpp-python's low-level (ctypes) API: the model, its
vocabulary and templates, and the context that decodes every sequence's batch.

With `backend`, `options` and `embedder` beside it, the only code that calls into llama.cpp.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import llama_cpp as L
import numpy as np

from endmark.engine import (
    AdapterScales,
    ChainSettings,
    DecodeError,
    FimTokens,
    SeqInput,
    Vocab,
)
from endmark.engine.backend import (
    ProgressFn,
    RepackOverrides,
    cpu_has_amx,
    init_backend,
    progress_callback,
)
from endmark.engine.embedder import RANK_HEAD, LlamaCppEmbedder
from endmark.engine.gguf_meta import read_int_array, read_tensor_names, read_tensors
from endmark.engine.lora import LoraAdapters
from endmark.engine.options import ContextOptions, context_from_model, context_params
from endmark.engine.sampler_chain import SamplerChain
from endmark.engine.seqstate import (
    load_state_bytes,
    load_state_file,
    model_identity,
    save_state_file,
    state_bytes,
)

__all__ = ["ContextOptions", "LlamaCppEngine"]  # ContextOptions: where loading imports it

_ATTR_CONTROL = 1 << 3  # LLAMA_TOKEN_ATTR_CONTROL
_ATTR_HIDDEN = 1 << 0 | _ATTR_CONTROL  # and UNKNOWN: no text without `special`


def _address_function(name: str) -> Any:
    """A llama.cpp function that returns a pointer, bound to give the bare address: no
    pointer object made and read again per call (`_rows`, once a token)."""
    fn = L.llama_cpp._lib[name]  # a binding of its own: llama_cpp's keeps its types
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int32]
    fn.restype = ctypes.c_void_p
    return fn


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
        lora: Sequence[str] = (),
    ) -> None:
        """`n_ctx` is the whole context, all sequences together; 0 takes it from the model:
        the training context for each sequence (for the shared cache when unified), within a
        share of the machine's memory. `lora`: adapter files, loaded on the model (ids in
        this order) and applied by `set_adapters`."""
        opts = options or ContextOptions()
        init_backend()
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"model file not found: {model_path}")
        self.model_path = model_path
        self._progress_cb = progress_callback(progress)
        mparams = L.llama_model_default_params()
        mparams.n_gpu_layers = 0
        mparams.use_extra_bufts = opts.repack and not cpu_has_amx()
        self._repack: RepackOverrides | None = None  # llama.cpp keeps the pointer
        if opts.repack and cpu_has_amx():
            self._repack = RepackOverrides.of(read_tensors(model_path))
            if self._repack is not None:
                mparams.tensor_buft_overrides = self._repack.as_param()
                # read, not mapped: a mapped file's pages of the repacked weights would stay
                # resident beside their repacked copy (+0.6 GiB at 1.5B Q4_K_M)
                mparams.load_mode = L.LLAMA_LOAD_MODE_NONE
        if self._progress_cb is not None:
            mparams.progress_callback = self._progress_cb
        self._model = L.llama_model_load_from_file(model_path.encode(), mparams)
        if not self._model:
            raise ValueError(f"llama.cpp could not load {model_path}: is it a GGUF model?")
        try:
            self._lora = LoraAdapters(self._model, lora)
        except ValueError:
            L.llama_model_free(self._model)
            raise
        self._vocab_p = L.llama_model_get_vocab(self._model)
        self.n_ctx_train = int(L.llama_model_n_ctx_train(self._model))
        self._n_swa = int(L.llama_model_n_swa(self._model))  # 0: attention sees everything
        if n_ctx <= 0:
            n_ctx = context_from_model(self._model, n_seq_max, opts)
        threads = n_threads or max(1, os.cpu_count() or 1)
        cparams = context_params(opts, n_ctx, n_batch, n_seq_max, threads)
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
        self.compute_cpu_seconds = 0.0
        self._views: dict[tuple[int, int], np.ndarray] = {}  # logits rows (`_rows`)
        self._batch = L.llama_batch_init(self._batch_cap, 0, n_seq_max)
        for k in range(self._batch_cap):  # one sequence per token, always
            self._batch.n_seq_id[k] = 1
            self._batch.seq_id[k][0] = 0
        self._seq_at = [0] * self._batch_cap  # each batch entry's sequence, as last written
        self._logits_at = _address_function("llama_get_logits_ith")
        self._piece_buf = ctypes.create_string_buffer(256)
        self.vocab = self._read_vocab()
        self._row_bytes = self.vocab.n_vocab * ctypes.sizeof(ctypes.c_float)
        self.kv_unified = opts.kv_unified
        self._opts = opts
        self._embedder: LlamaCppEmbedder | None = None
        self._embedder_lock = threading.Lock()

    @property
    def repack_patterns(self) -> list[str]:
        """The weights endmark named for llama.cpp's repack buffer (empty where llama.cpp
        chooses alone, or with repacking off)."""
        return self._repack.patterns if self._repack is not None else []

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
        attrs = [L.llama_vocab_get_attr(v, t) for t in range(n)]
        control = frozenset(t for t in range(n) if attrs[t] & _ATTR_CONTROL)
        pieces = [self._piece(t, False) for t in range(n)]
        # `special` changes only what control and unknown tokens render (as nothing without
        # it): the other pieces are the same, and not asked for twice (a cold load's time)
        special = [self._piece(t, True) if attrs[t] & _ATTR_HIDDEN else p
                   for t, p in enumerate(pieces)]  # fmt: skip
        return Vocab(
            n_vocab=n,
            bos=_none_if_invalid(L.llama_vocab_bos(v)),
            eos=_none_if_invalid(L.llama_vocab_eos(v)),
            eot=_none_if_invalid(L.llama_vocab_eot(v)),
            eom=_none_if_invalid(self._eom(v)),
            add_bos=bool(L.llama_vocab_get_add_bos(v)),
            eog_flagged=eog,
            control=control,
            pieces=pieces,
            special_pieces=special,
            eos_token_ids=self._eos_token_ids(n),
            fim=FimTokens(
                pre=_none_if_invalid(L.llama_vocab_fim_pre(v)),
                suf=_none_if_invalid(L.llama_vocab_fim_suf(v)),
                mid=_none_if_invalid(L.llama_vocab_fim_mid(v)),
                pad=_none_if_invalid(L.llama_vocab_fim_pad(v)),
                rep=_none_if_invalid(L.llama_vocab_fim_rep(v)),
                sep=_none_if_invalid(L.llama_vocab_fim_sep(v)),
            ),
            sep=_none_if_invalid(L.llama_vocab_sep(v)),
            add_eos=bool(L.llama_vocab_get_add_eos(v)),
            add_sep=bool(L.llama_vocab_get_add_sep(v)),
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
        buffer (no copy, for one row or a checked guess's several).

        The views stay valid until the next decode call: callers copy before they modify.
        """
        total = sum(len(i.tokens) for i in inputs)
        if total == 0:
            return {}
        if total > self._batch_cap:
            raise ValueError(f"batch of {total} tokens exceeds n_batch {self._batch_cap}")
        b = self._batch
        seq_at = self._seq_at
        rows: list[tuple[int, int, int]] = []  # a sequence's first row and how many
        k = 0
        for item in inputs:
            seq_id, pos = item.seq_id, item.pos
            first_out = k + len(item.tokens) - item.n_logits if item.want_logits else 1 << 30
            for tok in item.tokens:
                b.token[k] = tok
                b.pos[k] = pos
                if seq_at[k] != seq_id:  # n_seq_id is 1 everywhere (`__init__`)
                    b.seq_id[k][0] = seq_at[k] = seq_id
                b.logits[k] = k >= first_out
                pos += 1
                k += 1
            if item.want_logits:
                rows.append((seq_id, first_out, item.n_logits))
        b.n_tokens = k
        cpu = time.thread_time()
        rc = L.llama_decode(self._ctx, b)
        self.compute_cpu_seconds += time.thread_time() - cpu
        if rc == 1:
            raise DecodeError("the context size has been exceeded: the shared cache is full")
        if rc != 0:
            raise DecodeError(f"llama_decode returned {rc} for a batch of {k} tokens")
        return {seq_id: self._rows(first, n) for seq_id, first, n in rows}

    def _rows(self, k: int, n: int) -> np.ndarray:
        """The logits of batch entries `k` to `k + n - 1`: one view of llama.cpp's output
        buffer where they lie in a row there (always, but it is checked), made once per
        address and count (the buffer moves only when llama.cpp grows it; a view of an
        address it hands out again is a view of its rows again); else a copy."""
        first = self._logits_at(self._ctx, k)
        if n == 1:
            return self._view(first, 1)
        addresses = [first, *(self._logits_at(self._ctx, k + i) for i in range(1, n))]
        size = self._row_bytes
        if any(a != first + i * size for i, a in enumerate(addresses)):
            return np.concatenate([self._view(a, 1) for a in addresses])
        return self._view(first, n)

    def _view(self, address: int, n: int) -> np.ndarray:
        key = (address, n)
        view = self._views.get(key)
        if view is None:
            if len(self._views) >= 4096:  # a bound, never reached in practice
                self._views.clear()
            pointer = ctypes.cast(address, ctypes.POINTER(ctypes.c_float))
            shape = (n, self.vocab.n_vocab)
            view = self._views[key] = np.ctypeslib.as_array(pointer, shape=shape)
        return view

    def sampler_chain(self, settings: ChainSettings) -> SamplerChain:
        """llama.cpp's own chain for one request's draws (`engine.sampler_chain`)."""
        return SamplerChain(self.vocab.n_vocab, settings)

    def set_adapters(self, config: AdapterScales) -> None:
        """Decode from now on under this LoRA configuration (the context's, for every
        sequence: llama.cpp re-plans its graph on a change)."""
        self._lora.apply(self._ctx, config)

    def adapter_facts(self) -> list[dict[str, str]]:
        """Each loaded adapter's `task_name` and `prompt_prefix`."""
        return self._lora.facts()

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

    # -- sequence states (the prompt cache, slot save and restore) -------------------------

    def state_identity(self) -> dict[str, str]:
        """Everything that shapes a sequence's state besides its tokens: the weights, the
        cache types, flash attention (V's layout) and the SWA cache's size."""
        o = self._opts
        return {**model_identity(self.model_path), "type_k": o.type_k, "type_v": o.type_v,
                "flash_attn": o.flash_attn, "swa_full": str(o.swa_full)}  # fmt: skip

    def state_bytes(self, seq_id: int) -> bytearray:
        return state_bytes(self._ctx, seq_id)

    def load_state_bytes(self, seq_id: int, data: Any, offset: int = 0, size: int = -1) -> bool:
        L.llama_memory_seq_rm(self._mem, seq_id, -1, -1)
        ok = load_state_bytes(self._ctx, seq_id, data, offset, size)
        if not ok:
            L.llama_memory_seq_rm(self._mem, seq_id, -1, -1)
        return ok

    def save_state_file(self, seq_id: int, path: str, tokens: list[int]) -> int:
        return save_state_file(self._ctx, seq_id, path, tokens)

    def load_state_file(self, seq_id: int, path: str) -> tuple[list[int], int]:
        L.llama_memory_seq_rm(self._mem, seq_id, -1, -1)
        tokens, n_read = load_state_file(self._ctx, seq_id, path, self.n_ctx)
        if not n_read:
            L.llama_memory_seq_rm(self._mem, seq_id, -1, -1)
        return tokens, n_read

    def can_shift(self) -> bool:
        return bool(L.llama_memory_can_shift(self._mem))

    def move(self, seq_id: int, src: int, n: int, dst: int) -> None:
        # as llama-server's cache reuse and context shift: remove the gap, shift what follows
        L.llama_memory_seq_rm(self._mem, seq_id, dst, src)
        L.llama_memory_seq_add(self._mem, seq_id, src, src + n, dst - src)

    def embedder(self, pooling: str = "auto") -> LlamaCppEmbedder:
        """The embedding context on these weights, made on first use (most servers never
        embed, and it costs its own cache)."""
        with self._embedder_lock:
            if self._embedder is None:
                head = any(name in RANK_HEAD for name in read_tensor_names(self.model_path))
                self._embedder = LlamaCppEmbedder(self._model, self.n_threads, pooling, head)
            return self._embedder

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            if self._embedder is not None:
                self._embedder.close()
            self._views.clear()
            L.llama_batch_free(self._batch)
            L.llama_free(self._ctx)
            L.llama_model_free(self._model)
            self._ctx = None
