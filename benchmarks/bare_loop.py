"""The ceiling for a Python server: a bare greedy loop on llama-cpp-python's low-level API.

Run as a child process so that it gets the machine to itself:
`python -m benchmarks.bare_loop MODEL THREADS N_PREDICT PROMPT` prints tokens/s as JSON.
"""

from __future__ import annotations

import ctypes
import json
import sys
import time

import llama_cpp as L

from endmark.engine.backend import cpu_has_amx

_QUIET = L.llama_log_callback(lambda *_: None)  # module-level: llama.cpp keeps the pointer


def decode_rate(model_path: str, threads: int, n_predict: int, prompt: str) -> float:
    """Greedy tokens per second after the first token, as a streaming client would see it."""
    L.llama_log_set(_QUIET, ctypes.c_void_p(0))
    L.llama_backend_init()
    mparams = L.llama_model_default_params()
    mparams.use_extra_bufts = not cpu_has_amx()  # as endmark's engine: AMX crashes here
    model = L.llama_model_load_from_file(model_path.encode(), mparams)
    vocab = L.llama_model_get_vocab(model)
    cparams = L.llama_context_default_params()
    cparams.n_ctx = 4096
    cparams.n_batch = 512
    cparams.n_threads = cparams.n_threads_batch = threads
    ctx = L.llama_init_from_model(model, cparams)
    data = prompt.encode()
    buf = (L.llama_token * (len(data) + 8))()
    n = L.llama_tokenize(vocab, data, len(data), buf, len(buf), True, True)
    sampler = L.llama_sampler_init_greedy()
    if L.llama_decode(ctx, L.llama_batch_get_one(buf, n)) != 0:
        raise RuntimeError("prompt decode failed")
    token = (L.llama_token * 1)()
    token[0] = L.llama_sampler_sample(sampler, ctx, -1)
    start = time.perf_counter()
    for _ in range(n_predict - 1):
        if L.llama_decode(ctx, L.llama_batch_get_one(token, 1)) != 0:
            raise RuntimeError("decode failed")
        token[0] = L.llama_sampler_sample(sampler, ctx, -1)
    elapsed = time.perf_counter() - start
    L.llama_sampler_free(sampler)
    L.llama_free(ctx)
    L.llama_model_free(model)
    return (n_predict - 1) / elapsed


if __name__ == "__main__":
    model, threads, n, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    print(json.dumps({"tokens_per_second": decode_rate(model, threads, n, prompt)}))
