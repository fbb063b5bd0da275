"""Stale hits: served results whose source had already changed when they were served.

A served result is a (version id, served at) pair. It is a *stale hit* when the source of
that version had changed by the time it was served, whether or not the pipeline knew yet:
once the pipeline learns of a change (a new version or a tombstone closes the served one),
every result of that version served at or after the *change time* counts. The change time
is the earliest evidence of the change, never before the served version was read and never
after the pipeline observed the change:

* the change journal (the watcher): a later file state's mtime, or a deletion's time;
* the closing version's own mtime, as the sync that read it (a reconciliation, say) saw it;
* otherwise the moment the pipeline observed it (``valid_to``).

An mtime that is not later than the served version's own is no evidence (a copy that kept an
old mtime) and is ignored. Changes the pipeline has not learned of yet are not counted here;
``state.observed`` reports them as unobserved changes. ``served_stale_hits`` reads what the
API served from its traces; ``stale_hit_rate`` judges any list of served results. Both say,
per document, how long users were exposed: from the change to the last stale serve.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from context_store._common import as_utc
from context_store.store.context_store import ContextStore
from context_store.store.database import in_batches
from context_store.store.models import ChangeEvent, DocumentVersion, RetrievalTrace, UserSnapshotVersion, VersionLag

__all__ = [
    "MAX_HITS_KEPT", "MAX_TRACES", "TRACE_PAGE", "Exposure", "ServedResult", "StaleHit", "StaleHitReport",
    "served_stale_hits", "stale_hit_rate", "stale_hits",
]


@dataclass(frozen=True)
class ServedResult:
    """One result the API served: the version it quoted and when."""

    version_id: str
    served_at: datetime


@dataclass(frozen=True)
class StaleHit:
    version_id: str
    state_kind: str
    key: str  # doc id or user id
    served_at: datetime
    superseded_at: datetime  # when the pipeline learned of the change (the version's valid_to)
    changed_at: datetime | None = None  # when the source changed (at or before served_at)


@dataclass
class Exposure:
    """How long users were served one document's (or user's) old text after its source changed."""

    state_kind: str
    key: str
    changed_at: datetime  # the earliest change among its stale hits
    first_served: datetime
    last_served: datetime
    hits: int = 0

    @property
    def minutes(self) -> float:
        return max(0.0, (self.last_served - self.changed_at).total_seconds() / 60)

    def add(self, hit: StaleHit) -> None:
        self.hits += 1
        self.changed_at = min(self.changed_at, hit.changed_at or hit.superseded_at)
        self.first_served, self.last_served = min(self.first_served, hit.served_at), max(self.last_served, hit.served_at)

    def as_dict(self) -> dict[str, Any]:
        return {"state_kind": self.state_kind, "key": self.key, "hits": self.hits, "changed_at": self.changed_at.isoformat(),
                "first_served": self.first_served.isoformat(), "last_served": self.last_served.isoformat(),
                "exposed_minutes": round(self.minutes, 2)}


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
    exposure: dict[tuple[str, str], Exposure] = field(default_factory=dict)  # every stale hit, by (kind, key)

    def note(self, hits: list[StaleHit]) -> None:
        """Count ``hits`` into the exposure per document (all of them, not only the kept examples)."""
        for hit in hits:
            key = (hit.state_kind, hit.key)
            if key not in self.exposure:
                when = hit.changed_at or hit.superseded_at
                self.exposure[key] = Exposure(hit.state_kind, hit.key, when, hit.served_at, hit.served_at)
            self.exposure[key].add(hit)

    def exposed(self) -> list[Exposure]:
        """Per document, the longest exposure first."""
        return sorted(self.exposure.values(), key=lambda e: -e.minutes)

    def as_dict(self, *, hits: int = 20) -> dict[str, Any]:
        exposed = self.exposed()
        return {
            "served_results": self.served, "stale_hits": self.stale, "unknown_versions": self.unknown, "stale_hit_rate": self.rate,
            "traces": self.traces, "as_of_traces": self.as_of_traces, "capped": self.capped,
            "start": self.start.isoformat() if self.start else None, "end": self.end.isoformat() if self.end else None,
            "hits": [
                {**asdict(h), "served_at": h.served_at.isoformat(), "superseded_at": h.superseded_at.isoformat(),
                 "changed_at": h.changed_at.isoformat() if h.changed_at else None}
                for h in self.hits[:hits]
            ],
            "exposed_documents": len(exposed),
            "exposed_minutes_total": round(sum(e.minutes for e in exposed), 2),
            "exposed_minutes_max": round(exposed[0].minutes, 2) if exposed else None,
            "exposure": [e.as_dict() for e in exposed[:hits]],
        }


def _served(items: Iterable[ServedResult | tuple[str, datetime]]) -> list[ServedResult]:
    return [i if isinstance(i, ServedResult) else ServedResult(i[0], i[1]) for i in items]


@dataclass(frozen=True)
class _Served:
    """What a served version was, and (once it was closed) when its source changed."""

    state_kind: str
    key: str
    valid_to: datetime | None
    changed_at: datetime | None


def _change_time(evidence: Iterable[datetime | None], *, after: datetime | None, lower: datetime, upper: datetime) -> datetime:
    """The earliest ``evidence`` later than ``after``, clamped into [``lower``, ``upper``]; ``upper`` without any."""
    later = [t for t in evidence if t is not None and (after is None or t > after)]
    return min(max(min(later), lower), upper) if later else upper


def _company(session: Session, version_ids: list[str]) -> dict[str, _Served]:
    rows = session.exec(
        select(DocumentVersion.version_id, DocumentVersion.doc_id, DocumentVersion.source_path, DocumentVersion.source_mtime,
               DocumentVersion.valid_from, DocumentVersion.valid_to).where(col(DocumentVersion.version_id).in_(version_ids))
    ).all()
    closed = [r for r in rows if r[5] is not None]
    successors: dict[str, list[tuple[datetime, datetime | None]]] = {}  # doc id -> (valid_from, source mtime)
    journal: dict[str, list[tuple[str, datetime | None, datetime]]] = {}  # resolved path -> (event, mtime, seen)
    if closed:
        for doc_id, valid_from, mtime in session.exec(
            select(DocumentVersion.doc_id, DocumentVersion.valid_from, DocumentVersion.source_mtime)
            .where(col(DocumentVersion.doc_id).in_({r[1] for r in closed}))
        ).all():
            successors.setdefault(doc_id, []).append((as_utc(valid_from), as_utc(mtime)))  # type: ignore[arg-type]
        paths = {str(Path(r[2]).resolve()) for r in closed}
        for path, event, mtime, seen in session.exec(
            select(ChangeEvent.path, ChangeEvent.event, ChangeEvent.source_mtime, ChangeEvent.seen_at)
            .where(col(ChangeEvent.path).in_(paths), ChangeEvent.event != "rescan")
        ).all():
            journal.setdefault(path, []).append((event, as_utc(mtime), as_utc(seen)))  # type: ignore[arg-type]
    out: dict[str, _Served] = {}
    for vid, doc_id, path, mtime, valid_from, valid_to in rows:
        valid_from, valid_to, mtime = as_utc(valid_from), as_utc(valid_to), as_utc(mtime)
        changed = None
        if valid_to is not None:
            successor = min((v for v in successors.get(doc_id, []) if v[0] >= valid_to), default=None)
            noted = journal.get(str(Path(path).resolve()), [])
            evidence = [successor[1] if successor else None]
            evidence += [m for event, m, _ in noted if event != "deleted" and m is not None and m <= valid_to]
            evidence += [seen for event, _, seen in noted if event == "deleted" and valid_from < seen <= valid_to]  # type: ignore[operator]
            changed = _change_time(evidence, after=mtime or valid_from, lower=valid_from, upper=valid_to)  # type: ignore[arg-type]
        out[vid] = _Served("company", doc_id, valid_to, changed)
    return out


def _users(session: Session, version_ids: list[str]) -> dict[str, _Served]:
    """User snapshots carry no mtime: a closing snapshot's lag timeline says when its file changed."""
    rows = session.exec(
        select(UserSnapshotVersion.version_id, UserSnapshotVersion.user_id, UserSnapshotVersion.valid_from, UserSnapshotVersion.valid_to)
        .where(col(UserSnapshotVersion.version_id).in_(version_ids))
    ).all()
    closed = {r[1] for r in rows if r[3] is not None}
    changes: dict[str, list[datetime]] = {}
    if closed:
        for key, changed in session.exec(
            select(VersionLag.key, VersionLag.source_changed_at).where(VersionLag.state_kind == "user", col(VersionLag.key).in_(closed))
        ).all():
            changes.setdefault(key, []).append(as_utc(changed))  # type: ignore[arg-type]
    out: dict[str, _Served] = {}
    for vid, user_id, valid_from, valid_to in rows:
        valid_from, valid_to = as_utc(valid_from), as_utc(valid_to)
        changed = None
        if valid_to is not None:
            # the next snapshot's change time lies in (valid_from, valid_to]; equal to valid_from means "no evidence"
            evidence = [t for t in changes.get(user_id, []) if t <= valid_to]  # type: ignore[operator]
            changed = _change_time(evidence, after=valid_from, lower=valid_from, upper=valid_to)  # type: ignore[arg-type]
        out[vid] = _Served("user", user_id, valid_to, changed)
    return out


def _versions(session: Session, version_ids: list[str]) -> dict[str, _Served]:
    out: dict[str, _Served] = {}
    for part in in_batches(version_ids):
        out.update(_company(session, part))
        out.update(_users(session, [v for v in part if v not in out]))
    return out


def stale_hits(store: ContextStore, served: Iterable[ServedResult | tuple[str, datetime]]) -> list[StaleHit]:
    """The served results whose source had already changed when they were served."""
    return stale_hit_rate(store, served).hits


def stale_hit_rate(
    store: ContextStore,
    served: Iterable[ServedResult | tuple[str, datetime]],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> StaleHitReport:
    """Fraction of served results (within ``[start, end)``) served after their source had changed.

    Version ids the store does not know are counted apart (``unknown``) and left out of the
    rate: they are a bookkeeping error, not evidence either way.
    """
    items = [
        s for s in _served(served)
        if (start is None or as_utc(s.served_at) >= start) and (end is None or as_utc(s.served_at) < end)  # type: ignore[operator]
    ]
    with store.session() as session:
        versions = _versions(session, sorted({s.version_id for s in items}))
    hits: list[StaleHit] = []
    unknown = 0
    for s in items:
        info = versions.get(s.version_id)
        if info is None:
            unknown += 1
            continue
        served_at = as_utc(s.served_at)
        if info.changed_at is not None and info.valid_to is not None and info.changed_at <= served_at:  # type: ignore[operator]
            hits.append(StaleHit(s.version_id, info.state_kind, info.key, served_at, info.valid_to, info.changed_at))  # type: ignore[arg-type]
    known = len(items) - unknown
    report = StaleHitReport(len(items), len(hits), unknown, (len(hits) / known) if known else None, start, end, hits)
    report.note(hits)
    return report


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
    """The stale-hit rate (and exposure per document) of what the API served in ``[since, until)``, from its traces.

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
    exposure = StaleHitReport(0, 0, 0, None)  # per document, over every hit
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
        exposure.note(part.hits)
        if rows:
            after = (rows[-1][1], rows[-1][0])
        if len(rows) < page_size:
            capped = traces >= max_traces and bool(_trace_page(store, start, end, after, 1))
            break
    known = served - unknown
    return StaleHitReport(
        served, stale, unknown, (stale / known) if known else None, start, end, hits,
        traces=traces, as_of_traces=as_of_traces, capped=capped, exposure=exposure.exposure,
    )
