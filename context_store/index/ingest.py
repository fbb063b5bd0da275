"""Sync, then index: the one way a change reaches the index, whoever noticed it.

Every path runs the same two steps per kind of state: ``sync_state`` versions the sources
(new versions, tombstones) and ``index_state`` chunks, embeds and writes what is pending.
The Dagster assets call them one step per asset; ``ingest`` runs both kinds whole (CLI,
benchmarks, tests); ``apply_changes`` runs them for the journal's unapplied rows (the warm
path and the sensors' refresh jobs); ``apply_company_paths`` for a few named files and
their documents only (staff answers, in the process that received them).
Each step is logged in ``ingest_runs`` when given a ``trigger``, so which path applied a
change leaves no trace in the result.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from context_store.index.documents import index_pending_documents
from context_store.index.embed.protocol import Embedder
from context_store.index.plan import IndexReport
from context_store.index.users import index_pending_users
from context_store.state.documents import CompanySyncReport, doc_ids_for, sync_company_sources
from context_store.state.journal import TRANSIENT_REASONS, coalesce, mark_applied, read_after, unapplied_ids
from context_store.state.user_state import UserSyncReport, sync_user_sources
from context_store.store.context_store import ContextStore
from context_store.store.models import ChangeEvent
from context_store.store.runs import FTS_DEFERRED, numeric_stats, track_run

__all__ = ["ApplyResult", "IngestReport", "apply_changes", "apply_company_paths", "index_state", "ingest", "sync_state"]

StateKind = Literal["company", "user"]


def sync_state(
    store: ContextStore, state_kind: StateKind, *, paths: Sequence[str | Path] | None = None, trigger: str | None = None
) -> CompanySyncReport | UserSyncReport:
    """Version one kind of state: every source, or only ``paths``. Logged as a ``version`` run when ``trigger`` is given."""
    sync = sync_company_sources if state_kind == "company" else sync_user_sources
    if trigger is None:
        return sync(store, paths=list(paths) if paths is not None else None)
    with track_run(store, state_kind, "version", trigger) as stats:
        report = sync(store, paths=list(paths) if paths is not None else None)
        stats.update(numeric_stats(report))
    return report


def index_state(
    store: ContextStore,
    embedder: Embedder,
    state_kind: StateKind,
    *,
    trigger: str | None = None,
    doc_ids: Sequence[str] | None = None,
    optimize: bool = True,
    wave_chunks: int | None = None,
    progress: Any = None,
) -> IndexReport:
    """Index what one kind of state has pending; logged as an ``index`` run when ``trigger`` is given.

    With ``optimize=False`` the run is marked ``fts_deferred``: its rows reach the full-text
    index at a later ``fts`` run (``index.lag.record_fts_coverage``). ``doc_ids`` limits a
    company run to those documents (a serving process indexes its own staff answers only).
    """

    def run() -> IndexReport:
        if state_kind == "user":
            return index_pending_users(store, embedder)
        return index_pending_documents(
            store, embedder, doc_ids=list(doc_ids) if doc_ids is not None else None, optimize=optimize,
            wave_chunks=wave_chunks, progress=progress,
        )

    if trigger is None:
        return run()
    with track_run(store, state_kind, "index", trigger) as stats:
        report = run()
        stats.update(numeric_stats(report))
        if not optimize:
            stats[FTS_DEFERRED] = 1
    return report


@dataclass
class IngestReport:
    """What one sync-then-index did, per kind of state (``None``: that kind was not touched)."""

    company: CompanySyncReport | None = None
    company_index: IndexReport | None = None
    users: UserSyncReport | None = None
    user_index: IndexReport | None = None

    @property
    def changed(self) -> int:
        c, u = self.company, self.users
        return (c.new + c.changed + c.deleted if c else 0) + (u.new + u.changed + u.deleted if u else 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "company": self.company.as_dict() if self.company else None,
            "company_index": self.company_index.as_dict() if self.company_index else None,
            "users": self.users.as_dict() if self.users else None,
            "user_index": self.user_index.as_dict() if self.user_index else None,
        }


def ingest(
    store: ContextStore,
    embedder: Embedder,
    *,
    company_paths: list[str | Path] | None = None,
    user_paths: list[str | Path] | None = None,
    progress: Any = None,
    trigger: str | None = None,
) -> IngestReport:
    """Both kinds of state, whole (or only the given paths), in one call."""
    report = IngestReport()
    report.company = sync_state(store, "company", paths=company_paths, trigger=trigger)  # type: ignore[assignment]
    report.company_index = index_state(store, embedder, "company", trigger=trigger, progress=progress)
    report.users = sync_state(store, "user", paths=user_paths, trigger=trigger)  # type: ignore[assignment]
    report.user_index = index_state(store, embedder, "user", trigger=trigger)
    return report


@dataclass
class ApplyResult(IngestReport):
    """An ``IngestReport`` for the journal rows one ``apply_changes`` call took."""

    cursor: int = 0
    applied_ids: list[int] = field(default_factory=list)
    full_scans: list[str] = field(default_factory=list)
    retry: list[ChangeEvent] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "cursor": self.cursor,
            "applied": len(self.applied_ids),
            "full_scans": self.full_scans,
            **super().as_dict(),
            "retry": [r.path for r in self.retry],
            "seconds": round(self.seconds, 3),
        }


def apply_changes(
    store: ContextStore,
    embedder: Embedder,
    *,
    cursor: int = 0,
    applied_by: str = "warm",
    trigger: str = "watch",
    optimize: bool = True,
    wave_chunks: int | None = None,
) -> ApplyResult:
    """Version and index every unapplied journal row after ``cursor``.

    Rows whose file could not be read for a transient reason come back in ``retry``.
    ``wave_chunks`` overrides ``index_wave_chunks``: smaller waves make the first files of a
    large batch retrievable while the rest still embed.
    """
    started = time.perf_counter()
    rows = read_after(store, cursor, unapplied_only=True)
    result = ApplyResult(cursor=max([cursor, *(int(r.id or 0) for r in rows)]))
    if not rows:
        return result
    batches = coalesce(rows)
    company = batches.get("company")
    if company is not None:
        if company.full_scan:
            result.full_scans.append("company")
        result.company = sync_state(store, "company", paths=company.sync_paths(), trigger=trigger)  # type: ignore[assignment]
        result.company_index = index_state(store, embedder, "company", trigger=trigger, optimize=optimize, wave_chunks=wave_chunks)
    users = batches.get("user")
    if users is not None:
        if users.full_scan:
            result.full_scans.append("user")
        result.users = sync_state(store, "user", paths=users.sync_paths(), trigger=trigger)  # type: ignore[assignment]
        result.user_index = index_state(store, embedder, "user", trigger=trigger)
    result.applied_ids = [int(r.id or 0) for r in rows]
    mark_applied(store, ids=result.applied_ids, by=applied_by)
    result.retry = _transient_failures(rows, result)
    result.seconds = time.perf_counter() - started
    return result


def apply_company_paths(
    store: ContextStore,
    embedder: Embedder,
    paths: Sequence[str | Path],
    *,
    applied_by: str = "warm",
    optimize: bool = False,
) -> ApplyResult:
    """Version these company files and index their documents only; mark their journal rows applied.

    For a small writer beside a running ingest (a serving process indexing the staff answers
    it received): the ingest's backlog is the ingest's work, and compaction too (hence
    ``optimize=False``). Rows journaled for these paths before the sync are marked applied
    (by ``applied_by``), so the sensors find nothing left to do for them.
    """
    started = time.perf_counter()
    result = ApplyResult()
    if not paths:
        return result
    result.applied_ids = unapplied_ids(store, paths, state_kind="company")  # read first: later rows may be later changes
    result.cursor = max(result.applied_ids, default=0)
    result.company = sync_state(store, "company", paths=paths)  # type: ignore[assignment]
    own = doc_ids_for(store.settings, paths) + result.company.changed_doc_ids
    result.company_index = index_state(store, embedder, "company", doc_ids=own, optimize=optimize)
    mark_applied(store, ids=result.applied_ids, by=applied_by)
    result.seconds = time.perf_counter() - started
    return result


def _transient_failures(rows: Sequence[ChangeEvent], result: ApplyResult) -> list[ChangeEvent]:
    skipped: set[str] = set()
    for report in (result.company, result.users):
        for item in report.skipped_inputs if report else []:
            if item["reason"] in TRANSIENT_REASONS:
                path = item["path"]
                skipped.add(path if Path(path).exists() else path.rsplit(":", 1)[0])
    latest: dict[str, ChangeEvent] = {}
    for row in rows:
        if row.path in skipped and row.event != "rescan":
            latest[row.path] = row
    return list(latest.values())
