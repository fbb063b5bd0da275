"""How the store is run: ingest runs, lineage locks, the change journal, what the pipeline last
saw of each source file, per-version lag timelines, evaluation history, which index deployment serves, and promotion decisions."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

from sqlalchemy import JSON, BigInteger, Column
from sqlmodel import Field, SQLModel

from context_store._common import utcnow
from context_store.store.models._columns import _json, _ts

__all__ = [
    "ChangeEvent",
    "EvaluationRun",
    "IndexDeployment",
    "IngestRun",
    "LineageLock",
    "PromotionDecision",
    "SourceObservation",
    "VersionLag",
]


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


class SourceObservation(SQLModel, table=True):
    """The state (mtime, size) of one source file when a sync last read it.

    A file whose ``stat`` differs from this row, a file with no row, and a row whose file is
    gone are changes the pipeline has not observed (``state.observed.unobserved_changes``):
    a stat per file finds them, no hashing. Rows are written by the syncs alone.
    """

    __tablename__ = "source_observations"

    path: str = Field(primary_key=True)  # as the sync lists it: <root as configured>/<path inside>
    state_kind: str  # company | user
    source_name: str = Field(index=True)
    mtime_ns: int = Field(sa_column=Column(BigInteger, nullable=False))
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    observed_at: datetime = _ts()


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
