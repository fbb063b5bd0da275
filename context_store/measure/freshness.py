"""How stale is the context? Per-version lag, unindexed changes, user-state age, stale hits.

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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select, update

from context_store._common import as_utc, percentile, utcnow
from context_store.index.indexing import pending_documents
from context_store.store.context_store import ContextStore
from context_store.store.models import (
    ChangeEvent,
    ChunkRecord,
    Document,
    DocumentVersion,
    EmbeddingCacheEntry,
    IngestRun,
    RetrievalTrace,
    UserRecord,
    UserSnapshotVersion,
    VersionLag,
)
from context_store.store.runs import FTS_DEFERRED, STAGE_FTS

__all__ = [
    "CheckOutcome",
    "FreshnessReport",
    "LagStats",
    "ServedResult",
    "StaleHit",
    "StaleHitReport",
    "evaluate_checks",
    "freshness_report",
    "lag_stats",
    "reconciliation_diff",
    "record_fts_coverage",
    "record_lags",
    "served_stale_hits",
    "stale_hit_rate",
    "stale_hits",
    "stalest_documents",
    "unindexed_changes",
    "user_state_ages",
]


# --- per-version timelines -------------------------------------------------------------------


def _first_scan(session: Session, state_kind: str) -> datetime | None:
    return as_utc(
        session.exec(
            select(func.min(IngestRun.started_at)).where(IngestRun.state_kind == state_kind, IngestRun.stage == "version")
        ).one()
    )


def _fts_runs(session: Session, state_kind: str, since: datetime) -> tuple[list[tuple[datetime, datetime]], list[tuple[datetime, datetime]]]:
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


def _previous_observed(session: Session, model: Any, key_col: Any, keys: set[str]) -> dict[str, list[datetime]]:
    out: dict[str, list[datetime]] = {}
    key_list = sorted(keys)
    for start in range(0, len(key_list), 900):
        for key, observed in session.exec(
            select(key_col, model.observed_at).where(col(key_col).in_(key_list[start : start + 900]))
        ).all():
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


def _covering_run(runs: tuple[list[tuple[datetime, datetime]], list[tuple[datetime, datetime]]], at: datetime) -> datetime | None:
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


def record_lags(store: ContextStore) -> int:
    """Write the timeline of every indexed version that has none yet; returns rows written."""
    written = 0
    with store.session() as session:
        recorded = select(VersionLag.version_id)
        docs = session.exec(
            select(
                DocumentVersion.version_id, DocumentVersion.doc_id, DocumentVersion.source_path,
                DocumentVersion.source_mtime, DocumentVersion.observed_at, DocumentVersion.indexed_at,
            ).where(col(DocumentVersion.indexed_at).is_not(None), col(DocumentVersion.version_id).not_in(recorded))
        ).all()
        if docs:
            first = _first_scan(session, "company")
            history = _previous_observed(session, DocumentVersion, DocumentVersion.doc_id, {d[1] for d in docs})
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
                written += 1
        users = session.exec(
            select(
                UserSnapshotVersion.version_id, UserSnapshotVersion.user_id, UserSnapshotVersion.source_path,
                UserSnapshotVersion.observed_at, UserSnapshotVersion.indexed_at,
            ).where(col(UserSnapshotVersion.indexed_at).is_not(None), col(UserSnapshotVersion.version_id).not_in(recorded))
        ).all()
        if users:
            first = _first_scan(session, "user")
            history = _previous_observed(session, UserSnapshotVersion, UserSnapshotVersion.user_id, {u[1] for u in users})
            for vid, user_id, path, observed, indexed in users:
                observed, indexed = as_utc(observed), as_utc(indexed)
                mtime = _user_source_time(session, path, observed)  # type: ignore[arg-type]
                session.add(
                    _timeline(
                        vid, "user", user_id, path, mtime, observed, indexed, None, None,  # type: ignore[arg-type]
                        _window_start(history.get(user_id, []), observed, first), first,  # type: ignore[arg-type]
                    )
                )
                written += 1
    return written


def _embedded_at(session: Session, version_ids: list[str]) -> dict[str, datetime]:
    out: dict[str, datetime] = {}
    for start in range(0, len(version_ids), 900):
        part = version_ids[start : start + 900]
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


# --- lag, backlog, user age ------------------------------------------------------------------


@dataclass
class LagStats:
    state_kind: str
    count: int
    p50_s: float | None
    p95_s: float | None
    max_s: float | None
    backfill: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lag_stats(store: ContextStore, state_kind: str, *, since: datetime | None = None) -> LagStats:
    """Lag percentiles of versions committed since ``since`` (backfill left out, but counted)."""
    with store.session() as session:
        query = select(VersionLag.lag_seconds, VersionLag.backfill).where(VersionLag.state_kind == state_kind)
        if since is not None:
            query = query.where(col(VersionLag.committed_at) >= since)
        rows = session.exec(query).all()
    lags = [lag for lag, backfill in rows if not backfill]
    return LagStats(
        state_kind, len(lags), percentile(lags, 50), percentile(lags, 95), max(lags) if lags else None,
        backfill=sum(1 for _, b in rows if b),
    )


@dataclass
class UnindexedChange:
    state_kind: str
    what: str  # a path, a doc id or a user id
    since: datetime
    via: str  # journal | store


@dataclass
class UnindexedReport:
    count: int
    oldest_since: datetime | None
    oldest_age_s: float | None
    items: list[UnindexedChange] = field(default_factory=list)


def unindexed_changes(store: ContextStore, *, now: datetime | None = None) -> UnindexedReport:
    """Changes whose current text is not retrievable yet.

    Two places hold them: journal rows no path has applied yet (seen, not versioned), and
    versions written but not yet committed to LanceDB (versioned, not indexed).
    """
    now = now or utcnow()
    found: dict[tuple[str, str], UnindexedChange] = {}
    roots = {s.name: Path(s.path).resolve() for s in store.settings.company_sources}
    with store.session() as session:
        for kind, path, seen in session.exec(
            select(ChangeEvent.state_kind, ChangeEvent.path, func.min(ChangeEvent.seen_at))
            .where(col(ChangeEvent.applied_at).is_(None))
            .group_by(ChangeEvent.state_kind, ChangeEvent.path)
        ).all():
            found[(kind, path)] = UnindexedChange(kind, path, as_utc(seen), "journal")  # type: ignore[arg-type]
        for doc in pending_documents(session):
            version = session.get(DocumentVersion, doc.current_version_id) if doc.current_version_id else None
            since = version.observed_at if version else doc.deleted_at
            path = version.source_path if version else str(roots.get(doc.source_name, Path("?")) / doc.rel_path)
            item = UnindexedChange("company", path, as_utc(since) or now, "store")
            found.setdefault(("company", path), item)
        for user in session.exec(
            select(UserRecord).where(
                (col(UserRecord.current_version_id) != col(UserRecord.indexed_version_id))
                | (col(UserRecord.current_version_id).is_(None) & col(UserRecord.indexed_version_id).is_not(None))
                | (col(UserRecord.current_version_id).is_not(None) & col(UserRecord.indexed_version_id).is_(None))
            )
        ).all():
            version = session.get(UserSnapshotVersion, user.current_version_id) if user.current_version_id else None
            since = version.observed_at if version else user.deleted_at
            found.setdefault(("user", user.user_id), UnindexedChange("user", user.user_id, as_utc(since) or now, "store"))
    items = sorted(found.values(), key=lambda i: i.since)
    oldest = items[0].since if items else None
    return UnindexedReport(len(items), oldest, (now - oldest).total_seconds() if oldest else None, items)


@dataclass
class UserAgeReport:
    current: int
    max_age_hours: float
    stale: list[tuple[str, float]]  # (user_id, age in hours), oldest first
    oldest_age_hours: float | None


def user_state_ages(store: ContextStore, *, now: datetime | None = None, max_age_hours: float | None = None) -> UserAgeReport:
    now = now or utcnow()
    limit = store.settings.user_state_max_age_hours if max_age_hours is None else max_age_hours
    with store.session() as session:
        rows = session.exec(
            select(UserSnapshotVersion.user_id, UserSnapshotVersion.captured_at).join(
                UserRecord, col(UserRecord.current_version_id) == col(UserSnapshotVersion.version_id)
            )
        ).all()
    ages = sorted(((uid, (now - as_utc(cap)).total_seconds() / 3600) for uid, cap in rows), key=lambda x: -x[1])  # type: ignore[operator]
    return UserAgeReport(len(ages), limit, [a for a in ages if a[1] > limit], ages[0][1] if ages else None)


def stalest_documents(store: ContextStore, *, now: datetime | None = None, limit: int = 5) -> list[dict[str, Any]]:
    """Current documents whose served text trails (or trailed) their source the longest.

    A pending document trails by ``now − source change`` and counts as it stands; an indexed
    one by the lag recorded for its current version.
    """
    now = now or utcnow()
    rows: list[dict[str, Any]] = []
    with store.session() as session:
        for doc_id, lag, changed, committed in session.exec(
            select(Document.doc_id, VersionLag.lag_seconds, VersionLag.source_changed_at, VersionLag.committed_at)
            .join(VersionLag, col(VersionLag.version_id) == col(Document.current_version_id))
            .where(col(Document.indexed_version_id) == col(Document.current_version_id), col(VersionLag.backfill).is_(False))
            .order_by(col(VersionLag.lag_seconds).desc())
            .limit(limit)
        ).all():
            rows.append({"doc_id": doc_id, "state": "indexed", "lag_s": round(lag, 3), "source_changed_at": as_utc(changed), "committed_at": as_utc(committed)})
        for doc in pending_documents(session):
            version = session.get(DocumentVersion, doc.current_version_id) if doc.current_version_id else None
            changed = as_utc((version.source_mtime or version.observed_at) if version else doc.deleted_at) or now
            rows.append({"doc_id": doc.doc_id, "state": "pending", "lag_s": round((now - changed).total_seconds(), 3), "source_changed_at": changed, "committed_at": None})
    return sorted(rows, key=lambda r: -r["lag_s"])[:limit]


# --- reconciliation ----------------------------------------------------------------------------


def reconciliation_diff(store: ContextStore, since: datetime) -> dict[str, Any]:
    """What a full re-hash that started at ``since`` changed, and how much of it the journal missed.

    A difference is a version written or a document/user ended since ``since``. It was
    *missed by the journal* when no journal row names its path between our previous look at
    it and now: the watcher was down, the mount gives no events, or someone edited behind us.
    """
    out: dict[str, Any] = {}
    missed: list[str] = []
    with store.session() as session:
        for kind, model, key_col, ended_model, ended_key in (
            ("company", DocumentVersion, DocumentVersion.doc_id, Document, Document.doc_id),
            ("user", UserSnapshotVersion, UserSnapshotVersion.user_id, UserRecord, UserRecord.user_id),
        ):
            fresh = session.exec(
                select(key_col, model.source_path, model.observed_at).where(col(model.observed_at) >= since)
            ).all()
            history = _previous_observed(session, model, key_col, {k for k, _, _ in fresh})
            journaled = _journal_times(session, {str(Path(p).resolve()) for _, p, _ in fresh})

            def was_journaled(path: str, after: datetime | None) -> bool:
                return any(after is None or t >= after for t in journaled.get(str(Path(path).resolve()), []))

            new = changed = 0
            for key, path, observed in fresh:
                prior = [t for t in history.get(key, []) if t < as_utc(observed)]  # type: ignore[operator]
                new, changed = (new, changed + 1) if prior else (new + 1, changed)
                if not was_journaled(path, prior[-1] if prior else None):
                    missed.append(f"{kind}:{key}")
            ended = session.exec(
                select(ended_key).where(col(ended_model.deleted_at) >= since, col(ended_model.current_version_id).is_(None))
            ).all()
            out[f"{kind}_new"], out[f"{kind}_changed"], out[f"{kind}_deleted"] = new, changed, len(ended)
    out["differences"] = sum(v for k, v in out.items() if k.endswith(("_new", "_changed", "_deleted")))
    out["missed_by_journal"] = len(missed)
    out["missed_sample"] = missed[:20]
    return out


def _journal_times(session: Session, paths: set[str]) -> dict[str, list[datetime]]:
    out: dict[str, list[datetime]] = {}
    ordered = sorted(paths)
    for start in range(0, len(ordered), 900):
        for path, seen in session.exec(
            select(ChangeEvent.path, ChangeEvent.seen_at).where(
                col(ChangeEvent.path).in_(ordered[start : start + 900]), ChangeEvent.event != "rescan"
            )
        ).all():
            out.setdefault(path, []).append(as_utc(seen))  # type: ignore[arg-type]
    return out


# --- stale hits --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServedResult:
    """One result the API served: the version it quoted and when."""

    version_id: str
    served_at: datetime


@dataclass(frozen=True)
class StaleHit:
    version_id: str
    state_kind: str
    key: str
    served_at: datetime
    superseded_at: datetime


@dataclass
class StaleHitReport:
    served: int
    stale: int
    unknown: int
    rate: float | None
    start: datetime | None = None
    end: datetime | None = None
    hits: list[StaleHit] = field(default_factory=list)
    traces: int = 0  # responses read (served_stale_hits); 0 when fed served results directly
    as_of_traces: int = 0  # point-in-time responses: asked for an old version, so never a stale hit
    capped: bool = False  # the window held more traces than were read

    def as_dict(self, *, hits: int = 20) -> dict[str, Any]:
        return {
            "served_results": self.served, "stale_hits": self.stale, "unknown_versions": self.unknown, "stale_hit_rate": self.rate,
            "traces": self.traces, "as_of_traces": self.as_of_traces, "capped": self.capped,
            "start": self.start.isoformat() if self.start else None, "end": self.end.isoformat() if self.end else None,
            "hits": [
                {**asdict(h), "served_at": h.served_at.isoformat(), "superseded_at": h.superseded_at.isoformat()}
                for h in self.hits[:hits]
            ],
        }


def _served(items: Iterable[ServedResult | tuple[str, datetime]]) -> list[ServedResult]:
    return [i if isinstance(i, ServedResult) else ServedResult(i[0], i[1]) for i in items]


def _validity(session: Session, version_ids: list[str]) -> dict[str, tuple[str, str, datetime | None]]:
    """version_id -> (state kind, doc or user id, valid_to)."""
    out: dict[str, tuple[str, str, datetime | None]] = {}
    for start in range(0, len(version_ids), 900):
        part = version_ids[start : start + 900]
        for vid, key, valid_to in session.exec(
            select(DocumentVersion.version_id, DocumentVersion.doc_id, DocumentVersion.valid_to).where(col(DocumentVersion.version_id).in_(part))
        ).all():
            out[vid] = ("company", key, as_utc(valid_to))
        for vid, key, valid_to in session.exec(
            select(UserSnapshotVersion.version_id, UserSnapshotVersion.user_id, UserSnapshotVersion.valid_to).where(col(UserSnapshotVersion.version_id).in_(part))
        ).all():
            out[vid] = ("user", key, as_utc(valid_to))
    return out


def stale_hits(store: ContextStore, served: Iterable[ServedResult | tuple[str, datetime]]) -> list[StaleHit]:
    """The served results whose version had already been superseded (``valid_to <= served_at``)."""
    return stale_hit_rate(store, served).hits


def stale_hit_rate(
    store: ContextStore,
    served: Iterable[ServedResult | tuple[str, datetime]],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> StaleHitReport:
    """Fraction of served results (within ``[start, end)``) that quoted a superseded version.

    Version ids the store does not know are counted apart (``unknown``) and left out of the
    rate: they are a bookkeeping error, not evidence either way.
    """
    items = [
        s for s in _served(served)
        if (start is None or as_utc(s.served_at) >= start) and (end is None or as_utc(s.served_at) < end)  # type: ignore[operator]
    ]
    with store.session() as session:
        validity = _validity(session, sorted({s.version_id for s in items}))
    hits: list[StaleHit] = []
    unknown = 0
    for s in items:
        info = validity.get(s.version_id)
        if info is None:
            unknown += 1
            continue
        kind, key, valid_to = info
        served_at = as_utc(s.served_at)
        if valid_to is not None and valid_to <= served_at:  # type: ignore[operator]
            hits.append(StaleHit(s.version_id, kind, key, served_at, valid_to))  # type: ignore[arg-type]
    known = len(items) - unknown
    return StaleHitReport(len(items), len(hits), unknown, (len(hits) / known) if known else None, start, end, hits)


TRACE_PAGE = 1000
MAX_TRACES = 100_000
MAX_HITS_KEPT = 1000


def _trace_page(
    store: ContextStore, start: datetime | None, end: datetime | None, after: tuple[datetime, str] | None, limit: int
) -> list[Any]:
    query = select(
        RetrievalTrace.trace_id, RetrievalTrace.created_at, RetrievalTrace.as_of, RetrievalTrace.user_version_id, RetrievalTrace.results
    )
    if start is not None:
        query = query.where(col(RetrievalTrace.created_at) >= start)
    if end is not None:
        query = query.where(col(RetrievalTrace.created_at) < end)
    if after is not None:
        query = query.where(
            (col(RetrievalTrace.created_at) > after[0])
            | ((col(RetrievalTrace.created_at) == after[0]) & (col(RetrievalTrace.trace_id) > after[1]))
        )
    with store.session() as session:
        return list(session.exec(query.order_by(col(RetrievalTrace.created_at), col(RetrievalTrace.trace_id)).limit(limit)).all())


def served_stale_hits(
    store: ContextStore,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    max_traces: int = MAX_TRACES,
    page_size: int = TRACE_PAGE,
) -> StaleHitReport:
    """The stale-hit rate of what the API actually served in ``[since, until)``, from its traces.

    Every served company chunk and the user snapshot a response carried is one served
    result. Traces asked ``as_of`` a past time are left out: they asked for an old version.
    Traces are read in keyset pages on ``(created_at, trace_id)``, so a busy window costs
    bounded memory per page and a trace written meanwhile is neither skipped nor read twice;
    past ``max_traces`` the report stops and says ``capped`` (the oldest are measured).
    Only the first ``MAX_HITS_KEPT`` hits are kept as examples; ``stale`` counts them all.
    """
    start, end = as_utc(since), as_utc(until)
    served = stale = unknown = traces = as_of_traces = 0
    hits: list[StaleHit] = []
    after: tuple[datetime, str] | None = None
    capped = False
    while True:
        limit = min(page_size, max_traces - traces)
        rows = _trace_page(store, start, end, after, limit) if limit > 0 else []
        page: list[ServedResult] = []
        for trace_id, created, as_of, user_version, results in rows:
            traces += 1
            if as_of is not None:
                as_of_traces += 1
                continue
            page.extend(ServedResult(r["version_id"], created) for r in results or [])
            if user_version:
                page.append(ServedResult(user_version, created))
        part = stale_hit_rate(store, page)
        served, stale, unknown = served + part.served, stale + part.stale, unknown + part.unknown
        hits.extend(part.hits[: MAX_HITS_KEPT - len(hits)])
        if rows:
            after = (rows[-1][1], rows[-1][0])
        if len(rows) < page_size:
            capped = traces >= max_traces and bool(_trace_page(store, start, end, after, 1))
            break
    known = served - unknown
    return StaleHitReport(
        served, stale, unknown, (stale / known) if known else None, start, end, hits,
        traces=traces, as_of_traces=as_of_traces, capped=capped,
    )


# --- the report and its checks -----------------------------------------------------------------


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    detail: str
    value: float | None = None
    threshold: float | None = None


@dataclass
class FreshnessReport:
    generated_at: datetime
    window_hours: float
    lag: dict[str, LagStats]
    unindexed: UnindexedReport
    users: UserAgeReport
    stalest: list[dict[str, Any]]
    missing_roots: list[str]
    journal_rows: int
    journal_unapplied: int
    versions_recorded: int
    stale: StaleHitReport = field(default_factory=lambda: StaleHitReport(0, 0, 0, None))

    def as_dict(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at.isoformat(),
            "window_hours": self.window_hours,
            "lag": {k: v.as_dict() for k, v in self.lag.items()},
            "unindexed": {
                "count": self.unindexed.count,
                "oldest_since": self.unindexed.oldest_since.isoformat() if self.unindexed.oldest_since else None,
                "oldest_age_s": self.unindexed.oldest_age_s,
                "items": [{**asdict(i), "since": i.since.isoformat()} for i in self.unindexed.items[:20]],
            },
            "users": {
                "current": self.users.current,
                "max_age_hours": self.users.max_age_hours,
                "stale": len(self.users.stale),
                "oldest_age_hours": self.users.oldest_age_hours,
                "stale_sample": [{"user_id": u, "age_hours": round(a, 2)} for u, a in self.users.stale[:20]],
            },
            "stalest_documents": [
                {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()} for row in self.stalest
            ],
            "missing_roots": self.missing_roots,
            "journal_rows": self.journal_rows,
            "journal_unapplied": self.journal_unapplied,
            "versions_recorded": self.versions_recorded,
            "stale_hits": self.stale.as_dict(),
        }


def freshness_report(store: ContextStore, *, now: datetime | None = None, window_hours: float = 24.0) -> FreshnessReport:
    """Record missing timelines, then measure: lag, backlog, user age, stalest documents, roots,
    and the stale hits among the results the API served in the window."""
    recorded = record_lags(store)
    now = now or utcnow()
    since = now - timedelta(hours=window_hours)
    with store.session() as session:
        journal_rows = session.exec(select(func.count()).select_from(ChangeEvent)).one()
        unapplied = session.exec(select(func.count()).select_from(ChangeEvent).where(col(ChangeEvent.applied_at).is_(None))).one()
    roots = [*store.settings.company_sources, *store.settings.user_sources]
    return FreshnessReport(
        generated_at=now,
        window_hours=window_hours,
        lag={kind: lag_stats(store, kind, since=since) for kind in ("company", "user")},
        unindexed=unindexed_changes(store, now=now),
        users=user_state_ages(store, now=now),
        stalest=stalest_documents(store, now=now),
        missing_roots=[str(s.path) for s in roots if not Path(s.path).is_dir()],
        journal_rows=int(journal_rows),
        journal_unapplied=int(unapplied),
        versions_recorded=recorded,
        stale=served_stale_hits(store, since=since, until=now),
    )


def evaluate_checks(
    report: FreshnessReport, *, sla_seconds: float, max_age_hours: float | None = None, stale_hit_rate_max: float = 0.0
) -> list[CheckOutcome]:
    """Pass/fail with the measured value and the threshold, for asset checks and the CLI."""
    max_age = report.users.max_age_hours if max_age_hours is None else max_age_hours
    outcomes: list[CheckOutcome] = []
    for kind in ("company", "user"):
        stats = report.lag[kind]
        passed = stats.p95_s is None or stats.p95_s <= sla_seconds
        detail = (
            f"no {kind} versions committed in the last {report.window_hours:g} h"
            if stats.p95_s is None
            else f"{kind} lag p95 {stats.p95_s:.1f} s over {stats.count} versions; SLA {sla_seconds:g} s"
        )
        outcomes.append(CheckOutcome(f"{kind}_lag_p95_within_sla", passed, detail, stats.p95_s, sla_seconds))
    age = report.unindexed.oldest_age_s
    outcomes.append(
        CheckOutcome(
            "no_unindexed_change_older_than_sla",
            age is None or age <= sla_seconds,
            "nothing waiting to be indexed" if age is None
            else f"{report.unindexed.count} changes not yet retrievable; the oldest waits {age:.0f} s; SLA {sla_seconds:g} s",
            age, sla_seconds,
        )
    )
    stale = report.users.stale
    outcomes.append(
        CheckOutcome(
            "user_state_within_max_age",
            not stale,
            f"all {report.users.current} current user snapshots are under {max_age:g} h" if not stale
            else f"{len(stale)} of {report.users.current} user snapshots are older than {max_age:g} h (oldest {stale[0][1]:.1f} h: {stale[0][0]})",
            report.users.oldest_age_hours, max_age,
        )
    )
    outcomes.append(
        CheckOutcome(
            "sources_reachable",
            not report.missing_roots,
            "every configured source root is a readable folder" if not report.missing_roots
            else "missing or unmounted (their documents are kept, not deleted): " + ", ".join(report.missing_roots),
            float(len(report.missing_roots)), 0.0,
        )
    )
    st = report.stale
    capped = f" (capped at the first {st.traces} responses)" if st.capped else ""
    if st.rate is None:
        detail = f"no served results in the last {report.window_hours:g} h{capped}"
    else:
        detail = (
            f"{st.stale} of {st.served - st.unknown} served results quoted a version already superseded when served "
            f"(rate {st.rate:.4f}; max {stale_hit_rate_max:g}){capped}"
        )
        if st.hits:
            first = st.hits[0]
            detail += f"; e.g. {first.key} served {first.served_at:%Y-%m-%d %H:%M:%S}, superseded {first.superseded_at:%Y-%m-%d %H:%M:%S}"
    outcomes.append(CheckOutcome("no_stale_hits", st.rate is None or st.rate <= stale_hit_rate_max, detail, st.rate, stale_hit_rate_max))
    return outcomes
