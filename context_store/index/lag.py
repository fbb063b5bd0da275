"""Lag timelines: when each indexed version's change happened, was seen, embedded, committed, searchable.

Every indexed version gets a timeline in ``version_lags``: source change → observed →
embedded → committed to LanceDB → covered by the full-text index. Everything is derived
from rows the pipeline writes anyway (version rows, the embedding cache's ``created_at``,
the ``ingest_runs`` log), so the timeline is the same whichever path — Dagster run, warm
watcher, CLI — applied the change, and ``record_lags`` can run at any time after the fact.

The source change time is the file's mtime, clamped into the window in which the change
can have happened: not before we last looked at that document (a copy that keeps an old
mtime must not inflate the lag), not after we observed it (a clock running ahead). Files
that changed before the store first scanned its sources are *backfill*: their lag
measures the project's age, not the pipeline, and is left out of percentiles.

The index layer writes these rows (the warm path records them right after a commit);
``context_store.measure.freshness`` reads them.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select, update

from context_store._common import as_utc
from context_store.store.context_store import ContextStore
from context_store.store.database import in_batches
from context_store.store.models import (
    ChangeEvent,
    ChunkRecord,
    DocumentVersion,
    EmbeddingCacheEntry,
    IngestRun,
    UserSnapshotVersion,
    VersionLag,
)
from context_store.store.runs import FTS_DEFERRED, STAGE_FTS

__all__ = ["previous_observed", "record_fts_coverage", "record_lags"]

# (started, finished) of ingest runs
_Runs = list[tuple[datetime, datetime]]


def _first_scan(session: Session, state_kind: str) -> datetime | None:
    return as_utc(
        session.exec(
            select(func.min(IngestRun.started_at)).where(IngestRun.state_kind == state_kind, IngestRun.stage == "version")
        ).one()
    )


def _fts_runs(session: Session, state_kind: str, since: datetime) -> tuple[_Runs, _Runs]:
    """(index runs that folded their own rows into the full-text index, later ``fts`` runs), as (started, finished)."""
    rows = session.exec(
        select(IngestRun.stage, IngestRun.started_at, IngestRun.finished_at, IngestRun.stats).where(
            IngestRun.state_kind == state_kind,
            col(IngestRun.stage).in_(["index", STAGE_FTS]),
            IngestRun.status == "succeeded",
            col(IngestRun.finished_at) >= since,
        )
    ).all()
    index = [(as_utc(s), as_utc(f)) for stage, s, f, stats in rows if stage == "index" and s and f and not (stats or {}).get(FTS_DEFERRED)]
    fts = sorted((as_utc(s), as_utc(f)) for stage, s, f, _ in rows if stage == STAGE_FTS and s and f)
    return index, fts  # type: ignore[return-value]


def previous_observed(session: Session, model: Any, key_col: Any, keys: set[str]) -> dict[str, list[datetime]]:
    """Per document (or user) id, every time a version of it was observed, oldest first."""
    out: dict[str, list[datetime]] = {}
    for part in in_batches(sorted(keys)):
        for key, observed in session.exec(select(key_col, model.observed_at).where(col(key_col).in_(part))).all():
            out.setdefault(key, []).append(as_utc(observed))
    for values in out.values():
        values.sort()
    return out


def _window_start(history: list[datetime], observed: datetime, first_scan: datetime | None) -> datetime | None:
    earlier = [t for t in history if t < observed]
    return earlier[-1] if earlier else first_scan


def _timeline(
    version_id: str, kind: str, key: str, path: str, mtime: datetime | None, observed: datetime,
    committed: datetime, embedded: datetime | None, fts: datetime | None, lower: datetime | None, first_scan: datetime | None,
) -> VersionLag:
    changed = mtime or observed
    skew = changed > observed
    if skew:
        changed = observed
    backfill = lower is None or (first_scan is not None and lower <= first_scan and changed < first_scan)
    if lower is not None and changed < lower and not backfill:
        changed = lower
    return VersionLag(
        version_id=version_id, state_kind=kind, key=key, source_path=path, source_changed_at=changed,
        observed_at=observed, embedded_at=embedded, committed_at=committed, fts_indexed_at=fts,
        lag_seconds=max(0.0, (committed - changed).total_seconds()), backfill=backfill, clock_skew=skew,
    )


def _covering_run(runs: tuple[_Runs, _Runs], at: datetime) -> datetime | None:
    index, fts = runs
    # index_pending_documents optimizes (folds new rows into the full-text index) before it
    # returns, unless the run deferred that to a later fts run (the warm path, when idle)
    for started, finished in index:
        if started <= at <= finished:
            return finished
    # an optimize that started before the commit read the table without it
    return next((finished for started, finished in fts if started >= at), None)


def record_fts_coverage(store: ContextStore, *, started: datetime, finished: datetime, state_kind: str = "company") -> int:
    """An ``fts`` run that started at ``started`` covered every version committed before it:
    fill in their timelines' ``fts_indexed_at`` (recorded before the run, so still empty)."""
    with store.session() as session:
        result = session.execute(
            update(VersionLag)
            .where(
                VersionLag.state_kind == state_kind,
                col(VersionLag.fts_indexed_at).is_(None),
                col(VersionLag.committed_at) <= started,
            )
            .values(fts_indexed_at=finished)
        )
        return int(result.rowcount or 0)


def _unrecorded(session: Session, query: Any, owner: Any, owners: Collection[str] | None) -> list[Any]:
    """The rows of ``query`` (indexed versions without a timeline), of ``owners`` only when given."""
    if owners is None:
        return list(session.exec(query).all())
    return [row for part in in_batches(sorted(owners)) for row in session.exec(query.where(col(owner).in_(part))).all()]


def _company_timelines(session: Session, recorded: Any, doc_ids: Collection[str] | None) -> int:
    docs = _unrecorded(session, select(
        DocumentVersion.version_id, DocumentVersion.doc_id, DocumentVersion.source_path,
        DocumentVersion.source_mtime, DocumentVersion.observed_at, DocumentVersion.indexed_at,
    ).where(col(DocumentVersion.indexed_at).is_not(None), col(DocumentVersion.version_id).not_in(recorded)), DocumentVersion.doc_id, doc_ids)
    if not docs:
        return 0
    first = _first_scan(session, "company")
    history = previous_observed(session, DocumentVersion, DocumentVersion.doc_id, {d[1] for d in docs})
    embedded = _embedded_at(session, [d[0] for d in docs])
    runs = _fts_runs(session, "company", min(as_utc(d[5]) for d in docs))  # type: ignore[type-var]
    for vid, doc_id, path, mtime, observed, indexed in docs:
        observed, indexed = as_utc(observed), as_utc(indexed)
        emb = embedded.get(vid)
        session.add(
            _timeline(
                vid, "company", doc_id, path, as_utc(mtime), observed, indexed,  # type: ignore[arg-type]
                emb if emb is not None and emb >= observed else None,  # type: ignore[operator]
                _covering_run(runs, indexed), _window_start(history.get(doc_id, []), observed, first), first,  # type: ignore[arg-type]
            )
        )
    return len(docs)


def _user_timelines(session: Session, recorded: Any, user_ids: Collection[str] | None) -> int:
    users = _unrecorded(session, select(
        UserSnapshotVersion.version_id, UserSnapshotVersion.user_id, UserSnapshotVersion.source_path,
        UserSnapshotVersion.observed_at, UserSnapshotVersion.indexed_at,
    ).where(col(UserSnapshotVersion.indexed_at).is_not(None), col(UserSnapshotVersion.version_id).not_in(recorded)), UserSnapshotVersion.user_id, user_ids)
    if not users:
        return 0
    first = _first_scan(session, "user")
    history = previous_observed(session, UserSnapshotVersion, UserSnapshotVersion.user_id, {u[1] for u in users})
    for vid, user_id, path, observed, indexed in users:
        observed, indexed = as_utc(observed), as_utc(indexed)
        mtime = _user_source_time(session, path, observed)  # type: ignore[arg-type]
        session.add(
            _timeline(
                vid, "user", user_id, path, mtime, observed, indexed, None, None,  # type: ignore[arg-type]
                _window_start(history.get(user_id, []), observed, first), first,  # type: ignore[arg-type]
            )
        )
    return len(users)


def record_lags(store: ContextStore, *, doc_ids: Collection[str] | None = None, user_ids: Collection[str] | None = None) -> int:
    """Write the timeline of every indexed version that has none yet; returns rows written.

    ``doc_ids`` / ``user_ids`` limit that kind to the versions of these documents / users (what
    one apply indexed): looking through every version costs a warm apply 37 ms at 50,000
    documents, and grows with the corpus, not with the change.
    """
    with store.session() as session:
        recorded = select(VersionLag.version_id)
        return _company_timelines(session, recorded, doc_ids) + _user_timelines(session, recorded, user_ids)


def _embedded_at(session: Session, version_ids: list[str]) -> dict[str, datetime]:
    out: dict[str, datetime] = {}
    for part in in_batches(version_ids):
        for vid, created in session.exec(
            select(ChunkRecord.version_id, func.max(EmbeddingCacheEntry.created_at))
            .join(EmbeddingCacheEntry, col(EmbeddingCacheEntry.chunk_hash) == col(ChunkRecord.chunk_hash))
            .where(col(ChunkRecord.version_id).in_(part))
            .group_by(ChunkRecord.version_id)
        ).all():
            if created is not None:
                out[vid] = as_utc(created)  # type: ignore[assignment]
    return out


def _user_source_time(session: Session, path: str, observed: datetime) -> datetime | None:
    """A snapshot file's change time: its mtime if it has not changed since, else the journal's."""
    try:
        mtime = datetime.fromtimestamp(Path(path).stat().st_mtime, tz=timezone.utc)
        if mtime <= observed:
            return mtime
    except OSError:
        pass
    journaled = session.exec(
        select(ChangeEvent.source_mtime)
        .where(ChangeEvent.path == str(Path(path).resolve()), col(ChangeEvent.seen_at) <= observed, col(ChangeEvent.source_mtime).is_not(None))
        .order_by(col(ChangeEvent.id).desc())
        .limit(1)
    ).first()
    return as_utc(journaled)
