"""Facts from a GGUF file's header that llama.cpp's model API does not give: arrays such as
`tokenizer.ggml.eos_token_ids`, and each tensor's shape and type.

ggml's own GGUF reader parses the header (a model's ~100,000 vocabulary strings in ~10 ms,
where a walk in Python took ~30 ms of every load; the `gguf` package takes seconds), with
`no_alloc`: tensor metadata only, never the weights.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from endmark.engine.ggml_api import GgufInitParams, ggml

# gguf_type -> the ctypes type of an array's elements (integers only)
_INT_ELEMENTS: dict[int, Any] = {
    0: ctypes.c_uint8, 1: ctypes.c_int8, 2: ctypes.c_uint16, 3: ctypes.c_int16,
    4: ctypes.c_uint32, 5: ctypes.c_int32, 10: ctypes.c_uint64, 11: ctypes.c_int64,
}  # fmt: skip
_ARRAY = 9


@contextmanager
def _header(path: str | Path) -> Iterator[tuple[Any, int, int]]:
    """(libggml, the GGUF context, the ggml context of tensor metadata); both 0 if the file
    is not GGUF."""
    g = ggml()
    tensors = ctypes.c_void_p()
    ctx = g.gguf_init_from_file(str(path).encode(), GgufInitParams(True, ctypes.pointer(tensors)))
    try:
        yield g, ctx or 0, tensors.value or 0
    finally:
        if ctx:
            g.gguf_free(ctx)
        if tensors.value:
            g.ggml_free(tensors)


def read_int_array(path: str | Path, key: str) -> list[int] | None:
    """The integer array stored under `key`, or None if the file has no such key."""
    with _header(path) as (g, ctx, _):
        if not ctx:
            return None
        k = g.gguf_find_key(ctx, key.encode())
        if k < 0 or g.gguf_get_kv_type(ctx, k) != _ARRAY:
            return None
        element = _INT_ELEMENTS.get(g.gguf_get_arr_type(ctx, k))
        if element is None:
            return None
        n = g.gguf_get_arr_n(ctx, k)
        return list((element * n).from_address(g.gguf_get_arr_data(ctx, k))) if n else []


@dataclass(frozen=True)
class TensorInfo:
    name: str
    n_dims: int
    n_rows: int  # ggml's ne[1] for a matrix: its output size
    ggml_type: int


def read_tensors(path: str | Path) -> list[TensorInfo]:
    """The tensors a GGUF file holds (llama.cpp's API does not say which optional tensors a
    model has, such as a reranker's `cls` head, nor how each weight is quantized)."""
    with _header(path) as (g, ctx, tensors):
        if not ctx:
            return []
        out = []
        for i in range(g.gguf_get_n_tensors(ctx)):
            name = g.gguf_get_tensor_name(ctx, i)
            t = g.ggml_get_tensor(tensors, name)
            out.append(TensorInfo(name.decode("utf-8", errors="replace"), g.ggml_n_dims(t),
                                  g.ggml_nrows(t), g.gguf_get_tensor_type(ctx, i)))  # fmt: skip
        return out


def read_tensor_names(path: str | Path) -> list[str]:
    return [t.name for t in read_tensors(path)]
