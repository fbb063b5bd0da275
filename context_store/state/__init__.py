"""Steps 1-2 of the data flow: what the sources hold and every version of it. Company documents
and user snapshots are versioned separately; the change journal records what changed and
when; ``observed`` keeps what each sync last saw of each file and finds what changed since
unseen; inputs that cannot be used are skipped with a reason; ``roots`` says which source
holds a path.
"""

from context_store.state.documents import (
    CompanySyncReport,
    current_version_id,
    current_version_ids,
    doc_id_for,
    doc_ids_for,
    document_versions,
    sync_company_sources,
)
from context_store.state.journal import JournalEntry, append, entry_for_path, latest_id, mark_applied, prune, read_after
from context_store.state.observed import UnobservedReport, unobserved_changes
from context_store.state.roots import SourceRoots, source_for
from context_store.state.skipped_inputs import open_skips
from context_store.state.user_state import UserSyncReport, sync_user_sources

__all__ = [
    "CompanySyncReport",
    "JournalEntry",
    "SourceRoots",
    "UnobservedReport",
    "UserSyncReport",
    "append",
    "current_version_id",
    "current_version_ids",
    "doc_id_for",
    "doc_ids_for",
    "document_versions",
    "entry_for_path",
    "latest_id",
    "mark_applied",
    "open_skips",
    "prune",
    "read_after",
    "source_for",
    "sync_company_sources",
    "sync_user_sources",
    "unobserved_changes",
]
