"""The model run by sentence-transformers (PyTorch): loaded lazily, cached per (model, device).

A CLI call that has nothing to embed never pays for loading it; on the CPU the intra-op
threads shrink to one when the machine is overloaded (``model_files.threads_for_load``).
On CUDA the model stays in fp32 (TF32 off, torch's default): its vectors then match the
CPU's, so one (chunk hash, model) cache and one index serve both. fp16 was measured on an
H200 not faster for this small model, with long tails (DESIGN.md), so it is not offered.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from context_store.index.embed.model_files import resolve_model_path, threads_for_load
from context_store.settings import DEFAULT_MODEL

__all__ = ["SentenceTransformerEmbedder"]

_MODELS: dict[tuple[str, str], object] = {}
_LOCK = threading.Lock()
_DEFAULT_THREADS: int | None = None


def _fit_torch_threads() -> int:
    global _DEFAULT_THREADS
    import torch

    if _DEFAULT_THREADS is None:
        _DEFAULT_THREADS = torch.get_num_threads()
    wanted = threads_for_load(_DEFAULT_THREADS)
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return wanted


class SentenceTransformerEmbedder:
    """A sentence-transformers model, offline, normalised, batched."""

    def __init__(self, model: str = DEFAULT_MODEL, *, batch_size: int = 64, device: str = "cpu") -> None:
        self.name = model
        self.batch_size = batch_size
        self.device = device
        self._dim: int | None = None

    @property
    def model(self):  # type: ignore[no-untyped-def]
        key = (self.name, self.device)
        with _LOCK:
            if key not in _MODELS:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer

                if self.device != "cpu":
                    import torch

                    torch.set_float32_matmul_precision("highest")  # no TF32: CPU and GPU vectors must agree
                _MODELS[key] = SentenceTransformer(resolve_model_path(self.name), device=self.device)
            return _MODELS[key]

    @property
    def dim(self) -> int:
        if self._dim is None:
            get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
            self._dim = int(get_dim())
        return self._dim

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self.model
        if self.device == "cpu":
            _fit_torch_threads()
        vectors = model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)
