"""llama.cpp's own sampler chain (top-k, top-p, min-p, temperature, a seeded draw) on rows of
logits given as numpy arrays.

The same chain as `sampling._candidates` plus a draw, in C: after a decode has left the
caches cold, numpy's top-k (a negated copy, an index array, a partition) and its draw take
~500 us a token on a 49k vocabulary; this ~180 us. Its draws are llama.cpp's (a seeded
mt19937), so a seed gives the draws llama-server gives it, reproducibly, alone or batched
(each request has its own chain). It reads whatever row it is given: biases, penalties
and a grammar's mask are applied before, as for numpy's draw; the bans of `ignore_eos` it
applies itself (`sampling.adjust`'s `lazy_bans`).
"""

from __future__ import annotations

import ctypes
import hashlib

import llama_cpp as L
import numpy as np

from endmark.engine import ChainSettings

# llama_token_data: id, logit, p; the chain reorders and shrinks the array it is given
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
assert _TOKEN_DATA.itemsize == ctypes.sizeof(L.llama_token_data)


def chain_seed(seed: int) -> int:
    """A request's seed as llama.cpp's dist sampler takes it: 32 bits, of which 0xFFFFFFFF
    means "random". A seed below that is itself (llama-server's draws); a larger one (seeds
    go to 64 bits) is folded, stably; a negative one is random."""
    if seed < 0:
        return int(np.random.default_rng().integers(0, L.LLAMA_DEFAULT_SEED))
    if seed < L.LLAMA_DEFAULT_SEED:
        return seed
    digest = hashlib.blake2b(seed.to_bytes(8, "little"), digest_size=4).digest()
    return int.from_bytes(digest, "little") % L.LLAMA_DEFAULT_SEED


class SamplerChain:
    """One request's chain: call it with a row of adjusted logits for a token id."""

    def __init__(self, n_vocab: int, settings: ChainSettings) -> None:
        s, banned = settings, settings.banned
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if banned:  # -inf: as `sampling.adjust` bans them, without a copy of the row
            bias = (L.llama_logit_bias * len(banned))()
            for entry, token in zip(bias, banned, strict=True):
                entry.token, entry.bias = token, float("-inf")
            L.llama_sampler_chain_add(
                chain, L.llama_sampler_init_logit_bias(n_vocab, len(banned), bias)
            )
        for sampler in (
            L.llama_sampler_init_top_k(s.top_k),
            L.llama_sampler_init_top_p(s.top_p, 1),
            L.llama_sampler_init_min_p(s.min_p, 1),
            L.llama_sampler_init_temp(s.temperature),
            L.llama_sampler_init_dist(chain_seed(s.seed)),
        ):
            L.llama_sampler_chain_add(chain, sampler)  # the chain owns and frees them
        self._chain = chain
        self._n = n_vocab
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._buf = np.zeros(n_vocab, _TOKEN_DATA)
        data = self._buf.ctypes.data_as(L.llama_token_data_p)
        self._array = L.llama_token_data_array(data=data, size=n_vocab, selected=-1, sorted=False)
        self._ref = ctypes.byref(self._array)

    def __call__(self, x: np.ndarray) -> int:
        buf, array = self._buf, self._array
        buf["id"] = self._ids
        buf["logit"] = x
        array.size, array.selected, array.sorted = self._n, -1, False
        L.llama_sampler_apply(self._chain, self._ref)
        return int(buf["id"][array.selected])

    def __del__(self) -> None:
        chain, self._chain = getattr(self, "_chain", None), None
        if chain:
            L.llama_sampler_free(chain)
