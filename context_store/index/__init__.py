"""Steps 3-4 of the data flow: chunk, embed and write what changed into LanceDB. ``ingest``
holds the one sync-then-index every path calls (the assets, the CLI, the journal's warm
path, the staff-answer indexer); ``embed`` the model behind it.
"""

from context_store.index.drift import index_drift
from context_store.index.ingest import ApplyResult, IngestReport, apply_changes, index_state, ingest, sync_state
from context_store.index.plan import IndexReport, pending_documents

__all__ = [
    "ApplyResult",
    "IndexReport",
    "IngestReport",
    "apply_changes",
    "index_drift",
    "index_state",
    "ingest",
    "pending_documents",
    "sync_state",
]
