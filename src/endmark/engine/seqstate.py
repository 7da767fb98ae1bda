"""A sequence's KV state out of and back into a llama.cpp context (llama.cpp's sequence state
API): bytes for the prompt cache, files for llama-server's slot save and restore."""

from __future__ import annotations

import ctypes
import os
from typing import Any

import llama_cpp as L

_TOKEN_NULL = -1  # llama-server's packed token list starts with LLAMA_TOKEN_NULL, version, n


def state_bytes(ctx: Any, seq_id: int) -> bytearray:
    """The sequence's whole state (its cells' K and V, positions), copied out once."""
    size = int(L.llama_state_seq_get_size(ctx, seq_id))
    data = bytearray(size)
    if size:
        view = (ctypes.c_uint8 * size).from_buffer(data)
        written = int(L.llama_state_seq_get_data(ctx, view, size, seq_id))
        del view
        del data[written:]
    return data


def load_state_bytes(ctx: Any, seq_id: int, data: Any, offset: int = 0, size: int = -1) -> bool:
    """Put a state read from `data` (a writable buffer: bytearray, private mmap) into an
    empty sequence, without copying it first; False if llama.cpp refused it (no room, or a
    state of another shape)."""
    size = len(data) - offset if size < 0 else size
    view = (ctypes.c_uint8 * size).from_buffer(data, offset)
    try:
        return int(L.llama_state_seq_set_data(ctx, view, size, seq_id)) > 0
    finally:
        del view


def save_state_file(ctx: Any, seq_id: int, path: str, tokens: list[int]) -> int:
    """llama-server's slot file (`llama_state_seq_save_file`: the tokens, then the state);
    the bytes written, 0 on failure."""
    arr = (L.llama_token * max(1, len(tokens)))(*tokens)
    return int(L.llama_state_seq_save_file(ctx, path.encode(), seq_id, arr, len(tokens)))


def load_state_file(ctx: Any, seq_id: int, path: str, capacity: int) -> tuple[list[int], int]:
    """A slot file into an empty sequence: its tokens and the bytes read ((`[]`, 0) when it
    could not be read). Both token lists llama-server writes are read: the plain one and the
    packed one (LLAMA_TOKEN_NULL, version, count, tokens)."""
    cap = capacity + 3
    tokens = (L.llama_token * cap)()
    n_out = ctypes.c_size_t(0)
    n_read = int(
        L.llama_state_seq_load_file(ctx, path.encode(), seq_id, tokens, cap, ctypes.byref(n_out))
    )
    if n_read == 0:
        return [], 0
    got = list(tokens[: n_out.value])
    if len(got) >= 3 and got[0] == _TOKEN_NULL:
        got = got[3 : 3 + got[2]]
    return got, n_read


def model_identity(model_path: str) -> dict[str, str]:
    """What names the weights a state was computed with: the file, its size and mtime."""
    st = os.stat(model_path)
    return {
        "model": os.path.realpath(model_path),
        "size": str(st.st_size),
        "mtime_ns": str(st.st_mtime_ns),
        "llama_cpp": str(getattr(L, "__version__", "?")),
    }
