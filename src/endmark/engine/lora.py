"""LoRA adapters on llama.cpp: loaded once on the model, applied to the context by
configuration (`llama_set_adapters_lora`, which llama.cpp skips when nothing changed).

A zero scale is left out of llama.cpp's set, so an adapter at scale 0 decodes exactly as
the base model does.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import llama_cpp as L

from endmark.engine import AdapterScales

FACT_KEYS = {"task_name": "adapter.lora.task_name", "prompt_prefix": "adapter.lora.prompt_prefix"}


class LoraAdapters:
    """The adapter files of one model, in id order."""

    def __init__(self, model: Any, paths: Sequence[str]) -> None:
        """Raises ValueError naming the file that llama.cpp refuses (not a LoRA GGUF, or one
        made for another model); adapters are freed with the model."""
        self.paths = list(paths)
        self._ptrs = []
        for path in self.paths:
            ptr = L.llama_adapter_lora_init(model, path.encode())
            if not ptr:
                raise ValueError(
                    f"llama.cpp could not load the LoRA adapter {path}: is it a LoRA GGUF "
                    "made for this model?"
                )
            self._ptrs.append(ptr)
        self._applied: AdapterScales = ()

    def facts(self) -> list[dict[str, str]]:
        """Each adapter's `task_name` and `prompt_prefix` (empty where its GGUF has none)."""
        return [
            {name: self._meta(ptr, key) for name, key in FACT_KEYS.items()} for ptr in self._ptrs
        ]

    @staticmethod
    def _meta(ptr: Any, key: str) -> str:
        buf = ctypes.create_string_buffer(4096)
        n = L.llama_adapter_meta_val_str(ptr, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else ""

    def apply(self, ctx: Any, config: AdapterScales) -> None:
        """Set the context's adapters to `config` (ids of this list, with their scales)."""
        if config == self._applied:
            return
        n = len(self._ptrs)
        scales = [0.0] * n
        for adapter_id, scale in config:
            scales[adapter_id] = scale
        ptrs = (L.llama_adapter_lora_p_ctypes * n)(*self._ptrs)
        L.llama_set_adapters_lora(ctx, ptrs, n, (ctypes.c_float * n)(*scales))
        self._applied = config
