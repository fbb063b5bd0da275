"""A deterministic embedder for unit tests: no model, no download, same vector for the same words."""

from __future__ import annotations

import re

import numpy as np

from context_store._common import sha256

__all__ = ["HashingEmbedder"]


class HashingEmbedder:
    """Deterministic bag-of-words vectors: fast, dependency-free, and similar for texts sharing words.

    For unit tests only; it counts its calls so tests can assert what was (re-)embedded.
    """

    def __init__(self, dim: int = 64, name: str = "hashing-test-embedder") -> None:
        self.name = name
        self.dim = dim
        self.calls = 0
        self.texts_embedded = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        self.texts_embedded += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for token in re.findall(r"[a-z0-9]+", text.lower()):
                h = int(sha256(token)[:8], 16)
                out[i, h % self.dim] += 1.0 if (h >> 8) & 1 else -1.0
            norm = np.linalg.norm(out[i])
            out[i] = out[i] / norm if norm else out[i]
        return out
