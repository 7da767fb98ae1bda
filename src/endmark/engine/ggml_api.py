"""libggml's C functions that endmark calls beside llama.cpp's (which llama-cpp-python
declares): the GGUF reader and the backend registry, with their prototypes set once."""

from __future__ import annotations

import ctypes
import functools
from typing import Any

from llama_cpp._ggml import libggml


class GgufInitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.POINTER(ctypes.c_void_p))]


_p, _i64, _s, _int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_char_p, ctypes.c_int
PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "gguf_init_from_file": (_p, [_s, GgufInitParams]),
    "gguf_free": (None, [_p]),
    "gguf_find_key": (_i64, [_p, _s]),
    "gguf_get_kv_type": (_int, [_p, _i64]),
    "gguf_get_arr_type": (_int, [_p, _i64]),
    "gguf_get_arr_n": (ctypes.c_size_t, [_p, _i64]),
    "gguf_get_arr_data": (_p, [_p, _i64]),
    "gguf_get_n_tensors": (_i64, [_p]),
    "gguf_get_tensor_name": (_s, [_p, _i64]),
    "gguf_get_tensor_type": (_int, [_p, _i64]),
    "ggml_get_tensor": (_p, [_p, _s]),
    "ggml_n_dims": (_int, [_p]),
    "ggml_nrows": (_i64, [_p]),
    "ggml_free": (None, [_p]),
    "ggml_backend_dev_by_type": (_p, [_int]),
    "ggml_backend_dev_backend_reg": (_p, [_p]),
    "ggml_backend_reg_get_proc_address": (_p, [_p, _s]),
    "ggml_backend_buft_name": (_s, [_p]),
}


@functools.cache
def ggml() -> Any:
    """libggml, every function of `PROTOTYPES` declared."""
    for name, (restype, argtypes) in PROTOTYPES.items():
        fn = getattr(libggml, name)
        fn.restype, fn.argtypes = restype, argtypes
    return libggml
