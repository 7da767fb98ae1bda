"""llama.cpp for the whole process: the backend set up once, its logs, loading progress, and
what this CPU's kernels can be trusted with."""

from __future__ import annotations

import ctypes
import functools
import logging
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import llama_cpp as L

from endmark.engine.ggml_api import ggml
from endmark.engine.gguf_meta import TensorInfo

log = logging.getLogger("endmark.engine")

ProgressFn = Callable[[float], None]

_backend_lock = threading.Lock()
_backend_ready = False
_log_callback = None  # keep the ctypes callback alive for the process


def init_backend() -> None:
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


def progress_callback(progress: ProgressFn | None) -> Any:
    """llama.cpp's loading-progress callback calling `progress`; the caller keeps it alive."""
    if progress is None:
        return None

    @L.llama_progress_callback
    def _cb(value: float, _user: ctypes.c_void_p) -> bool:
        progress(float(value))
        return True

    return _cb


@functools.cache
def cpu_has_amx() -> bool:
    """Whether this CPU advertises AMX: llama.cpp's AMX kernels (an extra buffer type that
    repacks weights) crashed decoding SmolLM2 (Q4_1) and Q4_K_M models on such a machine, a
    segfault in `ggml_backend_amx_mul_mat` for any batch of two tokens or more, so they are
    not used; llama.cpp's other repacking buffer is (`RepackOverrides`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return any(line.startswith("flags") and "amx_tile" in line for line in f)
    except OSError:
        return False


# The layers' matrix weights: llama.cpp only ever multiplies by them (a repacked tensor in
# any other operation aborts the graph), unlike the token embeddings, which it looks up.
MATRIX_WEIGHT = re.compile(
    r"blk\.(\d+)\.(attn_q|attn_k|attn_v|attn_qkv|attn_output|ffn_gate|ffn_up|ffn_down)\.weight"
)
# What llama.cpp's x86 repack kernels take (`ggml_repack_get_optimal_repack_type`): ggml type
# -> the multiple of rows. Q4_0, Q2_K (AVX-512, which every AMX CPU has), Q4_K, IQ4_NL.
X86_REPACK_ROWS = {2: 8, 10: 8, 12: 8, 20: 8}


def repack_patterns(tensors: Sequence[TensorInfo]) -> list[str]:
    """Regexes (llama.cpp's, ECMAScript) naming exactly the weights its repack buffer can take:
    one per kind of weight, its layers spelled out (a quantization mixes types per layer)."""
    layers: dict[str, list[str]] = defaultdict(list)
    for t in tensors:
        m = MATRIX_WEIGHT.fullmatch(t.name)
        rows = X86_REPACK_ROWS.get(t.ggml_type)
        if m and rows and t.n_dims == 2 and t.n_rows % rows == 0:
            layers[m[2]].append(m[1])
    return [rf"^blk\.({'|'.join(ids)})\.{kind}\.weight$" for kind, ids in layers.items()]


class _Override(ctypes.Structure):
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


class RepackOverrides:
    """llama.cpp's repack buffer without its AMX one, for `llama_model_params`: with AMX
    present, llama.cpp would pick AMX first for every weight it takes, so endmark turns the
    extra buffers off and names the weights for the repack buffer itself. Its kernels
    multiply a few rows at a time (a token with a guess or forced tokens: ~0.6 the time of
    plain weights at 1.5B Q4_K_M); a long prompt goes ~1.3x slower (`-nr` turns it off)."""

    def __init__(self, patterns: list[str], buft: int) -> None:
        self.patterns = patterns
        self.array = (_Override * (len(patterns) + 1))()  # ends with a null pattern
        for i, pattern in enumerate(patterns):
            self.array[i].pattern = pattern.encode()  # ctypes keeps the bytes alive
            self.array[i].buft = buft

    @classmethod
    def of(cls, tensors: Sequence[TensorInfo]) -> RepackOverrides | None:
        patterns = repack_patterns(tensors)
        buft = repack_buffer_type() if patterns else None
        return cls(patterns, buft) if buft else None

    def as_param(self) -> ctypes.c_void_p:
        return ctypes.cast(self.array, ctypes.c_void_p)


_CPU_DEVICE = 0  # GGML_BACKEND_DEVICE_TYPE_CPU


@functools.cache
def repack_buffer_type() -> int | None:
    """The address of llama.cpp's `CPU_REPACK` buffer type, from the CPU backend's own list of
    extra buffer types (the one the model loader uses), or None if this build has none."""
    g = ggml()
    device = g.ggml_backend_dev_by_type(_CPU_DEVICE)
    if not device:
        return None
    reg = g.ggml_backend_dev_backend_reg(device)
    address = g.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_dev_get_extra_bufts")
    if not reg or not address:
        return None
    extra_bufts = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(address)
    listed = extra_bufts(device)
    i = 0
    while listed[i]:
        if g.ggml_backend_buft_name(listed[i]) == b"CPU_REPACK":
            return int(listed[i])
        i += 1
    return None
