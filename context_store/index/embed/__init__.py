"""Embedding: the protocol and a fake, model files, the device (CPU or CUDA), the ONNX and torch
backends, the query encoder, the one cache, and the factory that picks a backend from the configuration.

Backends load their library lazily, so importing this package costs neither torch nor
onnxruntime; ``factory`` is the only module that chooses between them.
"""

from context_store.index.embed.cache import cached_hashes, cached_vectors, embed_cached
from context_store.index.embed.device import resolve_device
from context_store.index.embed.factory import build_embedder
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.embed.model_files import MODELS_DIR_ENV, models_dir, resolve_model_path, threads_for_load
from context_store.index.embed.protocol import Embedder
from context_store.index.embed.query_encoder import CachedEncoder, CoalescingEncoder, build_query_encoder
from context_store.index.embed.torch_backend import SentenceTransformerEmbedder

__all__ = [
    "MODELS_DIR_ENV",
    "CachedEncoder",
    "CoalescingEncoder",
    "Embedder",
    "HashingEmbedder",
    "SentenceTransformerEmbedder",
    "build_embedder",
    "build_query_encoder",
    "cached_hashes",
    "cached_vectors",
    "embed_cached",
    "models_dir",
    "resolve_device",
    "resolve_model_path",
    "threads_for_load",
]
