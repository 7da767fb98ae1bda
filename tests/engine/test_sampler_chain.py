from __future__ import annotations

import numpy as np

from endmark.engine import ChainSettings
from endmark.engine.sampler_chain import SamplerChain, chain_seed

N = 1000


def row(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 2, N).astype(np.float32)


def draws(chain: SamplerChain, n: int = 40) -> list[int]:
    return [chain(row(i)) for i in range(n)]


def test_a_seed_gives_the_same_draws_and_another_seed_others() -> None:
    first = draws(SamplerChain(N, ChainSettings(40, 0.95, 0.05, 1.5, seed=7)))
    assert first == draws(SamplerChain(N, ChainSettings(40, 0.95, 0.05, 1.5, seed=7)))
    assert first != draws(SamplerChain(N, ChainSettings(40, 0.95, 0.05, 1.5, seed=8)))


def test_it_keeps_to_the_top_k_and_never_draws_a_ban() -> None:
    x = row()
    top = int(np.argmax(x))
    assert {SamplerChain(N, ChainSettings(1, 1.0, 0.0, 1.0, seed=s))(x) for s in range(5)} == {top}
    banned = [top, *np.argsort(-x)[1:3].tolist()]
    chain = SamplerChain(N, ChainSettings(3, 1.0, 0.0, 5.0, seed=1, banned=banned))
    picks = {chain(x) for _ in range(50)}
    assert not picks & set(banned)
    assert x[top] == x.max()  # the row is read, never changed


def test_seeds_fold_into_llama_cpps_32_bits() -> None:
    assert chain_seed(42) == 42
    big = chain_seed(2**64 - 1)
    assert 0 <= big < 0xFFFFFFFF and big == chain_seed(2**64 - 1)
    assert 0 <= chain_seed(0xFFFFFFFF) < 0xFFFFFFFF  # not llama.cpp's "random"
    assert 0 <= chain_seed(-1) < 0xFFFFFFFF
