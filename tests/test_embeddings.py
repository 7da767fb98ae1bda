from __future__ import annotations

import numpy as np

from endmark.embeddings import normalize


def test_each_norm_as_llama_server_computes_it() -> None:
    v = np.array([3.0, -4.0], dtype=np.float32)
    assert np.allclose(normalize(v), [0.6, -0.8])
    assert np.allclose(normalize(v, -1), v)
    assert np.allclose(normalize(v, 1), [3 / 7, -4 / 7])
    assert np.allclose(normalize(v, 0), v / (4 / 32760))
    assert np.allclose(normalize(v, 3), v / (27 + 64) ** (1 / 3))
    assert np.allclose(normalize(np.zeros(3)), 0)
