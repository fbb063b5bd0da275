"""Steps 3-4 of the data flow: chunk, embed and write what changed into LanceDB. ``ingest``
holds the one sync-then-index every path calls (the assets, the CLI, the warm path);
``plan`` what is pending and in which order, ``documents`` and ``users`` the writers,
``drift`` the check against SQL, ``warm`` the one warm path; ``embed`` the model.
"""

from context_store.index.drift import index_drift
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
    "ApplyResult",
    "IndexReport",
    "IngestReport",
    "WarmApplier",
    "apply_changes",
    "apply_company_paths",
    "index_drift",
    "index_state",
    "ingest",
    "pending_documents",
    "sync_state",
]
