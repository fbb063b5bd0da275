"""The whole ingest in one call, for the CLI's warm path, benchmarks and tests.

Dagster runs the same four steps as separate assets; both paths share this code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from context_store.state.documents import CompanySyncReport, sync_company_sources
from context_store.index.embed.embedding import Embedder
from context_store.index.indexing import IndexReport, index_pending_documents, index_pending_users
from context_store.store.context_store import ContextStore
from context_store.state.user_state import UserSyncReport, sync_user_sources

__all__ = ["IngestReport", "ingest"]


@dataclass
class IngestReport:
    company: CompanySyncReport
    company_index: IndexReport
    users: UserSyncReport
    user_index: IndexReport

    def as_dict(self) -> dict[str, Any]:
        return {
            "company": self.company.as_dict(),
            "company_index": self.company_index.as_dict(),
            "users": self.users.as_dict(),
            "user_index": self.user_index.as_dict(),
        }


def ingest(
    store: ContextStore,
    embedder: Embedder,
    *,
    company_paths: list[str | Path] | None = None,
    user_paths: list[str | Path] | None = None,
    progress: Any = None,
) -> IngestReport:
    company = sync_company_sources(store, paths=company_paths)
    company_index = index_pending_documents(store, embedder, progress=progress)
    users = sync_user_sources(store, paths=user_paths)
    user_index = index_pending_users(store, embedder)
    return IngestReport(company, company_index, users, user_index)


