"""SQLModel tables: the system of record. LanceDB only ever holds a projection of these.

Company state and user state are versioned in separate tables. A version is never
updated in place except to close it (``valid_to``) or to stamp when it was indexed, so
"what did the knowledge base say at time T" is a query, not an archaeology project.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from sqlalchemy import JSON, Column, DateTime, Index, LargeBinary, TypeDecorator, text
from sqlmodel import Field, SQLModel

from context_store._common import as_utc, utcnow

__all__ = [
    "ChangeEvent",
    "ChunkRecord",
    "Document",
    "DocumentVersion",
    "EmbeddingCacheEntry",
    "EvaluationRun",
    "ArchivedChunk",
    "IndexDeployment",
    "PromotionDecision",
    "AskedQuestion",
    "IngestRun",
    "LineageLock",
    "OutboxMessage",
    "QuestionAsk",
    "RoutedQuestion",
    "StaffAnswer",
    "WebhookDelivery",
    "RetrievalTrace",
    "SkippedInput",
    "UserRecord",
    "UserSnapshotVersion",
    "VersionLag",
]


class UTCDateTime(TypeDecorator):
    """Stores UTC, returns aware UTC datetimes on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect: Any) -> Optional[datetime]:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Optional[datetime], dialect: Any) -> Optional[datetime]:
        if value is None:
            return None
        return as_utc(value)


def _ts(**kwargs: Any) -> Any:
    index = kwargs.pop("index", False)
    return Field(sa_column=Column(UTCDateTime(), index=index, nullable=kwargs.pop("nullable", True)), **kwargs)


def _json(**kwargs: Any) -> Any:
    return Field(sa_column=Column(JSON, nullable=True), **kwargs)


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


class IngestRun(SQLModel, table=True):
    __tablename__ = "ingest_runs"

    id: Optional[int] = Field(default=None, primary_key=True)
    state_kind: str = Field(index=True)
    stage: str
    trigger: str = "cli"
    started_at: datetime = _ts(default_factory=utcnow)
    finished_at: Optional[datetime] = _ts(default=None)
    status: str = "running"
    stats: Optional[dict] = _json(default=None)


# --- scaleout: concurrent writers on one database ---


class LineageLock(SQLModel, table=True):
    """One row per state lineage; writers lock it for the length of a transaction.

    See ``database.lineage_lock``. ``holder``/``acquired_at`` tell who wrote last, which is
    what a person looking at a stuck deployment wants to know.
    """

    __tablename__ = "lineage_locks"

    name: str = Field(primary_key=True)  # company | user
    holder: str
    acquired_at: datetime = _ts(default_factory=utcnow)


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
# --- routing and learning (issue 5) ---


class AskedQuestion(SQLModel, table=True):
    """Every question the routing policy assessed: the memory behind repeat contact and the routing metrics."""

    __tablename__ = "asked_questions"

    id: Optional[int] = Field(default=None, primary_key=True)
    user_id: Optional[str] = Field(default=None, index=True)
    conversation_id: Optional[str] = None
    text: str
    model: str
    vector: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    asked_at: datetime = _ts(default_factory=utcnow, index=True)
    decision: Optional[str] = Field(default=None, index=True)  # answer | escalate
    confidence: Optional[float] = None
    reasons: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    top_doc_id: Optional[str] = None
    top_kind: Optional[str] = None
    question_id: Optional[str] = Field(default=None, index=True)
    trace_id: Optional[str] = None


class RoutedQuestion(SQLModel, table=True):
    """An escalated question and its working memory, so nobody asks the user to repeat it.

    Lifecycle: open -> answered -> closed, or open -> dismissed. Near-duplicates of an open
    question become further ``QuestionAsk`` rows of it instead of new questions.
    """

    __tablename__ = "routed_questions"

    question_id: str = Field(primary_key=True)
    status: str = Field(default="open", index=True)
    # escalation: respond() decided a person should answer; handoff: the agent pressed the red button
    kind: str = Field(default="escalation", index=True)
    text: str
    user_id: Optional[str] = Field(default=None, index=True)
    user_version_id: Optional[str] = None
    conversation_id: Optional[str] = None
    trace_id: Optional[str] = None
    confidence: Optional[float] = None
    reasons: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    context: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    user_state: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    model: str = ""
    vector: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    ask_count: int = 1
    owner: Optional[str] = None
    created_at: datetime = _ts(default_factory=utcnow, index=True)
    updated_at: datetime = _ts(default_factory=utcnow)
    answered_at: Optional[datetime] = _ts(default=None)
    closed_at: Optional[datetime] = _ts(default=None)
    resolution_note: Optional[str] = None
    transcript: Optional[list] = _json(default=None)  # the conversation's turns [{role, text, at}], shown to staff


class QuestionAsk(SQLModel, table=True):
    """One person asking a routed question (the first ask and every near-duplicate grouped with it)."""

    __tablename__ = "question_asks"

    id: Optional[int] = Field(default=None, primary_key=True)
    question_id: str = Field(foreign_key="routed_questions.question_id", index=True)
    text: str
    user_id: Optional[str] = Field(default=None, index=True)
    user_version_id: Optional[str] = None
    conversation_id: Optional[str] = None
    trace_id: Optional[str] = None
    similarity: float = 1.0
    reasons: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    asked_at: datetime = _ts(default_factory=utcnow)


class StaffAnswer(SQLModel, table=True):
    """A staff reply, stored before anything else happens; it then becomes a document."""

    __tablename__ = "staff_answers"

    answer_id: str = Field(primary_key=True)
    question_id: str = Field(foreign_key="routed_questions.question_id", unique=True)
    author: str
    text: str
    channel: str = "webhook"  # webhook | staff_page | api
    webhook_id: Optional[str] = None
    received_at: datetime = _ts(default_factory=utcnow)
    source_versions: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    doc_id: Optional[str] = Field(default=None, index=True)
    file_path: Optional[str] = None
    written_at: Optional[datetime] = _ts(default=None)
    retrievable_at: Optional[datetime] = _ts(default=None)
    needs_review: bool = Field(default=False, index=True)
    review_reason: Optional[str] = None
    flagged_at: Optional[datetime] = _ts(default=None)


class WebhookDelivery(SQLModel, table=True):
    """Each accepted inbound webhook id, kept so a retry days later is still recognised."""

    __tablename__ = "webhook_deliveries"

    webhook_id: str = Field(primary_key=True)
    endpoint: str
    received_at: datetime = _ts(default_factory=utcnow, index=True)
    body_sha256: str
    status_code: int
    response: Optional[dict] = _json(default=None)


class OutboxMessage(SQLModel, table=True):
    """An outbound notification, persisted before it is sent and retried with backoff."""

    __tablename__ = "outbox"

    id: Optional[int] = Field(default=None, primary_key=True)
    message_id: str = Field(unique=True)
    event_type: str
    url: str
    payload: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="pending", index=True)  # pending | delivered | dead
    attempts: int = 0
    next_attempt_at: datetime = _ts(default_factory=utcnow, index=True)
    last_error: Optional[str] = None
    last_status: Optional[int] = None
    created_at: datetime = _ts(default_factory=utcnow)
    delivered_at: Optional[datetime] = _ts(default=None)


# --- retrieval API ---


class RetrievalTrace(SQLModel, table=True):
    """The evidence trail of one retrieval response: what was asked, what was served, why.

    Texts are not copied: each served chunk is named by document version, chunk id and
    hashes, and versions are never deleted, so ``traces.replay`` can show the exact text.
    """

    __tablename__ = "retrieval_traces"

    trace_id: str = Field(primary_key=True)
    created_at: datetime = _ts(default_factory=utcnow, index=True)
    query: str
    user_id: Optional[str] = Field(default=None, index=True)
    user_version_id: Optional[str] = None
    k: int
    mode: str
    as_of: Optional[datetime] = _ts(default=None)
    filters: Optional[dict] = _json(default=None)
    model: str
    table_versions: Optional[dict] = _json(default=None)
    dense_snapshot_version: Optional[int] = None
    confidence: float
    confidence_source: str
    threshold: float
    features: Optional[dict] = _json(default=None)
    decision: str = Field(index=True)
    reasons: Optional[list] = _json(default=None)
    results: Optional[list] = _json(default=None)
    user_facts: Optional[list] = _json(default=None)
    latency_ms: Optional[float] = None
    client: Optional[str] = None  # a fingerprint of the API key, never the key
    conversation_id: Optional[str] = Field(default=None, index=True)  # a handoff finds its conversation's last response
    history: Optional[list] = _json(default=None)  # the turns the agent sent with the question [{role, text, at}]


# --- freshness (change journal, per-version lag) ---


class ChangeEvent(SQLModel, table=True):
    """One file event seen by the watcher (or a rescan request), in arrival order.

    ``id`` is the cursor sensors and the warm path read after. ``fingerprint`` makes appends
    idempotent: the same file state (path, mtime, ctime, size) is journaled once however many
    times editors, restarts or duplicate notifications report it.
    """

    __tablename__ = "change_journal"

    id: Optional[int] = Field(default=None, primary_key=True)
    state_kind: str = Field(index=True)  # company | user
    source_name: str
    path: str = Field(index=True)
    event: str  # changed | deleted | rescan | retry
    seen_at: datetime = _ts(default_factory=utcnow, index=True)
    source_mtime: Optional[datetime] = _ts(default=None)
    size: Optional[int] = None
    fingerprint: str = Field(unique=True)
    applied_at: Optional[datetime] = _ts(default=None, index=True)
    applied_by: Optional[str] = None  # warm | dagster | reconcile


class VersionLag(SQLModel, table=True):
    """The timeline of one indexed version: source change → observed → embedded → committed → full-text.

    ``lag_seconds`` = committed − source change. ``backfill`` marks versions of files that
    changed before the store first looked at its sources: their lag says nothing about the
    pipeline and is left out of percentiles.
    """

    __tablename__ = "version_lags"

    version_id: str = Field(primary_key=True)
    state_kind: str = Field(index=True)
    key: str = Field(index=True)  # doc_id or user_id
    source_path: str
    source_changed_at: datetime = _ts()
    observed_at: datetime = _ts()
    embedded_at: Optional[datetime] = _ts(default=None)
    committed_at: datetime = _ts(index=True)
    fts_indexed_at: Optional[datetime] = _ts(default=None)
    lag_seconds: float
    backfill: bool = False
    clock_skew: bool = False


# --- quality (evaluation history, which index serves, promotion decisions) ---


class EvaluationRun(SQLModel, table=True):
    """One evaluation of one labelled set (or one report) against one index: the history plots read."""

    __tablename__ = "evaluation_runs"

    id: Optional[int] = Field(default=None, primary_key=True)
    kind: str = Field(index=True)  # retrieval | routing | learning | gate
    set_name: str = Field(index=True)
    created_at: datetime = _ts(default_factory=utcnow, index=True)
    index_fingerprint: str = ""
    model: str = ""
    table_version: Optional[int] = None
    passed: Optional[bool] = None
    trigger: str = "cli"
    metrics: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    details: Optional[dict] = _json(default=None)


class IndexDeployment(SQLModel, table=True):
    """A LanceDB table pair built with one (model, chunker): serving, candidate, retired or rejected."""

    __tablename__ = "index_deployments"

    fingerprint: str = Field(primary_key=True)
    model: str
    chunking: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    company_table: str
    user_table: str
    status: str = Field(default="candidate", index=True)  # serving | candidate | retired | rejected
    created_at: datetime = _ts(default_factory=utcnow)
    built_at: Optional[datetime] = _ts(default=None)
    promoted_at: Optional[datetime] = _ts(default=None)
    retired_at: Optional[datetime] = _ts(default=None)


class PromotionDecision(SQLModel, table=True):
    """Why a candidate index was (not) switched to, with both sides' numbers."""

    __tablename__ = "promotion_decisions"

    id: Optional[int] = Field(default=None, primary_key=True)
    decided_at: datetime = _ts(default_factory=utcnow, index=True)
    live_fingerprint: str
    candidate_fingerprint: str
    decision: str  # promoted | rejected
    reason: str
    live_metrics: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    candidate_metrics: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    trigger: str = "cli"


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
