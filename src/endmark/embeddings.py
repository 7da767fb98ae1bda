"""Embedding vectors, engine-neutral: normalized as llama-server's `embd_normalize` says."""

from __future__ import annotations

import numpy as np

EUCLIDEAN = 2  # llama-server's default


def normalize(vector: np.ndarray, norm: int = EUCLIDEAN) -> np.ndarray:
    """-1: as is; 0: scaled into int16's range by the largest magnitude; 1: taxicab;
    2: Euclidean; above 2: that p-norm. A zero vector stays zero."""
    v = vector.astype(np.float32)
    if norm < 0:
        return v
    if norm == 0:
        total = float(np.abs(v).max()) / 32760.0
    else:
        total = float(np.sum(np.abs(v.astype(np.float64)) ** norm) ** (1.0 / norm))
    return v / total if total > 0 else v
