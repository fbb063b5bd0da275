"""Query encoders for serving: the ONNX export of the model (one thread per process), request
coalescing, and an LRU cache.

Encoding one short query with PyTorch costs ~15-45 ms on this 2-core machine; ONNX Runtime
on one thread costs about half, with the same vectors (``context_store.index.embed.onnx_backend``).
``onnx-int8`` (dynamic quantisation) is faster again but moves vectors (cosine ~0.97 to
fp32), so it is opt-in. When onnxruntime or the export is unavailable, ``auto`` falls back
to the PyTorch model with one intra-op thread.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from context_store.errors import ConfigError
from context_store.index.embed.coalesce import Coalescer
from context_store.index.embed.device import is_cuda, resolve_device
from context_store.index.embed.onnx_backend import onnx_encoder
from context_store.index.embed.protocol import Embedder
from context_store.index.embed.torch_backend import SentenceTransformerEmbedder
from context_store.settings import EmbeddingConfig

__all__ = ["CachedEncoder", "CoalescingEncoder", "build_query_encoder"]

log = logging.getLogger(__name__)


class CoalescingEncoder:
    """Encodes concurrent requests' single queries in one batch (``context_store.index.embed.coalesce``).

    Measured with the bundled model on this 2-core machine: ~8.8 ms a query one at a time,
    ~7.5 ms a query in batches of four; a lone request is encoded at once, never held back."""

    def __init__(self, inner: Embedder, *, max_batch: int = 16) -> None:
        self.inner = inner
        self.name = inner.name
        self._batch = Coalescer(lambda texts: list(inner.encode(texts)), max_batch=max_batch)

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: list[str]) -> np.ndarray:
        if len(texts) == 1:
            return np.asarray([self._batch(texts[0])], dtype=np.float32)
        return self.inner.encode(texts)


class CachedEncoder:
    """An LRU cache of query vectors in front of any embedder (agents repeat questions)."""

    def __init__(self, inner: Embedder, size: int = 2048) -> None:
        self.inner = inner
        self.name = inner.name
        self.size = size
        self.hits = 0
        self.misses = 0
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: list[str]) -> np.ndarray:
        out: list[np.ndarray | None] = [None] * len(texts)
        missing = []
        with self._lock:
            for i, text in enumerate(texts):
                vec = self._cache.get(text)
                if vec is None:
                    missing.append(i)
                else:
                    self._cache.move_to_end(text)
                    out[i] = vec
            self.hits += len(texts) - len(missing)
            self.misses += len(missing)
        if missing:
            encoded = self.inner.encode([texts[i] for i in missing])
            with self._lock:
                for i, vec in zip(missing, encoded):
                    out[i] = vec
                    if self.size:
                        self._cache[texts[i]] = vec
                        if len(self._cache) > self.size:
                            self._cache.popitem(last=False)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(out, dtype=np.float32)


def build_query_encoder(config: EmbeddingConfig, kind: str, home: Path, *, cache_size: int = 0) -> Embedder:
    """The encoder the API uses for questions; ``kind`` is auto | torch | onnx | onnx-int8.

    On CUDA (``embedding.device``) ``auto`` is the PyTorch model on the GPU, fp32, with
    concurrent requests' questions coalesced into one forward pass (measured on an H200: one
    question 3.1 ms p50, a batch of eight 5.7 ms); ``onnx`` still means ONNX on the CPU."""
    if kind not in ("auto", "torch", "onnx", "onnx-int8"):
        raise ConfigError(f"retrieval.query_encoder {kind!r} is not one of auto, torch, onnx, onnx-int8")
    device = resolve_device(config.device) if kind in ("auto", "torch") else "cpu"
    encoder: Embedder | None = None
    if kind != "torch" and device == "cpu":
        try:
            encoder = CoalescingEncoder(onnx_encoder(config.model, home, quantize=kind == "onnx-int8"))
        except Exception as exc:  # onnxruntime missing, a non-BERT model, an export failure
            if kind != "auto":
                raise ConfigError(f"query encoder {kind!r} for {config.model!r} is unavailable: {exc}") from exc
            log.warning("ONNX query encoder unavailable (%s); using PyTorch", exc)
    if encoder is None:
        import torch

        torch.set_num_threads(1)  # measured: two threads per query under concurrent load is several times slower
        encoder = SentenceTransformerEmbedder(config.model, batch_size=config.batch_size, device=device)
        if is_cuda(device):
            encoder = CoalescingEncoder(encoder)
    return CachedEncoder(encoder, cache_size) if cache_size else encoder
