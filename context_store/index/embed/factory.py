"""The one place that picks a chunk embedder from the configuration (backends never import it)."""

from __future__ import annotations

import logging
from pathlib import Path

from context_store.errors import ConfigError
from context_store.index.embed.device import is_cuda, resolve_device
from context_store.index.embed.protocol import Embedder
from context_store.index.embed.torch_backend import SentenceTransformerEmbedder
from context_store.settings import EmbeddingConfig

__all__ = ["GPU_MIN_BATCH", "build_embedder"]

log = logging.getLogger(__name__)

# On a GPU the CPU's batch of 8 (chosen to keep ONNX padding small) leaves it idle between
# launches; 3,632 chunks/s were measured there with batches of 128 (DESIGN.md).
GPU_MIN_BATCH = 128


def build_embedder(config: EmbeddingConfig, home: Path | None = None) -> Embedder:
    """The configured model for chunks and questions; ``home`` keeps its ONNX export (``models/``).

    On CUDA (``device: cuda``, or ``auto`` where torch sees a GPU) the PyTorch model runs on
    the GPU in fp32. On the CPU, without a home only the PyTorch backend is possible, and
    ``backend: auto`` falls back to it, with a warning, when the export cannot be made
    (onnxruntime missing, a non-BERT model).
    """
    if config.backend == "onnx" and is_cuda(config.device):
        raise ConfigError(
            f"embedding.backend onnx runs on the CPU, not on {config.device!r}: set device cpu or auto, or backend torch or auto"
        )
    device = "cpu" if config.backend == "onnx" else resolve_device(config.device)
    wants_onnx = config.backend == "onnx" or (config.backend == "auto" and device == "cpu" and home is not None)
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
    batch_size = config.batch_size if device == "cpu" else max(config.batch_size, GPU_MIN_BATCH)
    return SentenceTransformerEmbedder(config.model, batch_size=batch_size, device=device)
