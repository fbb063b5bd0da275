"""Retrieval of current company chunks and one user's current state for a question."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import col, select

from context_store.embedding import Embedder
from context_store.errors import InvalidRequest, UnknownUser
from context_store.models import Document, UserRecord, UserSnapshotVersion, utcnow
from context_store.store import ContextStore
from context_store.vector_index import quote

__all__ = ["Hit", "RetrievalResult", "UserFact", "retrieve"]

MAX_QUERY_CHARS = 2000


@dataclass
class Hit:
    chunk_id: str
    doc_id: str
    version_id: str
    title: str
    heading: str
    text: str
    source_path: str
    kind: str
    score: float
    source_changed_at: datetime | None
    indexed_at: datetime | None


@dataclass
class UserFact:
    key: str
    text: str
    score: float


@dataclass
class RetrievalResult:
    query: str
    results: list[Hit]
    user_id: str | None = None
    user_version_id: str | None = None
    user_captured_at: datetime | None = None
    user_state: list[UserFact] = field(default_factory=list)
    dropped_superseded: int = 0
    served_at: datetime = field(default_factory=utcnow)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def retrieve(
    store: ContextStore, embedder: Embedder, query: str, *, user_id: str | None = None, k: int = 5
) -> RetrievalResult:
    query = (query or "").strip()
    if not query:
        raise InvalidRequest("query is empty")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidRequest(f"query is {len(query)} characters; the limit is {MAX_QUERY_CHARS}")
    if not 1 <= k <= 100:
        raise InvalidRequest(f"k must be between 1 and 100, got {k}")
    vector = embedder.encode([query])[0]
    raw = store.index.vector_search(store.index.company_table_name, vector, k * 2)
    with store.session() as session:
        version_ids = {r["version_id"] for r in raw}
        current = set(
            session.exec(select(Document.current_version_id).where(col(Document.current_version_id).in_(version_ids))).all()
        ) if version_ids else set()
        result = RetrievalResult(query=query, results=[])
        for row in raw:
            # LanceDB is only a projection; a row whose version SQL has ended is never served.
            if row["version_id"] not in current:
                result.dropped_superseded += 1
                continue
            result.results.append(_hit(row, 1.0 - float(row.get("_distance", 1.0))))
            if len(result.results) == k:
                break
        if user_id is not None:
            user = session.get(UserRecord, user_id)
            if user is None or user.current_version_id is None:
                raise UnknownUser(f"no current state for user {user_id!r}")
            snapshot = session.get(UserSnapshotVersion, user.current_version_id)
            result.user_id = user_id
            result.user_version_id = user.current_version_id
            result.user_captured_at = snapshot.captured_at if snapshot else None
            facts = store.index.vector_search(
                store.index.user_table_name, vector, 200, where=f"user_id = {quote(user_id)}",
                columns=["fact_key", "text", "user_id", "version_id"],
            )
            result.user_state = [
                UserFact(key=f["fact_key"], text=f["text"], score=1.0 - float(f.get("_distance", 1.0)))
                for f in facts
                if f["user_id"] == user_id and f["version_id"] == user.current_version_id
            ]
    return result


def _hit(row: dict[str, Any], score: float) -> Hit:
    return Hit(
        chunk_id=row["chunk_id"], doc_id=row["doc_id"], version_id=row["version_id"], title=row["title"],
        heading=row["heading"], text=row["text"], source_path=row["source_path"], kind=row["kind"], score=score,
        source_changed_at=row.get("source_changed_at"), indexed_at=row.get("indexed_at"),
    )
