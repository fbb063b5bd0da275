"""Index drift: what SQL says is current against what LanceDB holds, per table.

A difference owned by a pending document (SQL itself records it as not yet indexed) is
work in progress, not drift; ``DriftReport.unexplained`` leaves those out, which is what
the index asset checks fail on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlmodel import col, select

from context_store.index.plan import pending_doc_keys
from context_store.index.users import fact_id_for
from context_store.store.context_store import ContextStore
from context_store.store.models import ChunkRecord, Document, DocumentVersion, UserRecord, UserSnapshotVersion
from context_store.store.vector_index import COMPANY_TABLE, USER_TABLE

__all__ = ["DriftReport", "index_drift"]


@dataclass
class DriftReport:
    """``missing``/``extra`` compare LanceDB with the current versions; ``pending`` lists the
    documents SQL itself records as not yet indexed (current != indexed version)."""

    table: str
    expected: int
    actual: int
    missing: list[str]
    extra: list[str]
    pending: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.extra

    @property
    def unexplained(self) -> list[str]:
        """Differences not accounted for by a pending document: rows of an indexed document
        that are gone or wrong, or rows of no document at all. A pending document's rows are
        the previous version's until its indexing commit, which is work in progress or left
        for the next run, not drift."""
        pending = set(self.pending)
        return [i for i in [*self.missing, *self.extra] if _owner(i) not in pending]


def _owner(row_id: str) -> str:
    """The document of a drift entry: chunk ids are ``<doc_id>#<hash>[-n]``; ``<doc_id> (not chunked)`` names it."""
    if row_id.endswith(" (not chunked)"):
        return row_id.removesuffix(" (not chunked)")
    return row_id.rsplit("#", 1)[0]


def index_drift(store: ContextStore) -> list[DriftReport]:
    """Compare what SQL says is current with what LanceDB holds, per table."""
    with store.session() as session:
        expected_chunks = set(
            session.exec(
                select(ChunkRecord.chunk_id)
                .join(Document, col(Document.current_version_id) == col(ChunkRecord.version_id))
            ).all()
        )
        # a current version not chunked yet is itself drift: its rows cannot be in LanceDB
        unchunked = session.exec(
            select(Document.doc_id)
            .join(DocumentVersion, col(DocumentVersion.version_id) == col(Document.current_version_id))
            .where(col(DocumentVersion.chunk_count).is_(None))
        ).all()
        pending_docs = [doc_id for doc_id, _, _ in pending_doc_keys(session)]
        expected_facts: set[str] = set()
        for user_id, facts in session.exec(
            select(UserSnapshotVersion.user_id, UserSnapshotVersion.facts)
            .join(UserRecord, col(UserRecord.current_version_id) == col(UserSnapshotVersion.version_id))
        ).all():
            expected_facts.update(fact_id_for(user_id, f["key"], f["text"]) for f in facts)
    reports = []
    actual = store.index.ids(store.index.company_table_name, "chunk_id")
    missing = sorted(expected_chunks - actual) + [f"{doc_id} (not chunked)" for doc_id in unchunked]
    reports.append(DriftReport(COMPANY_TABLE, len(expected_chunks), len(actual), missing, sorted(actual - expected_chunks), pending_docs))
    actual_facts = store.index.ids(store.index.user_table_name, "fact_id")
    reports.append(
        DriftReport(USER_TABLE, len(expected_facts), len(actual_facts), sorted(expected_facts - actual_facts), sorted(actual_facts - expected_facts))
    )
    return reports
