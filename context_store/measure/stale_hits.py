"""Stale hits: served results that quoted a version already superseded when they were served.

A served result is a (version id, served at) pair; it is a *stale hit* when that version's
``valid_to`` is at or before the moment it was served. ``served_stale_hits`` reads what the
API actually served from its traces; ``stale_hit_rate`` judges any list of served results.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from context_store._common import as_utc
from context_store.store.context_store import ContextStore
from context_store.store.database import in_batches
from context_store.store.models import DocumentVersion, RetrievalTrace, UserSnapshotVersion

__all__ = ["MAX_HITS_KEPT", "MAX_TRACES", "TRACE_PAGE", "ServedResult", "StaleHit", "StaleHitReport", "served_stale_hits", "stale_hit_rate", "stale_hits"]


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
    for part in in_batches(version_ids):
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
