"""An embedder that encodes a known list of questions in one batch before they are asked one by one.

Evaluations know every question up front; one model call for all of them instead of one per
question is most of their speed. Texts outside the list still work (encoded on demand).
"""

from __future__ import annotations

import numpy as np

from context_store.index.embed.protocol import Embedder

__all__ = ["PrefetchedEmbedder"]


class PrefetchedEmbedder:
    """Wraps ``inner``: ``texts`` are encoded at construction, ``encode`` then serves them from memory."""

    def __init__(self, inner: Embedder, texts: list[str]) -> None:
        self.name, self.dim, self._inner = inner.name, inner.dim, inner
        unique = list(dict.fromkeys(texts))
        self._vectors = dict(zip(unique, inner.encode(unique))) if unique else {}

    def encode(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in texts if t not in self._vectors]
        if missing:
            self._vectors.update(zip(missing, self._inner.encode(missing)))
        return np.stack([self._vectors[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)
