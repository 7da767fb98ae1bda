"""llama-cpp-python's server, started as endmark's engine starts llama.cpp: on a CPU with AMX,
without llama.cpp's extra buffer types, whose AMX kernel crashes decoding any batch of two
tokens or more there (llama-cpp-python exposes no switch for it). Elsewhere it is unchanged,
so the peer in a benchmark or a probe test runs the same kernels as endmark.

Run as `python -m benchmarks.llama_cpp_peer ARGS...` with `llama_cpp.server`'s arguments.
"""

from __future__ import annotations

import llama_cpp.llama_cpp as llama_cpp
import llama_cpp.server.__main__ as server

from endmark.engine.backend import cpu_has_amx


def _without_extra_buffers() -> None:
    default_params = llama_cpp.llama_model_default_params

    def params():  # type: ignore[no-untyped-def]
        made = default_params()
        made.use_extra_bufts = False
        return made

    llama_cpp.llama_model_default_params = params


if __name__ == "__main__":
    if cpu_has_amx():
        _without_extra_buffers()
    server.main()
