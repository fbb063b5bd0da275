"""The one place that picks a chunk embedder from the configuration (backends never import it)."""

from __future__ import annotations

import logging
from pathlib import Path

from context_store.errors import ConfigError
from context_store.index.embed.protocol import Embedder
from context_store.index.embed.torch_backend import SentenceTransformerEmbedder
from context_store.settings import EmbeddingConfig

__all__ = ["build_embedder"]

log = logging.getLogger(__name__)


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
