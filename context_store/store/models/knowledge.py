"""What the knowledge base holds: company documents and their versions, chunks, the embedding
cache, chunks a chunker promotion archived, users and their snapshot versions, skipped inputs.

Company state and user state are versioned in separate tables. A version is never updated in
place except to close it (``valid_to``) or to stamp when it was indexed, so "what did the
knowledge base say at time T" is a query, not an archaeology project.
"""

from __future__ import annotations

from datetime import datetime
from typing import Optional

from sqlalchemy import JSON, Column, Index, LargeBinary, text
from sqlmodel import Field, SQLModel

from context_store._common import utcnow
from context_store.store.models._columns import _json, _ts

__all__ = [
    "ArchivedChunk",
    "ChunkRecord",
    "Document",
    "DocumentVersion",
    "EmbeddingCacheEntry",
    "SkippedInput",
    "UserRecord",
    "UserSnapshotVersion",
]


class Document(SQLModel, table=True):
    """A company-state document, identified by ``<source name>/<path inside the source>``."""

    __tablename__ = "documents"

    doc_id: str = Field(primary_key=True)
    source_name: str = Field(index=True)
    rel_path: str
    kind: str = Field(default="article", index=True)  # article | staff_answer
    current_version_id: Optional[str] = Field(default=None, index=True)
    # What LanceDB holds for this document; differs from current_version_id while work is pending.
    indexed_version_id: Optional[str] = Field(default=None)
    created_at: datetime = _ts(default_factory=utcnow)
    deleted_at: Optional[datetime] = _ts(default=None)
    renamed_from: Optional[str] = Field(default=None)


class DocumentVersion(SQLModel, table=True):
    __tablename__ = "document_versions"

    version_id: str = Field(primary_key=True)
    doc_id: str = Field(foreign_key="documents.doc_id", index=True)
    content_hash: str = Field(index=True)
    title: str
    text: str
    source_path: str
    source_mtime: Optional[datetime] = _ts(default=None)
    observed_at: datetime = _ts(default_factory=utcnow)
    valid_from: datetime = _ts(default_factory=utcnow, index=True)
    valid_to: Optional[datetime] = _ts(default=None, index=True)
    indexed_at: Optional[datetime] = _ts(default=None)
    chunk_count: Optional[int] = None
    meta: Optional[dict] = _json(default=None)


class ChunkRecord(SQLModel, table=True):
    """A chunk of one document version. ``chunk_hash`` keys the embedding cache."""

    __tablename__ = "chunks"

    version_id: str = Field(primary_key=True, foreign_key="document_versions.version_id")
    ordinal: int = Field(primary_key=True)
    chunk_id: str = Field(index=True)
    doc_id: str = Field(index=True)
    chunk_hash: str = Field(index=True)
    heading: str = ""
    text: str


class EmbeddingCacheEntry(SQLModel, table=True):
    __tablename__ = "embeddings"

    chunk_hash: str = Field(primary_key=True)
    model: str = Field(primary_key=True)
    dim: int
    vector: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = _ts(default_factory=utcnow)


class UserRecord(SQLModel, table=True):
    __tablename__ = "users"

    user_id: str = Field(primary_key=True)
    source_name: str = Field(index=True)
    source_path: str
    current_version_id: Optional[str] = Field(default=None)
    indexed_version_id: Optional[str] = Field(default=None)
    first_seen: datetime = _ts(default_factory=utcnow)
    deleted_at: Optional[datetime] = _ts(default=None)


class UserSnapshotVersion(SQLModel, table=True):
    __tablename__ = "user_snapshots"

    version_id: str = Field(primary_key=True)
    user_id: str = Field(foreign_key="users.user_id", index=True)
    content_hash: str
    captured_at: datetime = _ts()
    observed_at: datetime = _ts(default_factory=utcnow)
    valid_from: datetime = _ts(default_factory=utcnow, index=True)
    valid_to: Optional[datetime] = _ts(default=None, index=True)
    indexed_at: Optional[datetime] = _ts(default=None)
    source_path: str
    facts: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    raw: Optional[dict] = _json(default=None)


class SkippedInput(SQLModel, table=True):
    """An input we could not use, with the reason, until it is fixed (``resolved_at``)."""

    __tablename__ = "skipped_inputs"

    id: Optional[int] = Field(default=None, primary_key=True)
    state_kind: str = Field(index=True)  # company | user
    source_name: str
    path: str = Field(index=True)
    reason: str
    detail: str
    first_seen: datetime = _ts(default_factory=utcnow)
    last_seen: datetime = _ts(default_factory=utcnow)
    resolved_at: Optional[datetime] = _ts(default=None, index=True)


# At most one open version per document and per user, enforced by the database itself: a
# second process applying the same change would otherwise leave two "current" versions.
# Partial unique indexes exist on SQLite and PostgreSQL alike.
for _table, _key in ((DocumentVersion.__table__, "doc_id"), (UserSnapshotVersion.__table__, "user_id")):
    Index(
        f"uq_{_table.name}_open",
        _table.c[_key],
        unique=True,
        sqlite_where=text("valid_to IS NULL"),
        postgresql_where=text("valid_to IS NULL"),
    )


class ArchivedChunk(SQLModel, table=True):
    """Chunk records a chunker promotion replaced, kept so nothing that was served is lost."""

    __tablename__ = "archived_chunks"

    version_id: str = Field(primary_key=True)
    fingerprint: str = Field(primary_key=True)  # the deployment whose chunker made them
    ordinal: int = Field(primary_key=True)
    chunk_id: str = Field(index=True)
    doc_id: str
    chunk_hash: str
    heading: str = ""
    text: str
    archived_at: datetime = _ts(default_factory=utcnow)
