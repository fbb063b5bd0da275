"""What every embedder is: a name, a dimension, and ``encode`` to L2-normalised float32 rows.

Typed as a ``Protocol`` so a test can pass a deterministic fake (``fake.HashingEmbedder``)
anywhere the real model goes.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Embedder"]


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """Return an (n, dim) float32 array of L2-normalised vectors."""
        ...
