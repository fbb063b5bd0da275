"""Steps 3-4 of the data flow: chunk, embed and write what changed into LanceDB. ``ingest``
holds the one sync-then-index every path calls (the assets, the CLI, the warm path);
``plan`` what is pending and in which order, ``documents`` and ``users`` the writers,
``drift`` the check against SQL, ``warm`` the one warm path; ``embed`` the model.
"""

from context_store.index.candidate import build_candidate
from context_store.index.drift import index_drift
from context_store.index.embed.device import resolve_device
from context_store.index.embed.factory import build_embedder
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.embed.model_files import MODELS_DIR_ENV
from context_store.index.embed.onnx_backend import OnnxEncoder
from context_store.index.embed.protocol import Embedder
from context_store.index.embed.query_encoder import build_query_encoder
from context_store.index.embed.torch_backend import SentenceTransformerEmbedder
from context_store.index.ingest import (
    ApplyResult,
    IngestReport,
    apply_changes,
    apply_company_paths,
    index_state,
    ingest,
    sync_state,
)
from context_store.index.plan import IndexReport, pending_documents
from context_store.index.warm import WarmApplier

__all__ = [
    "MODELS_DIR_ENV",
    "ApplyResult",
    "Embedder",
    "HashingEmbedder",
    "IndexReport",
    "IngestReport",
    "OnnxEncoder",
    "SentenceTransformerEmbedder",
    "WarmApplier",
    "apply_changes",
    "apply_company_paths",
    "build_candidate",
    "build_embedder",
    "build_query_encoder",
    "index_drift",
    "index_state",
    "ingest",
    "pending_documents",
    "resolve_device",
    "sync_state",
]
