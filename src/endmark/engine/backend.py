"""llama.cpp for the whole process: the backend set up once, its logs, loading progress, and
what this CPU's kernels can be trusted with."""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from typing import Any

import llama_cpp as L

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


def cpu_has_amx() -> bool:
    """Whether this CPU advertises AMX: llama.cpp's AMX kernels (an extra buffer type that
    repacks weights) crashed decoding SmolLM2 (Q4_1) on such a machine, a segfault in
    `ggml_backend_amx_mul_mat` for any batch of two tokens or more, so they are not used."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return any(line.startswith("flags") and "amx_tile" in line for line in f)
    except OSError:
        return False
